"""One live writer per results folder: an OS file lock on ``<out-dir>/run.lock``.

The lock is ``fcntl.flock`` (exclusive, non-blocking) on a file in the out-dir that
holds the holder's PID. The kernel releases it when the holder's last descriptor
closes, so a run killed with ``kill -9`` leaves the folder free and ``--resume`` works
at once; the file itself stays (deleting lock files races with the next taker).

Who holds it: ``feddistill run`` takes it before it touches the folder and keeps it for
the whole run; the ServerApp takes it too (so plain ``flwr run`` is protected), except
when the holder is one of its own ancestors, i.e. the ``feddistill run`` that started
it through the SuperLink.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import psutil

LOCK_FILE = "run.lock"


class OutDirLocked(ValueError):
    """The out-dir is being written by another live run."""


class OutDirLock:
    """The lock on one out-dir (a context manager: acquire on enter, release on exit).

    Args:
        out_dir: the results folder.
    """

    def __init__(self, out_dir: Path | str) -> None:
        self.out = Path(out_dir)
        self.path = self.out / LOCK_FILE
        self.fd: int | None = None
        self.holder: int | None = None  # the live holder's PID once known

    def check_free(self) -> None:
        """Refuse at once if another live run holds the lock; touches nothing.

        Raises:
            OutDirLocked: naming the holder's PID, if a live process other than this
                one and its ancestors holds the lock.
        """
        if not self.path.is_file():
            return
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._try_lock(fd)
        finally:
            os.close(fd)

    def acquire(self) -> OutDirLock:
        """Create out-dir and the lock file if needed, and take the lock.

        Returns:
            self (the lock is held until :meth:`release` or this process's death; not
            taken when this process or an ancestor already holds it).

        Raises:
            OutDirLocked: naming the holder's PID, if another live run holds it.
            ValueError: if out-dir is a file or cannot be created.
        """
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"out-dir {str(self.out)!r} is a file; give a folder")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ValueError(f"out-dir {str(self.out)!r} cannot be used: {exc}") from None
        try:
            if not self._try_lock(fd):
                os.close(fd)
                return self
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self.fd, self.holder = fd, os.getpid()
        return self

    def release(self) -> None:
        """Release the lock if this object holds it (the file stays)."""
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self) -> OutDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _try_lock(self, fd: int) -> bool:
        """True if `fd` now holds the lock; False if this process or an ancestor holds it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        holder = _read_pid(self.path)
        mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
        if holder in mine:
            self.holder = holder
            return False
        who = f"PID {holder}" if holder is not None else "a process that wrote no PID"
        raise OutDirLocked(
            f"out-dir {str(self.out)!r} is in use by a live run ({who}, lock {self.path}); "
            "wait for it to end or stop it, then retry (or choose another out-dir)"
        )


def _read_pid(path: Path, tries: int = 20) -> int | None:
    """The PID in the lock file; retried briefly (the holder writes it after locking)."""
    for _ in range(tries):
        text = path.read_text().strip() if path.is_file() else ""
        if text.isdigit():
            return int(text)
        time.sleep(0.05)
    return None
