"""Multi-node on loopback: a Ray head and a worker node as separate `ray start`
processes, the job attached with `feddistill run --ray-address`; clients must land on
both nodes, and every process must be gone afterwards (stopped by PID, never
`ray stop`).
"""

from __future__ import annotations

import json
import subprocess
import sys

import psutil
import pytest

from feddistill.cluster.probe import probe_cluster
from feddistill.cluster.ray_cluster import LocalRayCluster, NodeSpec

pytestmark = pytest.mark.slow

SMALL = [
    'dataset="digits"',
    "num-partitions=2",
    "num-server-rounds=2",
    "min-partition-size=5",
    'teacher-models="mlp"',
    'student-model="mlp"',
    "batch-size=64",
    "client-num-cpus=1",
]


def test_job_attached_to_two_node_cluster_places_clients_on_both(tmp_path, no_leftover_processes):
    # Prepare: head + worker, 1 CPU and 1.5 GiB each -> one client actor per node
    spec = NodeSpec(num_cpus=1, memory_bytes=3 * 1024**3 // 2, object_store_bytes=100 * 1024**2)
    cluster = LocalRayCluster(nodes=[spec, spec], startup_timeout_s=90)
    no_leftover_processes.markers.append(str(cluster.root))
    out = tmp_path / "out"
    with cluster:
        no_leftover_processes.pids.update(cluster.pids())
        assert probe_cluster(cluster.address)["alive"] == 2
        args = [sys.executable, "-m", "feddistill.cli", "run", "--ray-address", cluster.address]
        args += ["--out", str(out), "--quiet"]
        for pair in SMALL:
            args += ["--set", pair]
        # Execute
        done = subprocess.run(args, capture_output=True, text=True, timeout=300)
        no_leftover_processes.pids.update(cluster.pids())
    # Assert: completed, and the placement record shows both nodes
    log = (out / "flower.log").read_text() if (out / "flower.log").is_file() else ""
    assert done.returncode == 0, done.stdout + done.stderr + log[-3000:]
    lines = [json.loads(line) for line in (out / "placement.jsonl").read_text().splitlines()]
    assert {row["round"] for row in lines} == {1, 2}
    assert {row["partition_id"] for row in lines} == {0, 1}
    assert len({row["ray-node-id"] for row in lines}) == 2
    assert all(row["hostname"] and row["pid"] for row in lines)
    # ...and nothing the cluster started is still running
    assert not [
        p
        for p in cluster.pids()
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
