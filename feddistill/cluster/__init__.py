"""Ray: attach to / start a cluster, resource planning, remote server-side work.

No ML maths here; see DESIGN.md ("Engines") and deploy/README.md ("Multi-node Ray
cluster").
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feddistill.cluster.planner import ResourcePlan, plan_resources, training_memory_bytes
    from feddistill.cluster.ray_cluster import (
        LocalRayCluster,
        NodeSpec,
        cluster_resources,
        probe_cluster,
        resolve_address,
    )
    from feddistill.cluster.remote import distill_on_gpu_node, run_on_gpu_node

# Names load on first use (PEP 562): the `feddistill` parser imports ``cli_plan``
# without torch, so `feddistill run`'s own process stays small (issue 13).
_SOURCES = {
    "ResourcePlan": "planner",
    "plan_resources": "planner",
    "training_memory_bytes": "planner",
    "LocalRayCluster": "ray_cluster",
    "NodeSpec": "ray_cluster",
    "cluster_resources": "ray_cluster",
    "probe_cluster": "ray_cluster",
    "resolve_address": "ray_cluster",
    "distill_on_gpu_node": "remote",
    "run_on_gpu_node": "remote",
}


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module 'feddistill.cluster' has no attribute {name!r}")
    return getattr(importlib.import_module(f"feddistill.cluster.{_SOURCES[name]}"), name)


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
