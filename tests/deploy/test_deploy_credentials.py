"""Certificates, SuperNode keys, node configs and connections for the Deployment Engine.

Fast: nothing is started. The shell scripts in deploy/ (which call
feddistill.deploy_files) are checked too.
"""

from __future__ import annotations

import ipaddress
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from feddistill import deploy_files as F
from feddistill import deployment as D
from feddistill.config import from_mapping

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def sans(cert_path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in names.get_values_for_type(x509.DNSName)} | {
        str(v) for v in names.get_values_for_type(x509.IPAddress)
    }


def assert_signed_by_ca(tls_dir: Path) -> None:
    ca = x509.load_pem_x509_certificate((tls_dir / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((tls_dir / "server.crt").read_bytes())
    server.verify_directly_issued_by(ca)  # raises if not
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_tls_certificates_are_signed_by_the_ca_for_every_host(tmp_path):
    # Execute
    tls = F.generate_tls_certificates(tmp_path, hosts=("localhost", "127.0.0.1", "superlink"))
    # Assert
    assert_signed_by_ca(tmp_path)
    assert sans(tls.server_cert) == {"localhost", "127.0.0.1", "superlink"}
    assert tls.ca_key.stat().st_mode & 0o777 == 0o600
    assert tls.server_key.stat().st_mode & 0o777 == 0o600


def test_tls_without_hosts_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="hosts=()"):
        F.generate_tls_certificates(tmp_path, hosts=())


def test_tls_with_zero_days_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="days=0"):
        F.generate_tls_certificates(tmp_path, days=0)


def test_supernode_keys_are_p384_openssh_pairs(tmp_path):
    # Execute
    keys = F.generate_supernode_keys(tmp_path, 2)
    # Assert: what flower-supernode and `flwr supernode register` load
    assert [k.private_key.name for k in keys] == ["supernode-0", "supernode-1"]
    for key in keys:
        private = load_ssh_private_key(key.private_key.read_bytes(), None)
        public = load_ssh_public_key(key.public_key.read_bytes())
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.curve.name == "secp384r1"
        assert private.public_key().public_numbers() == public.public_numbers()
        assert key.private_key.stat().st_mode & 0o777 == 0o600


def test_zero_supernode_keys_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="num_supernodes=0"):
        F.generate_supernode_keys(tmp_path, 0)


def test_keep_existing_supernode_keys_are_not_rotated(tmp_path):
    # Prepare
    first = F.generate_supernode_keys(tmp_path, 1)[0].private_key.read_bytes()

    # Execute
    keys = F.generate_supernode_keys(tmp_path, 2, keep_existing=True)

    # Assert: pair 0 kept, pair 1 made
    assert keys[0].private_key.read_bytes() == first
    assert keys[1].private_key.is_file() and keys[1].public_key.is_file()


def test_deploy_files_cli_bad_count_exits_2_with_the_message(tmp_path, capsys):
    # Execute
    code = F.main(["keys", "0", str(tmp_path)])

    # Assert
    assert code == 2
    assert "num_supernodes=0 is not allowed" in capsys.readouterr().err


def test_node_config_names_partition_and_state_dir():
    assert F.node_config(1, 2) == "partition-id=1 num-partitions=2"
    assert F.node_config(0, 2, Path("/srv/state")) == (
        'partition-id=0 num-partitions=2 state-dir="/srv/state"'
    )


@pytest.mark.parametrize("partition_id", [-1, 2])
def test_node_config_outside_partitions_is_an_error(partition_id):
    with pytest.raises(ValueError, match=f"partition_id={partition_id}"):
        F.node_config(partition_id, 2)


def test_connection_toml_sets_root_certificates_or_insecure(tmp_path):
    secure = tomllib.loads(F.connection_toml("127.0.0.1:9093", tmp_path / "ca.crt"))
    insecure = tomllib.loads(F.connection_toml("127.0.0.1:9093", None))
    conn = secure["superlink"][F.CONNECTION]
    assert secure["superlink"]["default"] == F.CONNECTION
    assert conn == {"address": "127.0.0.1:9093", "root-certificates": str(tmp_path / "ca.crt")}
    assert insecure["superlink"][F.CONNECTION]["insecure"] is True


def test_deployment_without_supernodes_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="num_supernodes=0"):
        D.LocalDeployment(tmp_path, num_supernodes=0)


def test_run_job_with_relative_out_dir_is_an_error(tmp_path):
    dep = D.LocalDeployment(tmp_path, num_supernodes=2)
    with pytest.raises(ValueError, match="must be an absolute path"):
        dep.run_job(from_mapping({"num-partitions": 2, "out-dir": "results/x"}))


def test_run_job_with_other_partition_count_is_an_error(tmp_path):
    dep = D.LocalDeployment(tmp_path, num_supernodes=2)
    cfg = from_mapping({"num-partitions": 3, "out-dir": str(tmp_path / "out")})
    with pytest.raises(ValueError, match="num_partitions=3 must equal"):
        dep.run_job(cfg)


def test_wait_online_times_out(tmp_path):
    # Prepare: a process that never logs the online mark
    dep = D.LocalDeployment(tmp_path, num_supernodes=1, startup_timeout_s=0.5)
    proc = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(RuntimeError, match="not online within"):
            dep.wait_online(proc, tmp_path / "missing.log")
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_generate_certs_script_signs_server_for_extra_names(tmp_path):
    # Execute
    proc = subprocess.run(
        ["bash", str(DEPLOY / "tls" / "generate_certs.sh"), str(tmp_path), "superlink", "10.0.0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Assert
    assert proc.returncode == 0, proc.stderr
    assert_signed_by_ca(tmp_path)
    assert sans(tmp_path / "server.crt") == {
        "localhost",
        "127.0.0.1",
        str(ipaddress.ip_address("::1")),
        "superlink",
        "10.0.0.5",
    }


def test_generate_keys_script_writes_loadable_p384_keys(tmp_path):
    proc = subprocess.run(
        ["bash", str(DEPLOY / "auth" / "generate_keys.sh"), "2", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    for i in range(2):
        private = load_ssh_private_key((tmp_path / f"supernode-{i}").read_bytes(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.curve.name == "secp384r1"


def test_docker_compose_has_superlink_and_supernodes_with_tls_and_auth():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    link = " ".join(services["superlink"]["command"])
    assert "--enable-supernode-auth" in link and "--ssl-certfile" in link
    supernodes = [s for name, s in services.items() if name.startswith("supernode-")]
    assert len(supernodes) == 2
    for i, node in enumerate(sorted(supernodes, key=lambda s: s["container_name"])):
        cmd = " ".join(node["command"])
        assert "--root-certificates" in cmd and "--auth-supernode-private-key" in cmd
        assert f"partition-id={i}" in cmd
