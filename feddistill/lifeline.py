"""Every process a command starts dies with it, whatever kills the command.

Two mechanisms, because either alone leaves processes behind:

- **Parent-death signal** (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, set in the
  child between ``fork`` and ``exec``): a direct child is killed by the kernel the
  moment its parent dies, even on ``kill -9`` of the parent. It does not reach
  grandchildren: Flower's SuperExec and ``flwr-simulation``, Ray's GCS, raylet,
  dashboard, monitors and workers are started by other processes.
- **Watchdog**: one small process per command (``python -m feddistill.lifeline``),
  in its own session so Ctrl-C and a closed terminal do not reach it. The command
  registers each process it starts (:func:`watch`) and each temporary folder
  (:func:`remove_on_exit`) through a pipe. The watchdog records, every
  :data:`SCAN_S` seconds, every descendant of the registered processes and the
  sessions they lead. When the command is gone (the pipe reaches end-of-file or its
  parent PID changes) it sends SIGTERM to all of them and to every process still in
  those sessions, SIGKILL after :data:`GRACE_S`, repeats until none is left, removes
  the folders and exits. On a normal exit the command tells it so and waits for it.

:class:`ProcessGroup` is the in-process side: it stops what a job started, by PID,
when the job ends normally or is interrupted.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

PR_SET_PDEATHSIG = 1
POLL_S = 0.5  # how often the watchdog checks that its parent lives
SCAN_S = 1.0  # how often it records the watched processes' descendants
GRACE_S = 3.0  # SIGTERM -> SIGKILL
_PRCTL: Any = None  # resolved here: the child may not allocate between fork and exec
if sys.platform.startswith("linux"):
    try:
        _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - every Linux libc has prctl
        _PRCTL = None


def _die_with(parent_pid: int) -> None:
    # Runs in the child between fork and exec: no imports, no locks, no allocation.
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def parent_death_signal() -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive SIGKILL when this process dies.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere it does nothing and the
    watchdog alone covers the child. The signal fires when the *thread* that started
    the child ends, so start long-lived children from the main thread.

    Returns:
        A function for ``subprocess.Popen(..., preexec_fn=...)``.
    """
    return functools.partial(_die_with, os.getpid())


def die_with_parent(parent_pid: int) -> None:
    """Make this process receive SIGKILL when its parent `parent_pid` dies.

    For processes that Python starts itself, e.g. as a
    ``ProcessPoolExecutor(initializer=die_with_parent, initargs=(os.getpid(),))``
    worker's initializer (Linux only, as :func:`parent_death_signal`). If the parent is
    already gone, this process kills itself at once.

    Args:
        parent_pid: the PID of the process that started this one.
    """
    _die_with(parent_pid)


def spawn(argv: list[str], **popen_kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen`` in a new session, killed when this process dies, watched.

    The child leads its own session (signals to the terminal's process group do not
    reach it; :class:`ProcessGroup` stops it), gets the parent-death signal and is
    registered with this process's watchdog, which also covers its descendants.

    Args:
        argv: the command line.
        **popen_kwargs: passed to ``subprocess.Popen`` (not ``start_new_session`` or
            ``preexec_fn``, which this sets).

    Returns:
        The started process.

    Raises:
        ValueError: if `popen_kwargs` sets ``start_new_session`` or ``preexec_fn``.
    """
    taken = {"start_new_session", "preexec_fn"} & set(popen_kwargs)
    if taken:
        raise ValueError(f"spawn() sets {sorted(taken)} itself; do not pass them")
    proc = subprocess.Popen(
        argv, start_new_session=True, preexec_fn=parent_death_signal(), **popen_kwargs
    )
    watch(proc.pid)
    return proc


class _Watchdog:
    """This process's watchdog process and the pipe to it."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "feddistill.lifeline", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,
        )
        self.lock = threading.Lock()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        with self.lock:
            try:
                self.proc.stdin.write(f"{line}\n".encode())
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass  # the watchdog is gone; the parent-death signal still applies

    def close(self, timeout_s: float = 30.0) -> None:
        """Tell the watchdog the command ends normally; wait for its last sweep."""
        self.send("done")
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


_watchdog: _Watchdog | None = None
_watchdog_lock = threading.Lock()


def _get_watchdog() -> _Watchdog:
    global _watchdog
    with _watchdog_lock:
        if _watchdog is None or _watchdog.owner != os.getpid():  # new, or a forked child
            _watchdog = _Watchdog()
            atexit.register(_watchdog.close)
        return _watchdog


def watch(pid: int) -> None:
    """Have this process's watchdog kill `pid` and its descendants when this process dies.

    Starts the watchdog on first use.

    Args:
        pid: a process this process started (ideally a session leader, see :func:`spawn`).
    """
    _get_watchdog().send(f"pid {pid}")


def remove_on_exit(path: Path | str) -> None:
    """Have this process's watchdog delete the folder `path` when this process ends.

    The normal path should still delete it itself; this covers ``kill -9``.

    Args:
        path: a temporary folder this process created.
    """
    _get_watchdog().send(f"path {Path(path).resolve()}")


class ProcessGroup:
    """Processes this job started: a root and every descendant ever seen.

    Descendants are recorded while the job runs (Ray's daemons may outlive their
    parent), and :meth:`stop` terminates them all by PID, SIGKILL after a grace period.
    Each root passed to :meth:`track` is also registered with the watchdog.
    """

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}  # pid -> create_time (guards against PID reuse)

    def track(self, pid: int) -> None:
        """Record `pid` and its current descendants."""
        if pid not in self.seen:
            watch(pid)
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                self.seen.setdefault(proc.pid, proc.create_time())
        except psutil.Error:
            pass

    def alive(self) -> list[psutil.Process]:
        """Tracked processes that are still running."""
        return _alive(self.seen)

    def alive_named(self, name: str) -> list[psutil.Process]:
        """Tracked, running processes whose command line contains `name`."""
        found = []
        for proc in self.alive():
            try:
                if name in " ".join(proc.cmdline()):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every tracked process still alive, then SIGKILL what remains."""
        for pid in list(self.seen):
            self.track(pid)
        _terminate(self.alive(), grace_s)


def _alive(seen: dict[int, float]) -> list[psutil.Process]:
    procs = []
    for pid, created in seen.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                procs.append(proc)
        except psutil.Error:
            continue
    return procs


def _terminate(procs: list[psutil.Process], grace_s: float) -> None:
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, remaining = psutil.wait_procs(procs, timeout=grace_s)
    for proc in remaining:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(remaining, timeout=grace_s)


class _Sweeper:
    """The watchdog's memory: watched processes, their descendants and sessions."""

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}
        self.sessions: set[int] = set()
        self.paths: list[str] = []

    def add_root(self, pid: int) -> None:
        try:
            self.seen.setdefault(pid, psutil.Process(pid).create_time())
            if os.getsid(pid) == pid:  # a session this command created
                self.sessions.add(pid)
        except (psutil.Error, OSError):
            pass

    def scan(self) -> list[psutil.Process]:
        """Record descendants and session members; return every live one."""
        me, uid = os.getpid(), os.getuid()
        children: dict[int, list[psutil.Process]] = {}
        present: set[int] = set()  # watched sessions that still have a process
        for proc in psutil.process_iter(["ppid", "uids"]):
            try:
                if proc.pid == me or proc.info["uids"].real != uid:
                    continue
                children.setdefault(proc.info["ppid"], []).append(proc)
                sid = os.getsid(proc.pid) if self.sessions else -1
                if sid in self.sessions:
                    present.add(sid)
                    self.seen.setdefault(proc.pid, proc.create_time())
            except (psutil.Error, OSError):
                continue
        stack = [p.pid for p in _alive(self.seen)]
        while stack:
            for child in children.get(stack.pop(), []):
                try:
                    if child.pid not in self.seen:
                        self.seen[child.pid] = child.create_time()
                        stack.append(child.pid)
                except psutil.Error:
                    continue
        alive = _alive(self.seen)
        self.seen = {p.pid: self.seen[p.pid] for p in alive}
        self.sessions &= present  # an empty session cannot come back (but for PID reuse)
        return alive

    def sweep(self) -> None:
        """Stop everything recorded (repeat until nothing is left), delete the folders."""
        for _ in range(10):
            procs = self.scan()
            if not procs:
                break
            _terminate(procs, GRACE_S)
        for path in self.paths:
            shutil.rmtree(path, ignore_errors=True)


def watchdog_main(parent_pid: int) -> None:
    """The watchdog loop (see the module docstring): read requests, scan, sweep.

    Args:
        parent_pid: the command's PID; its death (or end-of-file on stdin) ends the loop.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sweeper = _Sweeper()
    buffer = b""
    last_scan = 0.0
    while True:
        ready, _, _ = select.select([0], [], [], POLL_S)
        if ready:
            chunk = os.read(0, 65536)
            if not chunk:
                break  # the command closed the pipe: it died, or exits
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if _handle(sweeper, [ln.decode() for ln in lines]):
                break
        if os.getppid() != parent_pid:
            break
        if sweeper.seen and time.monotonic() - last_scan >= SCAN_S:
            sweeper.scan()
            last_scan = time.monotonic()
    sweeper.sweep()


def _handle(sweeper: _Sweeper, lines: list[str]) -> bool:
    """Apply requests; True on "done"."""
    for line in lines:
        verb, _, arg = line.partition(" ")
        if verb == "pid" and arg.isdigit():
            sweeper.add_root(int(arg))
        elif verb == "path" and arg:
            sweeper.paths.append(arg)
        elif verb == "done":
            return True
    return False


if __name__ == "__main__":
    watchdog_main(int(sys.argv[1]))
