"""Deployment Engine on loopback: SuperLink + Fleet-only proxy + 2 SuperNodes, TLS and auth.

One deployment serves the module (start-up ~12 s, the 2-round digits job ~40 s on 2
cores); every negative check is bounded and kills what it started by PID, and the
fixture checks that stopping the deployment leaves none of its processes running.
The operator uses the SuperLink's loopback address (``dep.address``); SuperNodes and
outsiders reach only the proxy (``dep.fleet_address``), as in deploy/README.md.
"""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import subprocess
import sys
from base64 import b64encode
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.supercore.date import now
from flwr.supercore.primitives.asymmetric import public_key_to_bytes, sign_message

from feddistill import deploy_files as F
from feddistill import deployment as D
from feddistill.config import from_mapping
from feddistill.engine import flower_env, stage_app
from feddistill.proxy import REFUSED_DETAIL

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


REFUSED = "Refused by the feddistill fleet proxy"
assert REFUSED_DETAIL.startswith(REFUSED)


def flwr_as(home: Path, *args: str) -> subprocess.CompletedProcess:
    """The flwr CLI with FLWR_HOME=`home`, bounded; output in stdout + stderr."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "flwr"), *args],
        env=flower_env(home),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=REFUSAL_TIMEOUT_S,
    )


def runs(dep: D.LocalDeployment) -> dict[int, str]:
    """run id -> status, as the operator sees them."""
    listing = dep.flwr("ls", D.CONNECTION, "--format", "json")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    return {int(r["run-id"]): r["status"] for r in json.loads(listing.stdout)["runs"]}


def nodes(dep: D.LocalDeployment) -> list[dict]:
    listing = dep.flwr("supernode", "ls", D.CONNECTION, "--format", "json")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    return json.loads(listing.stdout)["nodes"]


def test_two_round_job_with_mixed_models_completes_through_tls_and_auth(deployment, tmp_path):
    # Prepare: issue 11's per-client architectures (a different teacher on each
    # SuperNode) and top-2 logits, on the default strategy. (One job: a second, with
    # strategy=logits-only, took ~40 s more; logits-only runs on the simulation engine
    # in tests/e2e/test_e2e_run.py.)
    extra = {"teacher-models": "mlp,cnn-small", "logits-top-m": 2}
    cfg = from_mapping({**SMALL, **extra, "out-dir": str(tmp_path / "out")})
    # Execute
    summary = deployment.run_job(cfg, timeout_s=300)
    # Assert
    assert summary["status"] == "completed", summary.get("error")
    assert summary["rounds"] == 2
    table = [
        json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["accepted"] for r in table] == [2, 2]
    assert all(r["uplink_update_bytes"] > 0 and r["uplink_logits_bytes"] > 0 for r in table)
    assert b"\x1b[" not in (tmp_path / "out" / "flower.log").read_bytes()  # no ANSI codes
    assert [n["status"] for n in nodes(deployment)] == ["online", "online"]
    for i in range(2):  # each SuperNode kept its client state where its node-config said
        assert any((deployment.workdir / f"supernode-{i}" / "state").rglob("*")), i


def test_supernode_with_unregistered_key_is_refused(deployment, tmp_path):
    # Prepare: a valid key pair the SuperLink has never seen
    rogue_key = F.generate_supernode_keys(tmp_path / "rogue", 1)[0]
    # Execute
    proc = deployment.start_supernode(1, rogue_key.private_key, name="rogue", max_retries=2)
    code = exit_code_within(proc, REFUSAL_TIMEOUT_S)
    # Assert
    log = (deployment.logs / "rogue.log").read_text()
    assert code not in (None, 0), log[-2000:]
    assert "Failed to activate SuperNode" in log
    assert len(nodes(deployment)) == 2  # the federation never saw it


def test_wait_online_raises_for_a_refused_supernode(deployment, tmp_path):
    rogue_key = F.generate_supernode_keys(tmp_path / "rogue2", 1)[0]
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
    (home / "config.toml").write_text(F.connection_toml(deployment.address, None))
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
    # Prepare: an empty app folder flwr cannot build, so the run never starts
    def empty_app(dest: Path) -> Path:
        dest.mkdir(parents=True)
        return dest

    monkeypatch.setattr(D, "stage_app", empty_app)
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


# --- Who may use the Control API (issue 16): only the operator, on loopback ----------


@pytest.fixture(scope="module")
def outsider(deployment, tmp_path_factory):
    """A flwr home holding nothing but ca.crt and a connection to the public (proxy) address."""
    home = tmp_path_factory.mktemp("outsider")
    ca = Path(shutil.copy(deployment.tls.ca_cert, home / "ca.crt"))
    (home / "config.toml").write_text(F.connection_toml(deployment.fleet_address, ca))
    return home


@pytest.fixture(scope="module")
def waiting_run(deployment, tmp_path_factory):
    """A run the operator submitted that idles (it waits for a 3rd SuperNode); its id."""
    out = tmp_path_factory.mktemp("waiting-run")
    cfg = from_mapping({**SMALL, "num-partitions": 3, "round-timeout-s": 600, "out-dir": str(out)})
    D.write_run_toml(cfg, out / "run.toml")
    started = deployment.flwr(
        "run",
        str(stage_app(out / "app")),  # not the checkout: its FAB walk visits all of .venv
        D.CONNECTION,
        "--run-config",
        str(out / "run.toml"),
        "--format",
        "json",
        timeout_s=180,  # builds and uploads the app; took over 60 s with two suites at load 10
    )
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = int(json.loads(started.stdout)["run-id"])
    yield run_id
    deployment.flwr("stop", str(run_id), D.CONNECTION)


def test_outsider_cannot_register_a_key(deployment, outsider, tmp_path):
    # Prepare: the outsider's own key pair
    key = F.generate_supernode_keys(tmp_path, 1)[0]
    # Execute
    proc = flwr_as(outsider, "supernode", "register", str(key.public_key), D.CONNECTION)
    # Assert
    assert proc.returncode != 0
    assert REFUSED in proc.stdout + proc.stderr
    assert len(nodes(deployment)) == 2


def test_outsider_cannot_list_nodes(outsider):
    proc = flwr_as(outsider, "supernode", "list", D.CONNECTION)
    assert proc.returncode != 0
    assert REFUSED in proc.stdout + proc.stderr
    assert "node-id" not in proc.stdout


def test_outsider_cannot_submit_a_run(deployment, outsider, tmp_path):
    # Prepare
    before = runs(deployment)
    cfg = from_mapping({**SMALL, "out-dir": str(tmp_path / "out")})
    D.write_run_toml(cfg, tmp_path / "run.toml")
    # Execute
    # the staged app, as `feddistill run` submits it: `flwr run` on the checkout itself
    # walks all of .venv to build the FAB (~55,000 paths), which outran the timeout on a
    # loaded machine (CI, 1 Dec)
    app = stage_app(tmp_path / "app")
    proc = flwr_as(
        outsider, "run", str(app), D.CONNECTION, "--run-config", str(tmp_path / "run.toml")
    )
    # Assert
    assert proc.returncode != 0
    assert REFUSED in proc.stdout + proc.stderr
    assert runs(deployment) == before


def test_outsider_cannot_stop_a_run(deployment, outsider, waiting_run):
    proc = flwr_as(outsider, "stop", str(waiting_run), D.CONNECTION)
    assert proc.returncode != 0
    assert REFUSED in proc.stdout + proc.stderr
    assert not runs(deployment)[waiting_run].startswith("finished")


def test_outsider_cannot_read_logs(outsider, waiting_run):
    proc = flwr_as(outsider, "log", str(waiting_run), D.CONNECTION, "--show")
    assert proc.returncode != 0
    assert REFUSED in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "path",
    [
        "/v1/control/register-node",
        "/v1/control/list-nodes",
        "/v1/control/start-run",
        "/v1/control/stop-run",
        "/v1/control/stream-logs",
        "/v1/runtime/get-nodes",  # the ServerApp's own API
        "/v1/fleet/../control/list-nodes",  # nginx matches the normalised path
        "/v1/fleet/%2e%2e/control/list-nodes",
    ],
)
def test_supernode_credentials_cannot_use_the_control_api(deployment, path):
    # Prepare: headers signed with registered supernode-0's private key, as its Fleet
    # requests are, sent through the public address with only ca.crt
    key = load_ssh_private_key(deployment.keys[0].private_key.read_bytes(), None)
    timestamp = now().isoformat()
    headers = {
        "content-type": "application/protobuf",
        "flwr-public-key": b64encode(public_key_to_bytes(key.public_key())).decode(),
        "flwr-timestamp": timestamp,
        "flwr-signature": b64encode(sign_message(key, timestamp.encode())).decode(),
    }
    context = ssl.create_default_context(cafile=str(deployment.tls.ca_cert))
    conn = http.client.HTTPSConnection(
        "127.0.0.1", deployment.fleet_port, context=context, timeout=REFUSAL_TIMEOUT_S
    )
    # Execute
    try:
        conn.request("POST", path, body=b"", headers=headers)
        response = conn.getresponse()
        status, body = response.status, json.loads(response.read())
    finally:
        conn.close()
    # Assert
    assert status == 403
    assert body == {"detail": REFUSED_DETAIL}


def test_operator_registers_and_unregisters_a_key(deployment, tmp_path):
    # Prepare
    key = F.generate_supernode_keys(tmp_path, 1)[0]
    # Execute
    deployment.register(key.public_key)
    listed = nodes(deployment)
    new = [n["node-id"] for n in listed if n["status"] == "registered"]
    gone = deployment.flwr("supernode", "unregister", new[0], D.CONNECTION)
    # Assert
    assert len(listed) == 3 and len(new) == 1
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert len([n for n in nodes(deployment) if n["status"] != "unregistered"]) == 2


def test_operator_reads_logs(deployment, waiting_run):
    proc = deployment.flwr("log", str(waiting_run), D.CONNECTION, "--show")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert REFUSED not in proc.stdout + proc.stderr


def test_operator_stops_a_run(deployment, waiting_run):
    # Execute
    proc = deployment.flwr("stop", str(waiting_run), D.CONNECTION)
    # Assert
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert runs(deployment)[waiting_run] == "finished:stopped"
