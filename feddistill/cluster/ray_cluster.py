"""Start a local multi-node Ray cluster on loopback: only what ``ray start`` cannot do.

``ray start`` starts one node. What :class:`LocalRayCluster` adds, and why:

- **One foreground ``ray start --block`` per node, stopped by PID.** Without
  ``--block`` the node's daemons detach from us, and the only way to stop them is
  ``ray stop``, which kills every Ray process on the host (other users' too). Each
  ``ray start`` gets the parent-death signal and the run's watchdog
  (:mod:`feddistill.lifeline`), so a killed command leaves no node behind.
- **Explicit free ports and one temporary folder per node.** Several nodes on one host
  (and other Ray instances on it) would otherwise collide on Ray's fixed defaults (GCS
  6379, dashboard agent 52365, the shared worker-port range, ``/tmp/ray``).
- **A short root folder (<= 40 characters).** Ray puts Unix sockets ~67 characters
  below it and AF_UNIX paths stop at 107 bytes; a long ``$TMPDIR`` breaks ``ray start``.
- **Waiting until every node is alive.** ``ray start --block`` never returns, so
  nothing tells a caller when a worker node has joined; this polls the GCS
  (:func:`feddistill.cluster.probe.probe_cluster`) and fails with the node's log when
  its ``ray start`` exits.

Which cluster a job attaches to, and what it offers, is :mod:`feddistill.cluster.probe`.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from feddistill.cluster.probe import probe_cluster
from feddistill.lifeline import ProcessGroup, remove_on_exit, spawn
from feddistill.ports import free_port, free_port_range, listening

logger = logging.getLogger(__name__)

MIN_NODE_MEMORY_BYTES = 256 * 1024**2
MIN_OBJECT_STORE_BYTES = 78 * 1024**2  # Ray refuses a smaller object store
WORKER_PORTS_PER_NODE = 40  # worker processes (actors, tasks) each hold one port
# Ray puts Unix sockets at <root>/n0/session_<date>_<time>_<pid>/sockets/plasma_store,
# ~67 characters below the root, and AF_UNIX paths stop at 107 bytes.
MAX_ROOT_CHARS = 40


def ray_executable() -> str:
    """The ``ray`` command next to this Python interpreter (else the one on PATH).

    Raises:
        FileNotFoundError: if no ``ray`` command is found.
    """
    candidate = Path(sys.executable).parent / "ray"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("ray")
    if found is None:
        raise FileNotFoundError(
            f"no `ray` command next to {sys.executable} or on PATH; install ray[default]"
        )
    return found


@dataclass
class NodeSpec:
    """Resources of one local Ray node.

    Attributes:
        num_cpus: logical CPUs the node offers (>= 1).
        num_gpus: GPUs the node offers (>= 0).
        memory_bytes: memory Ray may schedule on the node (>= 256 MiB).
        object_store_bytes: shared-memory object store size (>= 78 MiB).
    """

    num_cpus: int = 1
    num_gpus: int = 0
    memory_bytes: int = 2 * 1024**3
    object_store_bytes: int = 100 * 1024**2

    def __post_init__(self) -> None:
        if self.num_cpus < 1:
            raise ValueError(f"num_cpus must be >= 1, got {self.num_cpus}")
        if self.num_gpus < 0:
            raise ValueError(f"num_gpus must be >= 0, got {self.num_gpus}")
        if self.memory_bytes < MIN_NODE_MEMORY_BYTES:
            raise ValueError(
                f"memory_bytes must be >= {MIN_NODE_MEMORY_BYTES} (256 MiB), got {self.memory_bytes}"
            )
        if self.object_store_bytes < MIN_OBJECT_STORE_BYTES:
            raise ValueError(
                f"object_store_bytes must be >= {MIN_OBJECT_STORE_BYTES} (78 MiB), "
                f"got {self.object_store_bytes}"
            )


@dataclass
class LocalRayNode:
    """One ``ray start --block`` process and what it spawned.

    Attributes:
        spec: the node's resources.
        head: True for the head node (it runs the GCS).
        temp_dir: the node's own Ray temporary folder.
        log_path: where the ``ray start`` process writes its output.
    """

    spec: NodeSpec
    head: bool
    temp_dir: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    group: ProcessGroup = field(default_factory=ProcessGroup)
    gcs_port: int | None = None  # the head's GCS port, chosen by :meth:`command`

    def command(self, head_address: str | None) -> list[str]:
        """The ``ray start`` command line of this node (explicit ports everywhere).

        Args:
            head_address: ``host:port`` of the head's GCS; None for the head itself.

        Raises:
            ValueError: if a worker node has no `head_address`, or the head has one.
        """
        if self.head == (head_address is not None):
            raise ValueError(
                f"head={self.head} needs head_address "
                f"{'None' if self.head else 'host:port'}, got {head_address!r}"
            )
        min_worker = free_port_range(WORKER_PORTS_PER_NODE)
        cmd = [ray_executable(), "start", "--block", "--disable-usage-stats"]
        if self.head:
            self.gcs_port = free_port()
            cmd += ["--head", f"--port={self.gcs_port}", "--include-dashboard=false"]
        else:
            cmd += [f"--address={head_address}"]
        cmd += [
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={self.spec.num_cpus}",
            f"--num-gpus={self.spec.num_gpus}",
            f"--memory={self.spec.memory_bytes}",
            f"--object-store-memory={self.spec.object_store_bytes}",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--min-worker-port={min_worker}",
            f"--max-worker-port={min_worker + WORKER_PORTS_PER_NODE - 1}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]
        return cmd

    def start(self, head_address: str | None, env: dict[str, str]) -> None:
        """Launch the node (returns at once; see :meth:`LocalRayCluster.wait_for_nodes`)."""
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = spawn(  # dies with this process (feddistill.lifeline)
                self.command(head_address),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.group.track(self.proc.pid)

    def exited(self) -> int | None:
        """The ``ray start`` process's exit code, or None while it runs."""
        return None if self.proc is None else self.proc.poll()

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop the ``ray start`` process and every descendant seen, by PID."""
        self.group.stop(grace_s=grace_s)


class LocalRayCluster:
    """A Ray head and worker nodes on this machine, as separate ``ray start`` processes.

    Use as a context manager; ``address`` is the head's GCS (``127.0.0.1:port``), to
    pass as ``--ray-address`` / ``RAY_ADDRESS``. Every process started is stopped by
    PID on exit, on failure too.

    Args:
        nodes: one :class:`NodeSpec` per node, the head first (at least one).
        root: folder for the nodes' temporary folders and logs; a fresh short folder
            under /tmp by default (Unix socket paths must stay under ~107 characters),
            removed on exit.
        startup_timeout_s: how long all nodes may take to register (> 0).

    Raises:
        ValueError: if `nodes` is empty, `startup_timeout_s` <= 0, or `root` is longer
            than 40 characters (Ray's socket paths below it would not fit).
    """

    def __init__(
        self,
        nodes: list[NodeSpec] | None = None,
        root: Path | None = None,
        startup_timeout_s: float = 90.0,
    ) -> None:
        nodes = [NodeSpec(), NodeSpec()] if nodes is None else list(nodes)
        if not nodes:
            raise ValueError("nodes must list at least one NodeSpec (the head), got []")
        if startup_timeout_s <= 0:
            raise ValueError(f"startup_timeout_s must be > 0, got {startup_timeout_s}")
        if root is not None and len(str(root)) > MAX_ROOT_CHARS:
            raise ValueError(
                f"root must be at most {MAX_ROOT_CHARS} characters (Ray's Unix socket paths "
                f"below it are limited to 107 bytes), got {len(str(root))}: {root}"
            )
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="fdr-", dir="/tmp")) if root is None else root
        if self._own_root:
            remove_on_exit(self.root)  # by the watchdog, should this process be killed
        self.startup_timeout_s = startup_timeout_s
        self.nodes = [
            LocalRayNode(
                spec=spec,
                head=i == 0,
                temp_dir=self.root / f"n{i}",
                log_path=self.root / f"node{i}.log",
            )
            for i, spec in enumerate(nodes)
        ]
        self.address: str | None = None
        self.start_seconds = 0.0

    def __enter__(self) -> LocalRayCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def start(self) -> str:
        """Start the head, then the workers, and wait until every node is alive.

        Returns:
            The head's address ``127.0.0.1:<port>``.

        Raises:
            RuntimeError: if a node's ``ray start`` exits, or not all nodes are alive
                within `startup_timeout_s` (the message names the node's log).
        """
        t0 = time.monotonic()
        env = self._env()
        head = self.nodes[0]
        head.start(None, env)
        self.address = f"127.0.0.1:{head.gcs_port}"
        self.wait_for_nodes(1)
        for node in self.nodes[1:]:
            node.start(self.address, env)
        # a worker's `ray start` can give up on a busy machine (seen once in a full test
        # run on 2 cores: exit code 1 while joining); each worker is started again once
        restarts: dict[int, Callable[[], None]] = {
            i: functools.partial(node.start, self.address, env)
            for i, node in enumerate(self.nodes)
            if i > 0
        }
        self.wait_for_nodes(len(self.nodes), restarts)
        for node in self.nodes:
            node.group.track(node.proc.pid)  # type: ignore[union-attr]
        self.start_seconds = time.monotonic() - t0
        logger.info(
            "local Ray cluster at %s: %d nodes up in %.1f s",
            self.address,
            len(self.nodes),
            self.start_seconds,
        )
        return self.address

    def wait_for_nodes(
        self, count: int, restarts: dict[int, Callable[[], None]] | None = None
    ) -> None:
        """Block until `count` nodes are alive in the cluster.

        Args:
            count: nodes that must be alive.
            restarts: node index -> how to start that node again; a node whose ``ray
                start`` exits is stopped and restarted once through it (then removed
                from the dict), within the same deadline.

        Raises:
            RuntimeError: if a node process exits (again) or the timeout passes.
        """
        deadline = time.monotonic() + self.startup_timeout_s
        alive = 0
        while time.monotonic() < deadline:
            for i, node in enumerate(self.nodes):
                if node.proc is not None:
                    node.group.track(node.proc.pid)
                code = node.exited()
                if code is not None and restarts and i in restarts:
                    logger.warning(
                        "ray start of node %d exited with code %d; starting it again (see %s)",
                        i,
                        code,
                        node.log_path,
                    )
                    node.stop(grace_s=5.0)  # what the failed start left
                    restarts.pop(i)()
                    continue
                if code is not None:
                    raise RuntimeError(
                        f"ray start of node {i} exited with code {code}; see {node.log_path}"
                    )
            host, port = str(self.address).rsplit(":", 1)
            if listening(host, int(port)):
                try:
                    left = max(5.0, deadline - time.monotonic())
                    alive = int(probe_cluster(str(self.address), timeout_s=left)["alive"])
                except RuntimeError:
                    alive = 0
            if alive >= count:
                return
            time.sleep(1.0)
        raise RuntimeError(
            f"{alive} of {count} Ray nodes alive at {self.address} after "
            f"{self.startup_timeout_s:.0f} s; see the logs in {self.root}"
        )

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop every node's processes by PID (workers first), then remove the folder."""
        for node in reversed(self.nodes):
            node.stop(grace_s=grace_s)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def pids(self) -> set[int]:
        """PIDs of every process the cluster started (alive or not)."""
        return {pid for node in self.nodes for pid in node.group.seen}
