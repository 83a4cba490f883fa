"""Files a Flower deployment needs: TLS certificates, SuperNode keys, node configs.

The one implementation of TLS and key generation: :class:`feddistill.deployment.LocalDeployment`
calls it, and so do the shell scripts for real machines (``deploy/tls/generate_certs.sh``,
``deploy/auth/generate_keys.sh``), through :func:`main`::

    python -m feddistill.deploy_files tls OUT_DIR [NAME ...]   # CA + SuperLink certificate
    python -m feddistill.deploy_files keys NUM OUT_DIR         # SuperNode key pairs

Nothing here starts a process.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CONNECTION = "feddistill-deployment"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for the SuperLink's TLS: a private CA and a server certificate."""

    ca_cert: Path  # every SuperNode and flwr user: --root-certificates / root-certificates
    ca_key: Path  # keep offline; only signs server certificates
    server_cert: Path  # SuperLink: --ssl-certfile
    server_key: Path  # SuperLink: --ssl-keyfile


@dataclass(frozen=True)
class SupernodeKey:
    """One SuperNode's authentication key pair (ECDSA P-384, OpenSSH format)."""

    private_key: Path  # stays on the SuperNode: --auth-supernode-private-key
    public_key: Path  # registered on the SuperLink: flwr supernode register


def _write(path: Path, data: bytes, mode: int) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def generate_tls_certificates(
    out_dir: Path, hosts: tuple[str, ...] = LOOPBACK_NAMES, days: int = 365
) -> TlsFiles:
    """Make a CA and a SuperLink certificate signed by it (EC P-384, SHA-384).

    ``deploy/tls/generate_certs.sh`` calls this (through :func:`main`); overwrites
    existing files.

    Args:
        out_dir: folder for ``ca.crt``, ``ca.key``, ``server.crt``, ``server.key``
            (created if missing; private keys are written with mode 0600).
        hosts: DNS names and IP addresses the SuperLink is reached by; each becomes a
            subjectAltName of the server certificate.
        days: validity in days from now.

    Returns:
        The paths of the four files.

    Raises:
        ValueError: if `hosts` is empty or `days` < 1.
    """
    if not hosts:
        raise ValueError("hosts=() is empty; give at least one DNS name or IP address")
    if days < 1:
        raise ValueError(f"days={days} is not allowed; expected an integer >= 1")
    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "feddistill"),
            x509.NameAttribute(NameOID.COMMON_NAME, "feddistill CA"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "superlink")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    pem = serialization.Encoding.PEM
    return TlsFiles(
        ca_cert=_write(out_dir / "ca.crt", ca_cert.public_bytes(pem), 0o644),
        ca_key=_write(out_dir / "ca.key", pem_key(ca_key), 0o600),
        server_cert=_write(out_dir / "server.crt", server_cert.public_bytes(pem), 0o644),
        server_key=_write(out_dir / "server.key", pem_key(server_key), 0o600),
    )


def generate_supernode_keys(
    out_dir: Path, num_supernodes: int, keep_existing: bool = False
) -> list[SupernodeKey]:
    """Make one ECDSA P-384 key pair per SuperNode, in OpenSSH format.

    ``deploy/auth/generate_keys.sh`` calls this (through :func:`main`, keeping existing
    keys). The same keys as ``ssh-keygen -t ecdsa -b 384``.

    Args:
        out_dir: folder for the keys (created if missing; private keys mode 0600).
        num_supernodes: how many key pairs, >= 1.
        keep_existing: keep a pair whose private key file exists (to rotate, delete
            it); False: overwrite every pair.

    Returns:
        The key pairs, in SuperNode order.

    Raises:
        ValueError: if `num_supernodes` < 1.
    """
    if num_supernodes < 1:
        raise ValueError(f"num_supernodes={num_supernodes} is not allowed; expected >= 1")
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = []
    for i in range(num_supernodes):
        private_path, public_path = out_dir / f"supernode-{i}", out_dir / f"supernode-{i}.pub"
        if keep_existing and private_path.is_file():
            keys.append(SupernodeKey(private_key=private_path, public_key=public_path))
            continue
        key = ec.generate_private_key(ec.SECP384R1())
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        keys.append(
            SupernodeKey(
                private_key=_write(private_path, private, 0o600),
                public_key=_write(public_path, public + b"\n", 0o644),
            )
        )
    return keys


def node_config(partition_id: int, num_partitions: int, state_dir: Path | None = None) -> str:
    """The ``--node-config`` string of the SuperNode that serves one partition.

    Args:
        partition_id: the partition this SuperNode trains on, in [0, num_partitions).
        num_partitions: how many partitions the job has (its ``num-partitions``).
        state_dir: where the ClientApp keeps this client's state (teacher, error
            feedback); default: ``<out-dir>/client-state`` on the SuperNode.

    Returns:
        E.g. ``partition-id=0 num-partitions=2 state-dir="/srv/state"``.

    Raises:
        ValueError: if `partition_id` is outside [0, num_partitions).
    """
    if not 0 <= partition_id < num_partitions:
        raise ValueError(
            f"partition_id={partition_id} is not allowed; expected an integer in "
            f"[0, {num_partitions}) (num_partitions={num_partitions})"
        )
    text = f"partition-id={partition_id} num-partitions={num_partitions}"
    if state_dir is not None:
        text += f" state-dir={json.dumps(str(state_dir))}"
    return text


def connection_toml(address: str, root_certificates: Path | None) -> str:
    """A ``FLWR_HOME/config.toml`` whose default connection is this SuperLink.

    Args:
        address: the SuperLink's ``host:port``.
        root_certificates: the CA certificate (absolute path); None: insecure (no TLS).

    Returns:
        The file's text.
    """
    tls = (
        f"root-certificates = {json.dumps(str(root_certificates.resolve()))}\n"
        if root_certificates is not None
        else "insecure = true\n"
    )
    return (
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{address}"\n{tls}'
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m feddistill.deploy_files``: the deploy/ scripts' entry point.

    ``tls OUT_DIR [NAME ...]`` writes a CA and a SuperLink certificate valid for
    localhost, 127.0.0.1, ::1 and every NAME (``CERT_DAYS`` in the environment sets the
    validity, default 365 days); ``keys NUM OUT_DIR`` writes NUM SuperNode key pairs,
    keeping existing ones.

    Returns:
        0 on success, 2 on bad arguments (the message goes to stderr).
    """
    parser = argparse.ArgumentParser(prog="python -m feddistill.deploy_files")
    sub = parser.add_subparsers(dest="what", required=True)
    tls = sub.add_parser("tls", help="a private CA and a SuperLink server certificate")
    tls.add_argument("out_dir", type=Path)
    tls.add_argument("names", nargs="*", help="extra DNS names / IP addresses of the SuperLink")
    keys = sub.add_parser("keys", help="SuperNode authentication key pairs")
    keys.add_argument("num", type=int)
    keys.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.what == "tls":
            hosts = tuple(dict.fromkeys([*LOOPBACK_NAMES, *args.names]))
            files = generate_tls_certificates(
                args.out_dir, hosts, days=int(os.environ.get("CERT_DAYS", "365"))
            )
            print(f"wrote {files.ca_cert.parent}/{{ca.crt,ca.key,server.crt,server.key}}", end="")
            print(f" (SAN: {', '.join(hosts)})")
        else:
            for key in generate_supernode_keys(args.out_dir, args.num, keep_existing=True):
                print(f"{key.private_key} and {key.public_key}")
    except ValueError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
