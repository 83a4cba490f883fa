"""Flower Deployment Engine on one machine: SuperLink + N SuperNodes, TLS and auth on.

:class:`LocalDeployment` starts a SuperLink (not in simulation mode; ServerApps run in a
subprocess) bound to loopback, the Fleet-only nginx proxy in front of it
(:mod:`feddistill.proxy`: SuperNodes connect through it; the Control API stays on the
SuperLink's own address, the operator's), and one SuperNode per partition on free
loopback ports, with TLS (a private CA and a server certificate) and SuperNode
authentication (one ECDSA P-384 key pair per SuperNode, made by
:mod:`feddistill.deploy_files`; the public keys are registered with ``flwr supernode
register`` before the SuperNodes start). Each process gets its own ``FLWR_HOME`` and
log file; :meth:`LocalDeployment.stop` stops every process it started, by PID.
A job is submitted exactly as a user would: ``flwr run <app> <connection>
--run-config <toml> --stream`` through a ``config.toml`` connection that sets
``root-certificates``. ``deploy/`` holds the same layout as shell scripts and a
docker-compose file for real machines.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from feddistill.config import RunConfig
from feddistill.deploy_files import (
    CONNECTION,
    SupernodeKey,
    TlsFiles,
    connection_toml,
    generate_supernode_keys,
    generate_tls_certificates,
    node_config,
)
from feddistill.engine import _wait_for_port, flower_env, stage_app, write_run_toml
from feddistill.lifeline import ProcessGroup, spawn
from feddistill.ports import free_port
from feddistill.progress import pump_without_ansi
from feddistill.proxy import nginx_argv, write_nginx_config

NODE_ONLINE_MARK = "SuperNode ID:"  # flower-supernode logs this once the SuperLink activated it


class LocalDeployment:
    """A SuperLink, its Fleet-only proxy and SuperNodes on 127.0.0.1, TLS and auth, by PID.

    ``address`` is the SuperLink's own (Control API: the operator's ``flwr``, through
    ``cli_home``); ``fleet_address`` is the nginx proxy's, the only one SuperNodes use.
    Use as a context manager (``with LocalDeployment(d, 2) as dep: dep.run_job(cfg)``):
    leaving the block stops every process started, on success or error.
    ``timings`` records seconds spent in each start-up step.
    """

    def __init__(
        self,
        workdir: Path,
        num_supernodes: int,
        startup_timeout_s: float = 60.0,
    ) -> None:
        """Prepare (start nothing yet).

        Args:
            workdir: folder for certificates, keys, each process's FLWR_HOME and logs.
            num_supernodes: SuperNodes to start, one per partition (>= 1).
            startup_timeout_s: bound on each start-up wait (SuperLink, each SuperNode).

        Raises:
            ValueError: if `num_supernodes` < 1.
        """
        if num_supernodes < 1:
            raise ValueError(f"num_supernodes={num_supernodes} is not allowed; expected >= 1")
        self.workdir = Path(workdir).resolve()
        self.num_supernodes = num_supernodes
        self.startup_timeout_s = startup_timeout_s
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"  # SuperLink: Control API, the operator's
        self.fleet_port = free_port()
        self.fleet_address = f"127.0.0.1:{self.fleet_port}"  # proxy: Fleet API only
        self.proxy: subprocess.Popen | None = None
        self.group = ProcessGroup()
        self.timings: dict[str, float] = {}
        self.tls: TlsFiles | None = None
        self.keys: list[SupernodeKey] = []
        self.superlink: subprocess.Popen | None = None
        self.supernodes: list[subprocess.Popen] = []
        self.logs = self.workdir / "logs"
        self.cli_home = self.workdir / "flwr-cli"

    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self, home: Path) -> dict[str, str]:
        """Environment of a Flower process: its own FLWR_HOME, the venv's bin on PATH."""
        return flower_env(home)

    def _spawn(self, name: str, argv: list[str], home: Path) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        exe = argv[0] if Path(argv[0]).is_absolute() else str(Path(sys.executable).parent / argv[0])
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = spawn(  # dies with this process (feddistill.lifeline)
                [exe, *argv[1:]],
                env=self.env(home),
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.group.track(proc.pid)
        return proc

    def _timed(self, step: str, started: float) -> None:
        self.timings[f"{step}_s"] = time.monotonic() - started

    def start(self) -> None:
        """Certificates and keys, SuperLink, proxy, key registration, then the SuperNodes.

        Raises:
            RuntimeError: if the SuperLink, the proxy or a SuperNode does not come up in
                time, or a key cannot be registered.
            FileNotFoundError: if nginx is not installed.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cli_home.mkdir(parents=True, exist_ok=True)
        t = time.monotonic()
        self.tls = generate_tls_certificates(self.workdir / "certificates")
        self.keys = generate_supernode_keys(self.workdir / "keys", self.num_supernodes)
        (self.cli_home / "config.toml").write_text(connection_toml(self.address, self.tls.ca_cert))
        self._timed("credentials", t)
        t = time.monotonic()
        self.superlink = self._spawn(
            "superlink",
            [
                "flower-superlink",
                "--ssl-ca-certfile",
                str(self.tls.ca_cert),
                "--ssl-certfile",
                str(self.tls.server_cert),
                "--ssl-keyfile",
                str(self.tls.server_key),
                "--enable-supernode-auth",
                "--isolation",
                "subprocess",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                # a file, not ":memory:": concurrent Fleet requests broke the in-memory DB
                "--database",
                str(self.workdir / "superlink-state.db"),
            ],
            self.workdir / "superlink-home",
        )
        superlink_log = self.logs / "superlink.log"
        _wait_for_port(
            self.port, self.superlink, self.startup_timeout_s, lambda: f"see {superlink_log}"
        )
        self._timed("superlink", t)
        t = time.monotonic()
        self.start_proxy()
        self._timed("proxy", t)
        t = time.monotonic()
        for key in self.keys:
            self.register(key.public_key)
        self._timed("register", t)
        t = time.monotonic()
        for i, key in enumerate(self.keys):
            proc = self.start_supernode(
                i, key.private_key, state_dir=self.workdir / f"supernode-{i}" / "state"
            )
            self.supernodes.append(proc)
        for i, proc in enumerate(self.supernodes):
            self.wait_online(proc, self.logs / f"supernode-{i}.log")
        self._timed("supernodes", t)
        self.timings["startup_s"] = sum(
            self.timings[k]
            for k in ("credentials_s", "superlink_s", "proxy_s", "register_s", "supernodes_s")
        )

    def start_proxy(self) -> None:
        """Start the Fleet-only nginx proxy on ``fleet_address`` and wait until it listens.

        Raises:
            RuntimeError: if nginx exits or does not listen within startup_timeout_s.
            FileNotFoundError: if nginx is not installed.
        """
        assert self.tls is not None, "start() makes the certificates first"
        conf = write_nginx_config(
            self.workdir / "proxy",
            listen=self.fleet_address,
            superlink=self.address,
            cert_dir=self.tls.ca_cert.parent,
        )
        pid_file = conf.parent / "nginx.pid"  # nginx writes it once it listens
        pid_file.unlink(missing_ok=True)
        self.proxy = self._spawn("proxy", nginx_argv(conf), self.workdir / "proxy")
        deadline = time.monotonic() + self.startup_timeout_s
        while self.proxy.poll() is None and time.monotonic() < deadline:
            if pid_file.is_file() and pid_file.read_text().strip() == str(self.proxy.pid):
                self.group.track(self.proxy.pid)  # its worker process too
                return
            time.sleep(0.2)
        state = "did not listen in time" if self.proxy.poll() is None else "exited"
        raise RuntimeError(
            f"the fleet proxy (nginx) on {self.fleet_address} {state}; "
            f"see {conf.parent / 'error.log'} and {self.logs / 'proxy.log'}"
        )

    def flwr(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
        """Run the ``flwr`` CLI against this deployment's connection (bounded).

        Raises:
            subprocess.TimeoutExpired: if it runs longer than `timeout_s`.
        """
        return subprocess.run(
            [str(Path(sys.executable).parent / "flwr"), *args],
            env=self.env(self.cli_home),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def register(self, public_key: Path) -> None:
        """Register a SuperNode's public key on the SuperLink (``flwr supernode register``).

        Raises:
            RuntimeError: if the CLI fails (e.g. the key is already registered).
        """
        proc = self.flwr("supernode", "register", str(public_key), CONNECTION)
        if proc.returncode != 0 or "registered successfully" not in proc.stdout:
            raise RuntimeError(
                f"flwr supernode register {public_key} failed (exit {proc.returncode}): "
                f"{(proc.stdout + proc.stderr).strip()[-500:]}"
            )

    def start_supernode(
        self,
        partition_id: int,
        private_key: Path | None,
        *,
        insecure: bool = False,
        state_dir: Path | None = None,
        max_retries: int | None = None,
        name: str | None = None,
    ) -> subprocess.Popen:
        """Start one SuperNode (ClientApps in subprocesses) for `partition_id`.

        Args:
            partition_id: its partition, in [0, num_supernodes).
            private_key: its auth key (OpenSSH); None: no ``--auth-supernode-private-key``.
            insecure: connect without TLS (for checking that the SuperLink refuses it).
            state_dir: node-config ``state-dir``; None: the ClientApp's default.
            max_retries: give up after this many failed connection attempts.
            name: its log / FLWR_HOME name; default ``supernode-<partition_id>``.

        Returns:
            The process (also tracked, so :meth:`stop` stops it).

        Raises:
            ValueError: if `partition_id` is outside [0, num_supernodes).
        """
        name = name or f"supernode-{partition_id}"
        argv = ["flower-supernode", "--superlink", self.fleet_address]
        if insecure:
            argv.append("--insecure")
        else:
            assert self.tls is not None, "start() makes the certificates first"
            argv += ["--root-certificates", str(self.tls.ca_cert)]
        if private_key is not None:
            argv += ["--auth-supernode-private-key", str(private_key)]
        if max_retries is not None:
            argv += ["--max-retries", str(max_retries)]
        argv += [
            "--node-config",
            node_config(partition_id, self.num_supernodes, state_dir),
            "--isolation",
            "subprocess",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),  # its ClientAppIo API, for its own flower-superexec
        ]
        return self._spawn(name, argv, self.workdir / name / "flwr-home")

    def wait_online(self, proc: subprocess.Popen, log_path: Path) -> None:
        """Wait (bounded) until a SuperNode logs that the SuperLink activated it.

        Raises:
            RuntimeError: if it exits first or is not online within startup_timeout_s.
        """
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if log_path.is_file() and NODE_ONLINE_MARK in log_path.read_text(errors="replace"):
                self.group.track(proc.pid)
                return
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the SuperNode exited with code {proc.returncode} before going online; "
                    f"see {log_path}"
                )
            time.sleep(0.2)
        raise RuntimeError(
            f"the SuperNode was not online within {self.startup_timeout_s:.0f} s; see {log_path}"
        )

    def run_job(self, cfg: RunConfig, timeout_s: float = 600.0) -> dict[str, Any]:
        """Submit the job with ``flwr run --stream``; wait (bounded) for summary.json.

        Args:
            cfg: the run config; ``out_dir`` must be absolute (the ServerApp writes
                there) and ``num_partitions`` must equal the number of SuperNodes.
            timeout_s: bound on the whole run.

        Returns:
            The parsed summary.json (``status`` "completed" or "failed").

        Raises:
            ValueError: if `cfg.out_dir` is relative or `cfg.num_partitions` differs
                from the number of SuperNodes.
            RuntimeError: if the run ends (or times out) without writing summary.json.
        """
        out = Path(cfg.out_dir)
        if not out.is_absolute():
            raise ValueError(f"out_dir={cfg.out_dir!r} must be an absolute path")
        if cfg.num_partitions != self.num_supernodes:
            raise ValueError(
                f"num_partitions={cfg.num_partitions} must equal the number of SuperNodes "
                f"({self.num_supernodes})"
            )
        out.mkdir(parents=True, exist_ok=True)
        summary_path = out / "summary.json"
        summary_path.unlink(missing_ok=True)
        run_toml = self.cli_home / "run-config.toml"
        write_run_toml(cfg, run_toml)
        t = time.monotonic()
        log_path = out / "flower.log"
        log = log_path.open("ab")  # closed by the pump when `flwr run` ends (no ANSI codes)
        try:
            flwr = spawn(
                [
                    str(Path(sys.executable).parent / "flwr"),
                    "run",
                    str(stage_app(Path(tempfile.mkdtemp(dir=self.cli_home)) / "app")),
                    CONNECTION,
                    "--run-config",
                    str(run_toml),
                    "--stream",
                ],
                env=self.env(self.cli_home),
                cwd=out,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            log.close()
            raise
        pump_without_ansi(flwr.stdout, log, close_log=True)
        self.group.track(flwr.pid)
        deadline = time.monotonic() + timeout_s
        while flwr.poll() is None and not summary_path.is_file():
            for proc in [self.superlink, self.proxy, *self.supernodes]:
                if proc is not None:
                    self.group.track(proc.pid)  # ServerApp / ClientApp children too
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self._timed("run", t)
        if not summary_path.is_file():
            raise RuntimeError(
                f"the run ended without writing {summary_path} within {timeout_s:.0f} s; "
                f"see {log_path} and {self.logs}"
            )
        return json.loads(summary_path.read_text())

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop every process this deployment started (SIGTERM, then SIGKILL), by PID."""
        self.group.stop(grace_s)
