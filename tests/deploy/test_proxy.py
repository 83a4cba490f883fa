"""The Fleet-only nginx proxy's configuration, its errors and the loopback-only SuperLink.

Fast: nginx runs only to check the configuration (``nginx -t``) or to fail to bind. The
proxy in front of a real SuperLink is tested in test_deploy_loopback.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from feddistill import deploy_files as F
from feddistill import deployment as D
from feddistill import proxy as P

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("certs")
    F.generate_tls_certificates(out)
    return out


def test_config_forwards_only_fleet_routes_and_refuses_the_rest(cert_dir, tmp_path):
    # Execute
    conf = P.nginx_config(
        listen="0.0.0.0:9093", superlink="127.0.0.1:9091", cert_dir=cert_dir, prefix=tmp_path
    )
    # Assert: one forwarding location (Fleet routes, normalised path), 403 elsewhere
    assert conf.count("proxy_pass ") == 1
    assert "location ~ ^/v1/fleet/[a-z-]+$ {" in conf
    assert "proxy_pass https://superlink$uri;" in conf
    assert "upstream superlink { server 127.0.0.1:9091; keepalive 8; }" in conf
    assert "listen 0.0.0.0:9093 ssl;" in conf
    assert f"return 403 '{json.dumps({'detail': P.REFUSED_DETAIL})}';" in conf


def test_nginx_accepts_the_written_config(cert_dir, tmp_path):
    # Prepare
    conf = P.write_nginx_config(
        tmp_path, listen="127.0.0.1:9093", superlink="127.0.0.1:9091", cert_dir=cert_dir
    )
    argv = [a for a in P.nginx_argv(conf) if a not in ("-g", "daemon off;")]
    # Execute
    proc = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=60)
    # Assert
    assert proc.returncode == 0, proc.stderr
    assert "syntax is ok" in proc.stderr


@pytest.mark.parametrize("listen", ["9093", "0.0.0.0:", ":9093", "0.0.0.0:70000"])
def test_listen_without_host_and_port_is_an_error(cert_dir, tmp_path, listen):
    with pytest.raises(ValueError, match=f"listen={listen!r} is not allowed"):
        P.nginx_config(
            listen=listen, superlink="127.0.0.1:9091", cert_dir=cert_dir, prefix=tmp_path
        )


def test_missing_certificates_are_an_error(tmp_path):
    # Prepare: only the CA certificate
    (tmp_path / "ca.crt").write_text("x")
    # Execute / Assert
    with pytest.raises(FileNotFoundError, match="lacks server.crt, server.key"):
        P.write_nginx_config(
            tmp_path / "p", listen="127.0.0.1:1", superlink="127.0.0.1:2", cert_dir=tmp_path
        )


def test_missing_nginx_is_an_error(monkeypatch):
    monkeypatch.setattr(P.shutil, "which", lambda *a, **k: None)
    with pytest.raises(FileNotFoundError, match="apt-get install -y nginx"):
        P.nginx_binary()


def test_cli_writes_the_config(cert_dir, tmp_path, capsys):
    # Execute
    P.main(["--cert-dir", str(cert_dir), "--prefix", str(tmp_path / "run")])
    # Assert: defaults are the documented ports
    conf = tmp_path / "run" / "nginx.conf"
    assert capsys.readouterr().out.strip() == str(conf)
    assert "listen 0.0.0.0:9093 ssl;" in conf.read_text()
    assert "server 127.0.0.1:9091;" in conf.read_text()


def test_proxy_that_cannot_listen_is_an_error(tmp_path):
    # Prepare: the proxy's port is taken
    dep = D.LocalDeployment(tmp_path, num_supernodes=1, startup_timeout_s=30)
    dep.tls = F.generate_tls_certificates(tmp_path / "certs")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", dep.fleet_port))
        taken.listen()
        # Execute / Assert
        try:
            with pytest.raises(RuntimeError, match=r"fleet proxy \(nginx\) .* exited"):
                dep.start_proxy()
        finally:
            dep.stop()
    assert "Address already in use" in (tmp_path / "proxy" / "error.log").read_text()
    assert dep.group.alive() == []


def test_superlink_script_refuses_a_public_host():
    # Execute
    proc = subprocess.run(
        [str(DEPLOY / "superlink.sh")],
        env={"HOST": "0.0.0.0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    # Assert
    assert proc.returncode == 2
    assert "HOST=0.0.0.0 is not allowed" in proc.stderr


def test_docker_compose_publishes_only_the_proxy_port():
    # Prepare
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    # Execute
    link = " ".join(services["superlink"]["command"])
    published = {name: s.get("ports", []) for name, s in services.items()}
    # Assert: SuperLink on its namespace's loopback; the proxy shares that namespace
    assert "--host=127.0.0.1" in link and "--port=9091" in link
    assert services["proxy"]["network_mode"] == "service:superlink"
    assert services["proxy"]["environment"]["SUPERLINK"] == "127.0.0.1:9091"
    assert services["proxy"]["environment"]["LISTEN"] == "0.0.0.0:9093"
    assert published == {
        "superlink": ["9093:9093"],
        "proxy": [],
        "supernode-0": [],
        "supernode-1": [],
    }
    assert all(
        "--superlink=superlink:9093" in services[f"supernode-{i}"]["command"] for i in (0, 1)
    )
