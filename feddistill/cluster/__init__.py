"""Ray: attach to / start a cluster, resource planning, remote server-side work.

No ML maths here; see DESIGN.md ("Engines") and deploy/README.md ("Multi-node Ray
cluster").
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
