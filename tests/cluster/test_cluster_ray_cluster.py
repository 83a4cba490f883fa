"""Local Ray cluster helpers that need no running cluster: specs, commands, addresses."""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
from pathlib import Path

import psutil
import pytest

from feddistill.cluster import probe, ray_cluster
from feddistill.cluster.cli_plan import add_plan_parser, client_memory_bytes, server_memory_bytes
from feddistill.cluster.probe import probe_cluster, resolve_address
from feddistill.cluster.ray_cluster import LocalRayCluster, LocalRayNode, NodeSpec, ray_executable
from feddistill.config import RunConfig


def test_resolve_address_prefers_the_argument(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")
    assert resolve_address("10.0.0.1:6379") == "10.0.0.1:6379"
    assert resolve_address(None) == "10.0.0.2:6379"
    monkeypatch.delenv("RAY_ADDRESS")
    assert resolve_address(None) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_cpus": 0}, "num_cpus must be >= 1, got 0"),
        ({"num_gpus": -1}, "num_gpus must be >= 0, got -1"),
        ({"memory_bytes": 1000}, r"memory_bytes must be >= 268435456 \(256 MiB\), got 1000"),
        ({"object_store_bytes": 1000}, r"object_store_bytes must be >= 81788928 .* got 1000"),
    ],
)
def test_node_spec_rejects_out_of_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NodeSpec(**kwargs)


def test_worker_command_has_limits_and_its_own_ports(tmp_path):
    # Prepare
    node = LocalRayNode(
        NodeSpec(num_cpus=2), head=False, temp_dir=tmp_path, log_path=tmp_path / "l"
    )
    # Execute
    cmd = node.command("127.0.0.1:6379")
    # Assert
    assert cmd[1:3] == ["start", "--block"]
    assert "--address=127.0.0.1:6379" in cmd
    assert f"--temp-dir={tmp_path}" in cmd
    assert "--num-cpus=2" in cmd and "--memory=2147483648" in cmd
    assert not any(a.startswith(("--head", "--port=")) for a in cmd)
    opts = dict(a[2:].split("=", 1) for a in cmd if a.startswith("--") and "=" in a)
    assert int(opts["max-worker-port"]) - int(opts["min-worker-port"]) == 39
    for key in ("node-manager-port", "object-manager-port", "metrics-export-port"):
        assert 0 < int(opts[key]) < 65536


def test_head_command_has_a_port_and_no_dashboard(tmp_path):
    node = LocalRayNode(NodeSpec(), head=True, temp_dir=tmp_path, log_path=tmp_path / "l")
    cmd = node.command(None)
    assert "--head" in cmd and "--include-dashboard=false" in cmd
    assert any(a.startswith("--port=") for a in cmd)


@pytest.mark.parametrize(("head", "address"), [(True, "127.0.0.1:1"), (False, None)])
def test_command_rejects_a_mismatched_head_address(tmp_path, head, address):
    node = LocalRayNode(NodeSpec(), head=head, temp_dir=tmp_path, log_path=tmp_path / "l")
    with pytest.raises(ValueError, match=f"head={head} needs head_address"):
        node.command(address)


def test_cluster_rejects_no_nodes_and_bad_timeout():
    with pytest.raises(ValueError, match=r"nodes must list at least one NodeSpec .* got \[\]"):
        LocalRayCluster(nodes=[])
    with pytest.raises(ValueError, match="startup_timeout_s must be > 0, got 0"):
        LocalRayCluster(startup_timeout_s=0)


def test_ray_executable_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(ray_cluster.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(ray_cluster.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="no `ray` command next to"):
        ray_executable()


def test_probe_of_nothing_is_a_clear_error(monkeypatch):
    # Prepare: a port nobody listens on; Ray would retry for a minute, so cut it short
    monkeypatch.setenv("RAY_gcs_rpc_server_connect_timeout_s", "2")
    monkeypatch.setenv("RAY_gcs_rpc_server_reconnect_timeout_s", "2")
    from feddistill.ports import free_port

    with pytest.raises(RuntimeError, match="Ray cluster at 127.0.0.1"):
        probe_cluster(f"127.0.0.1:{free_port()}", timeout_s=30)


def test_probe_timeout_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(probe, "_PROBE", "import time; time.sleep(30)")
    with pytest.raises(RuntimeError, match="no answer from the Ray cluster at x:1 in 1"):
        probe_cluster("x:1", timeout_s=1)


def _fake_ray(tmp_path: Path, body: str) -> str:
    script = tmp_path / "ray"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_start_failure_names_the_log(tmp_path, monkeypatch, no_leftover_processes):
    # Prepare: a `ray` that exits at once with code 3
    monkeypatch.setattr(ray_cluster, "ray_executable", lambda: _fake_ray(tmp_path, "exit 3"))
    cluster = LocalRayCluster(startup_timeout_s=30)
    no_leftover_processes.markers.append(str(cluster.root))
    # Execute / Assert
    with pytest.raises(RuntimeError, match=r"ray start of node 0 exited with code 3; see .*node0"):
        with cluster:
            pass
    assert not cluster.root.exists()


def test_start_timeout_stops_the_node_by_pid(tmp_path, monkeypatch, no_leftover_processes):
    # Prepare: a `ray` that never opens its port
    monkeypatch.setattr(ray_cluster, "ray_executable", lambda: _fake_ray(tmp_path, "exec sleep 60"))
    cluster = LocalRayCluster(startup_timeout_s=2)
    # Execute / Assert
    with pytest.raises(RuntimeError, match=r"0 of 1 Ray nodes alive at 127.0.0.1:\d+ after 2 s"):
        with cluster:
            pass
    no_leftover_processes.pids.update(cluster.pids())
    assert cluster.pids() and not any(psutil.pid_exists(p) for p in cluster.pids())


def test_cluster_rejects_a_root_too_long_for_ray_sockets(tmp_path):
    with pytest.raises(ValueError, match="root must be at most 40 characters"):
        LocalRayCluster(root=tmp_path / ("x" * 40))


def test_cluster_resources_without_an_address_describes_this_machine(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    found = probe.cluster_resources(None)
    assert found["CPU"] >= 1 and found["nodes"] == 1
    assert found["GPU"] >= 0


def _plan(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_plan_parser(parser.add_subparsers())
    return parser.parse_args(["plan", *argv])


def test_plan_cli_prints_json_with_the_warning(capsys):
    # Execute
    args = _plan(
        [
            "--cpus",
            "64",
            "--gpus",
            "2",
            "--gpu-memory-gb",
            "80",
            "--num-gpus",
            "0.05",
            "--set",
            "num-partitions=20",
            "--json",
        ]
    )
    code = args.func(args)
    # Assert: the default job (cnn teacher + cnn-small student) at 0.05 GPU fits 80 GB
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["client_num_gpus"] == 0.05
    assert report["concurrency"] == 20
    assert report["per_client_bytes"] == client_memory_bytes(RunConfig(num_partitions=20))


def test_plan_for_an_8_gb_gpu_fits_the_footprint_measured_on_an_h200(capsys):
    # Prepare: `feddistill bench gpu` on an H200 (torch 2.11, CUDA 13): 14 processes of
    # the default job (13 client actors + the ServerApp) held 12750 MiB, 911 MiB each,
    # when the plan (then 500 MiB per CUDA context) packed 13 clients on an "8 GB" GPU.
    measured_per_process = 12750 * 1024**2 / 14
    args = _plan(["--cpus", "16", "--gpus", "1", "--gpu-memory-gb", "8", "--json"])
    args.set = ["num-partitions=16"]
    # Execute
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    # Assert: the packed clients and the server's process fit in 8 GB at that footprint
    processes = report["clients_per_gpu"] + 1
    assert report["server_bytes"] == server_memory_bytes(RunConfig())
    assert processes * measured_per_process <= 8e9
    assert report["clients_per_gpu"] >= 1


def test_server_memory_is_zero_when_the_server_runs_on_the_cpu():
    assert server_memory_bytes(RunConfig(device="cpu")) == 0
    assert server_memory_bytes(RunConfig(device="cuda")) > 0


def test_server_memory_needs_a_known_dataset(monkeypatch):
    from feddistill.cluster import cli_plan

    monkeypatch.setattr(cli_plan, "DATASET_SHAPES", {})
    with pytest.raises(ValueError, match="dataset must be one of"):
        server_memory_bytes(RunConfig())


def test_plan_cli_table_for_this_machine(capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    args = _plan(["--set", 'dataset="digits"', "--set", 'teacher-models="mlp"'])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "| client-num-gpus |" in out and "use: --set client-num-gpus=" in out


@pytest.mark.parametrize("value", ["0", "inf", "nan", "-1", "1e30"])
def test_plan_cli_rejects_bad_gpu_memory(value):
    args = _plan(["--gpu-memory-gb", value, "--cpus", "2", "--gpus", "1"])
    with pytest.raises(ValueError, match=r"--gpu-memory-gb must be a number in \(0, 10000.0\]"):
        args.func(args)


def test_plan_cli_asks_for_gpu_memory_when_none_is_found(monkeypatch):
    # Prepare: a machine that reports no GPU memory, and --gpus without --gpu-memory-gb
    from feddistill.cluster import probe as probe_module

    found = {"CPU": 2, "GPU": 0, "gpu_memory_bytes": 0, "nodes": 1}
    monkeypatch.setattr(probe_module, "cluster_resources", lambda address: found)
    args = _plan(["--cpus", "2", "--gpus", "1"])
    # Execute / Assert
    with pytest.raises(ValueError, match="--gpus 1 needs --gpu-memory-gb"):
        args.func(args)


def test_plan_cli_with_device_cpu_gives_clients_no_gpu(capsys):
    # Execute: the clients train on the CPU, so the GPUs get no client
    args = _plan(["--cpus", "16", "--gpus", "1", "--gpu-memory-gb", "8", "--json"])
    args.set = ["device=cpu"]
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    # Assert
    assert report["client_num_gpus"] == 0.0 and report["clients_per_gpu"] == 0
    assert report["server_bytes"] == 0


def test_client_memory_needs_a_known_dataset(monkeypatch):
    from feddistill.cluster import cli_plan

    monkeypatch.setattr(cli_plan, "DATASET_SHAPES", {})
    with pytest.raises(ValueError, match="dataset must be one of"):
        client_memory_bytes(RunConfig())


def test_client_memory_is_teacher_plus_student(tmp_path: Path):
    small = client_memory_bytes(
        RunConfig(dataset="digits", teacher_models="mlp", student_model="mlp")
    )
    big = client_memory_bytes(
        RunConfig(dataset="digits", teacher_models="cnn", student_model="mlp")
    )
    assert 0 < small < big


@contextlib.contextmanager
def _fake_node_cluster(monkeypatch, first_alive):
    """Nodes whose `ray start` processes are `sleep` (alive) or `false` (exits 1).

    Yields ``(cluster, launch)``; every process launched is killed and the cluster's
    folder removed on exit.
    """
    cluster = LocalRayCluster(nodes=[NodeSpec(), NodeSpec()], startup_timeout_s=20)
    cluster.address = "127.0.0.1:1"
    procs = []
    registered: set[int] = set()  # the nodes Ray would count: the `sleep` ones

    def launch(alive):
        proc = subprocess.Popen(["sleep", "30"] if alive else ["false"])
        procs.append(proc)
        if alive:
            registered.add(proc.pid)
        return proc

    for node, alive in zip(cluster.nodes, first_alive, strict=True):
        node.proc = launch(alive)
    # the probe counts the nodes whose current process is a `sleep`
    monkeypatch.setattr(ray_cluster, "listening", lambda host, port: True)
    monkeypatch.setattr(
        ray_cluster,
        "probe_cluster",
        lambda address, timeout_s: {
            "alive": sum(n.proc.pid in registered for n in cluster.nodes)  # type: ignore[union-attr]
        },
    )
    try:
        yield cluster, launch
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        cluster.stop()


def test_worker_whose_ray_start_exits_is_started_again_once(monkeypatch):
    # Prepare: the worker's first `ray start` exits with code 1, the second one lives
    started = []
    with _fake_node_cluster(monkeypatch, [True, False]) as (cluster, launch):

        def restart():
            started.append(1)
            cluster.nodes[1].proc = launch(True)

        # Execute
        cluster.wait_for_nodes(2, {1: restart})
    # Assert
    assert started == [1]


def test_worker_whose_ray_start_exits_twice_is_an_error_naming_its_log(monkeypatch):
    # Prepare: both of the worker's `ray start` processes exit with code 1
    with _fake_node_cluster(monkeypatch, [True, False]) as (cluster, launch):

        def restart():
            cluster.nodes[1].proc = launch(False)

        # Execute / Assert
        with pytest.raises(RuntimeError, match=r"ray start of node 1 exited with code 1; see"):
            cluster.wait_for_nodes(2, {1: restart})
