"""Which Ray cluster a job attaches to, and what it offers (nodes, CPUs, GPUs).

:func:`probe_cluster` asks a cluster from a short-lived subprocess, so the calling
process never becomes a Ray driver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from feddistill.lifeline import parent_death_signal


def resolve_address(ray_address: str | None = None) -> str | None:
    """The Ray cluster to attach to: `ray_address`, else ``RAY_ADDRESS``, else None.

    Args:
        ray_address: an explicit address (``host:port`` of the GCS, or ``auto``).

    Returns:
        The address, or None when a job should start its own local Ray instance.
    """
    if ray_address:
        return ray_address
    return os.environ.get("RAY_ADDRESS") or None


_PROBE = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
try:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = ray.cluster_resources()
    gpu_memory = 0
    if sys.argv[2] == "1" and res.get("GPU", 0) >= 1:
        @ray.remote(num_gpus=1, num_cpus=0)
        def total_memory():
            import torch
            return torch.cuda.get_device_properties(0).total_memory
        try:
            gpu_memory = ray.get(total_memory.remote(), timeout=float(sys.argv[3]))
        except Exception:
            gpu_memory = 0
    print(json.dumps({"alive": len(nodes), "resources": res, "gpu_memory_bytes": gpu_memory}))
finally:
    ray.shutdown()
"""


def probe_cluster(address: str, timeout_s: float = 60.0, gpu_memory: bool = False) -> dict:
    """Alive nodes and total resources of the cluster at `address`.

    Runs in a short-lived subprocess so this process never becomes a Ray driver.

    Args:
        address: ``host:port`` of the cluster's GCS (or ``auto``).
        timeout_s: how long the probe may take (> 0).
        gpu_memory: also read one GPU's total memory, with a 1-GPU task (it waits
            for a free GPU up to half of `timeout_s`; 0 when none answers).

    Returns:
        ``{"alive": int, "resources": {"CPU": float, "GPU": float, ...},
        "gpu_memory_bytes": int}``.

    Raises:
        RuntimeError: if the probe cannot connect or times out.
    """
    env = dict(os.environ)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, address, "1" if gpu_memory else "0", str(timeout_s / 2)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            start_new_session=True,
            preexec_fn=parent_death_signal(),
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"no answer from the Ray cluster at {address} in {timeout_s} s") from exc
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"cannot reach the Ray cluster at {address}: {' | '.join(tail)}")
    return json.loads(lines[-1])


def cluster_resources(address: str | None = None) -> dict:
    """CPUs, GPUs and one GPU's memory of the cluster a job would run on.

    With an address (argument or ``RAY_ADDRESS``, see :func:`resolve_address`) the
    cluster is asked through :func:`probe_cluster`; without one, this machine is
    described (what the simulation's local Ray instance would offer).

    Args:
        address: ``host:port`` of a Ray cluster, or None.

    Returns:
        ``{"CPU": int, "GPU": int, "gpu_memory_bytes": int, "nodes": int}``.

    Raises:
        RuntimeError: if the cluster at the address does not answer.
    """
    address = resolve_address(address)
    if address is None:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        memory = torch.cuda.get_device_properties(0).total_memory if gpus else 0
        return {"CPU": os.cpu_count() or 1, "GPU": gpus, "gpu_memory_bytes": memory, "nodes": 1}
    found = probe_cluster(address, gpu_memory=True)
    res = found["resources"]
    return {
        "CPU": int(res.get("CPU", 0)),
        "GPU": int(res.get("GPU", 0)),
        "gpu_memory_bytes": int(found.get("gpu_memory_bytes", 0)),
        "nodes": int(found["alive"]),
    }
