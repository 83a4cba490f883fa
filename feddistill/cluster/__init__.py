"""Ray: attach to / start a cluster, resource planning.

A launcher (ARCHITECTURE.md, "What may import what"): no ML maths here, and nothing the
ServerApp imports (the server's GPU task is ``feddistill/server/remote.py``); see README.md
("Scaling out") and deploy/README.md ("Multi-node Ray cluster").
"""

from feddistill.cluster.planner import ResourcePlan, plan_resources, training_memory_bytes
from feddistill.cluster.probe import cluster_resources, probe_cluster, resolve_address
from feddistill.cluster.ray_cluster import LocalRayCluster, NodeSpec
from feddistill.server.remote import distill_on_gpu_node, run_on_gpu_node

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
