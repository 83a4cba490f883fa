"""Ray: attach to / start a cluster, resource planning.

A launcher (ARCHITECTURE.md, "What may import what"): no ML maths here, and nothing the
ServerApp imports (the server's GPU task is ``feddistill/server/remote.py``); see README.md
("Scaling out") and deploy/README.md ("Multi-node Ray cluster").

The names below are loaded on first use (PEP 562): the ``feddistill`` parser imports
:mod:`.cli_plan` without torch, so ``feddistill run``'s own process stays small while
the run happens in other processes (issue 13).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feddistill.cluster.planner import ResourcePlan, plan_resources, training_memory_bytes
    from feddistill.cluster.probe import cluster_resources, probe_cluster, resolve_address
    from feddistill.cluster.ray_cluster import LocalRayCluster, NodeSpec
    from feddistill.server.remote import distill_on_gpu_node, run_on_gpu_node

_LAZY = {
    "ResourcePlan": "feddistill.cluster.planner",
    "plan_resources": "feddistill.cluster.planner",
    "training_memory_bytes": "feddistill.cluster.planner",
    "cluster_resources": "feddistill.cluster.probe",
    "probe_cluster": "feddistill.cluster.probe",
    "resolve_address": "feddistill.cluster.probe",
    "LocalRayCluster": "feddistill.cluster.ray_cluster",
    "NodeSpec": "feddistill.cluster.ray_cluster",
    "distill_on_gpu_node": "feddistill.server.remote",
    "run_on_gpu_node": "feddistill.server.remote",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'feddistill.cluster' has no attribute {name!r}")


__all__ = [
    "LocalRayCluster",
    "NodeSpec",
    "ResourcePlan",
    "cluster_resources",
    "distill_on_gpu_node",
    "plan_resources",
    "probe_cluster",
    "resolve_address",
    "run_on_gpu_node",
    "training_memory_bytes",
]
