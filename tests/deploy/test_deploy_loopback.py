"""Deployment Engine on loopback: SuperLink + 2 SuperNodes, TLS and SuperNode auth on.

One deployment serves the module (start-up ~5 s, the 2-round digits job ~40 s on 2
cores); every negative check is bounded and kills what it started by PID, and the
fixture checks that stopping the deployment leaves none of its processes running.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from feddistill import deployment as D
from feddistill.config import from_mapping

pytestmark = pytest.mark.slow

SMALL = {
    "dataset": "digits",
    "num-partitions": 2,
    "num-server-rounds": 2,
    "min-partition-size": 5,
    "teacher-models": "mlp",
    "student-model": "mlp",
}
REFUSAL_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """A running LocalDeployment; stopped (by PID) after the module, leaving nothing."""
    dep = D.LocalDeployment(tmp_path_factory.mktemp("deploy"), num_supernodes=2)
    try:
        dep.start()
        yield dep
    finally:
        dep.stop()
    assert dep.group.alive() == [], "deployment processes left running"


def exit_code_within(proc: subprocess.Popen, timeout_s: float) -> int | None:
    """The process's exit code, or None if it still runs after `timeout_s` (then killed)."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return None


def nodes(dep: D.LocalDeployment) -> list[dict]:
    listing = dep.flwr("supernode", "ls", D.CONNECTION, "--format", "json")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    return json.loads(listing.stdout)["nodes"]


def test_two_round_job_completes_through_tls_and_auth(deployment, tmp_path):
    # Prepare
    cfg = from_mapping({**SMALL, "out-dir": str(tmp_path / "out")})
    # Execute
    summary = deployment.run_job(cfg, timeout_s=300)
    # Assert
    assert summary["status"] == "completed", summary.get("error")
    assert summary["rounds"] == 2
    assert len((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()) == 2
    assert [n["status"] for n in nodes(deployment)] == ["online", "online"]
    for i in range(2):  # each SuperNode kept its client state where its node-config said
        assert any((deployment.workdir / f"supernode-{i}" / "state").rglob("*")), i


def test_supernode_with_unregistered_key_is_refused(deployment, tmp_path):
    # Prepare: a valid key pair the SuperLink has never seen
    rogue_key = D.generate_supernode_keys(tmp_path / "rogue", 1)[0]
    # Execute
    proc = deployment.start_supernode(1, rogue_key.private_key, name="rogue", max_retries=2)
    code = exit_code_within(proc, REFUSAL_TIMEOUT_S)
    # Assert
    log = (deployment.logs / "rogue.log").read_text()
    assert code not in (None, 0), log[-2000:]
    assert "Failed to activate SuperNode" in log
    assert len(nodes(deployment)) == 2  # the federation never saw it


def test_wait_online_raises_for_a_refused_supernode(deployment, tmp_path):
    rogue_key = D.generate_supernode_keys(tmp_path / "rogue2", 1)[0]
    proc = deployment.start_supernode(0, rogue_key.private_key, name="rogue2", max_retries=2)
    try:
        with pytest.raises(RuntimeError, match="exited with code"):
            deployment.wait_online(proc, deployment.logs / "rogue2.log")
    finally:
        exit_code_within(proc, 10)


def test_insecure_supernode_cannot_connect_to_tls_superlink(deployment):
    # Execute: plain HTTP to the HTTPS SuperLink, no key
    proc = deployment.start_supernode(0, None, insecure=True, name="insecure", max_retries=2)
    code = exit_code_within(proc, REFUSAL_TIMEOUT_S)
    # Assert
    log = (deployment.logs / "insecure.log").read_text()
    assert code not in (None, 0), log[-2000:]
    assert "could not establish a connection to the SuperLink" in log
    assert len(nodes(deployment)) == 2


def test_insecure_flwr_cli_cannot_connect_to_tls_superlink(deployment, tmp_path):
    # Prepare: a connection without TLS to the same address
    home = tmp_path / "insecure-cli"
    home.mkdir()
    (home / "config.toml").write_text(D.connection_toml(deployment.address, None))
    # Execute
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "flwr"), "supernode", "ls", D.CONNECTION],
        env=deployment.env(home),
        capture_output=True,
        text=True,
        timeout=REFUSAL_TIMEOUT_S,
    )
    # Assert
    assert proc.returncode != 0
    assert "Connection to the SuperLink is unavailable" in proc.stdout + proc.stderr


def test_registering_a_key_twice_is_an_error(deployment):
    with pytest.raises(RuntimeError, match="flwr supernode register"):
        deployment.register(deployment.keys[0].public_key)


def test_run_without_summary_is_an_error(deployment, tmp_path, monkeypatch):
    # Prepare: an app folder flwr cannot build, so the run never starts
    monkeypatch.setattr(D, "app_dir", lambda: tmp_path / "no-app")
    cfg = from_mapping({**SMALL, "out-dir": str(tmp_path / "out")})
    # Execute / Assert
    with pytest.raises(RuntimeError, match="without writing"):
        deployment.run_job(cfg, timeout_s=60)


def test_stop_leaves_no_process(tmp_path):
    # Execute: start a deployment and leave the block
    with D.LocalDeployment(tmp_path, num_supernodes=1) as dep:
        started = [p.pid for p in dep.group.alive()]
    # Assert: SuperLink, SuperNode and their SuperExecs were running, none is now
    assert len(started) >= 2
    assert dep.group.alive() == []
