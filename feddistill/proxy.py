"""Fleet-only reverse proxy (nginx) in front of a SuperLink bound to loopback.

Flower 1.42's SuperLink serves its Fleet API (SuperNodes), Control API (``flwr``:
runs, SuperNode registration, listing, logs) and Runtime API (its own ServerApp
process) on one HTTPS port, and the open-source distribution has no account
authentication for the Control API (OIDC is enterprise-only). So the SuperLink listens
on 127.0.0.1 only, and nginx is the one public door: it terminates TLS with the
SuperLink's certificate and forwards exactly the Fleet API's routes
(``POST /v1/fleet/<name>``, normalised URI) to it; every other request gets HTTP 403
with a JSON ``detail`` that the ``flwr`` CLI prints. The operator uses the Control API
on the SuperLink machine's loopback (locally or through an SSH tunnel). See
``deploy/README.md`` for the threat model.

``python -m feddistill.proxy --listen 0.0.0.0:9093 --superlink 127.0.0.1:9091
--cert-dir deploy/tls/certificates --prefix DIR`` writes ``DIR/nginx.conf``;
``nginx -p DIR -c DIR/nginx.conf -e DIR/error.log`` serves it (``deploy/proxy.sh``).

References:
    nginx ``ngx_http_proxy_module`` and ``ngx_http_ssl_module`` documentation,
    https://nginx.org/en/docs/http/ngx_http_proxy_module.html
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

FLEET_ROUTE = r"^/v1/fleet/[a-z-]+$"  # every Fleet endpoint; nothing else is forwarded
REFUSED_DETAIL = (
    "Refused by the feddistill fleet proxy: this address serves only the Fleet API "
    "(SuperNodes). The Control API (flwr run/stop/log, supernode register/list) is "
    "reachable only by the operator, on the loopback address of the SuperLink machine."
)
INSTALL_HINT = "install nginx (Debian/Ubuntu: apt-get install -y nginx)"


def _host_port(value: str, name: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"{name}={value!r} is not allowed; expected HOST:PORT with PORT in 1..65535"
        )
    return host, int(port)


def nginx_config(
    *,
    listen: str,
    superlink: str,
    cert_dir: Path,
    prefix: Path,
    superlink_tls_name: str = "localhost",
) -> str:
    """The nginx configuration of the Fleet-only proxy.

    Args:
        listen: ``HOST:PORT`` the proxy listens on (``0.0.0.0:9093`` for SuperNodes on
            other machines).
        superlink: ``HOST:PORT`` of the SuperLink (bound to loopback).
        cert_dir: folder with ``ca.crt``, ``server.crt`` and ``server.key`` (from
            ``deploy/tls/generate_certs.sh``); the proxy presents ``server.crt`` to
            SuperNodes and verifies the SuperLink's certificate against ``ca.crt``.
        prefix: nginx's prefix folder (pid file, logs, temporary files).
        superlink_tls_name: the name checked in the SuperLink's certificate.

    Returns:
        The text of ``nginx.conf``.

    Raises:
        ValueError: if `listen` or `superlink` is not ``HOST:PORT``.
    """
    _host_port(listen, "listen")
    _host_port(superlink, "superlink")
    cert_dir = cert_dir.resolve()
    prefix = prefix.resolve()
    body = json.dumps({"detail": REFUSED_DETAIL})
    assert "'" not in body and "\\" not in body, "the 403 body is an nginx single-quoted string"
    temp = "\n".join(
        f"    {kind}_temp_path {prefix}/tmp-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""# feddistill fleet proxy, written by `python -m feddistill.proxy`; do not edit.
# Public side: only POST {FLEET_ROUTE} (the Fleet API) reaches the SuperLink.
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {prefix}/access.log;
{temp}
    server_tokens off;
    upstream superlink {{ server {superlink}; keepalive 8; }}
    server {{
        listen {listen} ssl;
        ssl_certificate {cert_dir}/server.crt;
        ssl_certificate_key {cert_dir}/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        client_max_body_size 0;  # Fleet messages carry model weights
        location ~ {FLEET_ROUTE} {{
            limit_except POST {{ deny all; }}
            # $uri: the normalised path that matched, not the client's raw bytes
            proxy_pass https://superlink$uri;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 600s;
            proxy_ssl_trusted_certificate {cert_dir}/ca.crt;
            proxy_ssl_verify on;
            proxy_ssl_name {superlink_tls_name};
        }}
        location / {{
            default_type application/json;
            return 403 '{body}';
        }}
    }}
}}
"""


def write_nginx_config(prefix: Path, *, listen: str, superlink: str, cert_dir: Path) -> Path:
    """Write ``<prefix>/nginx.conf`` (see :func:`nginx_config`) and nginx's folders.

    Returns:
        The path of ``nginx.conf``.

    Raises:
        ValueError: if `listen` or `superlink` is not ``HOST:PORT``.
        FileNotFoundError: if `cert_dir` lacks ``ca.crt``, ``server.crt`` or
            ``server.key``.
    """
    missing = [n for n in ("ca.crt", "server.crt", "server.key") if not (cert_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"cert_dir={str(cert_dir)!r} lacks {', '.join(missing)}; "
            "run deploy/tls/generate_certs.sh first"
        )
    text = nginx_config(listen=listen, superlink=superlink, cert_dir=cert_dir, prefix=prefix)
    prefix.mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(text)
    return path


def nginx_binary() -> str:
    """The nginx executable on PATH (or in /usr/sbin).

    Raises:
        FileNotFoundError: if nginx is not installed.
    """
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise FileNotFoundError(f"nginx is not installed; {INSTALL_HINT}")
    return found


def nginx_argv(conf: Path) -> list[str]:
    """Command line that runs nginx in the foreground on `conf` (its folder is the prefix).

    Raises:
        FileNotFoundError: if nginx is not installed.
    """
    prefix = conf.resolve().parent
    return [
        nginx_binary(),
        "-p",
        str(prefix),
        "-c",
        str(conf.resolve()),
        "-e",
        str(prefix / "error.log"),
        "-g",
        "daemon off;",
    ]


def main(argv: list[str] | None = None) -> None:
    """``python -m feddistill.proxy``: write the proxy's nginx.conf, print its path."""
    parser = argparse.ArgumentParser(prog="python -m feddistill.proxy", description=__doc__)
    parser.add_argument("--listen", default="0.0.0.0:9093", help="public HOST:PORT")
    parser.add_argument("--superlink", default="127.0.0.1:9091", help="loopback HOST:PORT")
    parser.add_argument("--cert-dir", type=Path, required=True)
    parser.add_argument("--prefix", type=Path, required=True, help="nginx prefix folder")
    args = parser.parse_args(argv)
    try:
        conf = write_nginx_config(
            args.prefix, listen=args.listen, superlink=args.superlink, cert_dir=args.cert_dir
        )
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    print(conf)


if __name__ == "__main__":
    main()
