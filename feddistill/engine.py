"""`feddistill run`: the FedDistill job on Flower's runtime, in one command.

The job runs exactly as ``flwr run`` runs it: this module starts a private SuperLink in
simulation mode on free loopback ports (its own ``FLWR_HOME`` in a temporary folder),
submits the app with ``flwr run <app> <connection> --stream``, follows the run's
``metrics.jsonl`` to draw progress, and always stops the SuperLink and every process
it started (by PID), on success, failure or Ctrl-C. Success is read from the run's
``summary.json`` because ``flwr run --stream`` exits 0 even when the run failed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from feddistill.config import RunConfig
from feddistill.lifeline import ProcessGroup, remove_on_exit, spawn
from feddistill.ports import free_port
from feddistill.preflight import check_local_resources
from feddistill.progress import emit_new_rows as _emit_new_rows
from feddistill.progress import follow_progress, pump_without_ansi, read_new_phases
from feddistill.ray_memory import lean_ray_env, num_client_actors
from feddistill.run_folder import CHECKPOINT_MISMATCH, OUT_DIR_HOLDS_RUN, RunFolder
from feddistill.server.admission import ADMIT_ENV

logger = logging.getLogger(__name__)
CONNECTION = "feddistill-local"
# seconds the runtime gets to exit on SIGTERM once the run wrote summary.json (or
# before the ServerApp was let in: nothing of the run to save then)
FINISHED_GRACE_S = 0.3
# seconds between two looks at the run folder (progress, summary.json)
POLL_S = 0.25


def app_dir() -> Path:
    """The Flower app (the folder with pyproject.toml's [tool.flwr.app]).

    Raises:
        FileNotFoundError: if the package is not installed from a source checkout.
    """
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise FileNotFoundError(
            f"no pyproject.toml next to the feddistill package in {root}; "
            "install feddistill from a source checkout (pip install -e .)"
        )
    return root


def stage_app(dest: Path) -> Path:
    """A copy of the Flower app holding only what its FAB needs, for ``flwr run DEST``.

    ``flwr run DIR`` builds the FAB (Flower App Bundle) by walking every file under DIR
    and keeping the ``*.py``, ``*.toml``, ``*.md``, ``*.json`` ... files that
    ``.gitignore`` does not exclude. On the checkout that walk visits the whole
    ``.venv`` (~55,000 paths: ~3 s of every run's start-up, measured) and ships
    whatever results, notes or JSON files lie in the checkout outside ignored folders
    (Flower refuses a FAB over 1,000 files or 10 MB). The copy holds ``pyproject.toml``
    (``[tool.flwr.app]``) and the ``feddistill`` package's sources, the code the
    ServerApp and ClientApps import from the installed FAB; ``flwr run`` may also
    rewrite the copy's pyproject.toml (it migrates legacy tables), never the checkout's.

    Args:
        dest: a folder to create (it must not exist), e.g. under the run's Flower home.

    Returns:
        ``dest``.

    Raises:
        FileNotFoundError: see :func:`app_dir`.
        FileExistsError: if ``dest`` exists.
    """
    root = app_dir()
    shutil.copytree(
        root / "feddistill",
        dest / "feddistill",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    shutil.copy2(root / "pyproject.toml", dest / "pyproject.toml")
    return dest


def flower_env(home: Path) -> dict[str, str]:
    """Environment for a Flower process: its own FLWR_HOME, no runtime dependency
    installation or update check, unbuffered output, and this venv's bin on PATH
    (Flower starts flower-superexec, flwr-simulation, flwr-serverapp and flwr-clientapp
    from PATH)."""
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(home),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_DISABLE_UPDATE_CHECK="1",
        PYTHONUNBUFFERED="1",
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def write_run_toml(cfg: RunConfig, path: Path) -> Path:
    """The whole config as a flat TOML file for ``flwr run --run-config``."""
    path.write_text("".join(f"{k} = {_toml_literal(v)}\n" for k, v in cfg.to_kebab().items()))
    return path


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def federation_config(cfg: RunConfig) -> str:
    """``--federation-config`` for the simulation: one SuperNode per partition."""
    return (
        f"num-supernodes={cfg.num_partitions} "
        f"client-resources-num-cpus={cfg.client_num_cpus} "
        f"client-resources-num-gpus={cfg.client_num_gpus}"
    )


def run_simulation_job(
    cfg: RunConfig,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    ray_address: str | None = None,
    startup_timeout_s: float = 60.0,
    attempts: int = 3,
    on_phase: Callable[[str], None] | None = None,
    enter_out_dir: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run the job through a private SuperLink and ``flwr run``; return summary.json.

    If the Flower runtime dies without the ServerApp writing a summary (seen here: the
    SuperLink's SQLite state raising "cannot commit transaction" under load), the job
    is submitted again to a fresh SuperLink, at most `attempts` times in all; the
    ServerApp resumes from the last checkpoint in ``out_dir``, so no finished round
    is lost or repeated. A run that failed in our own code writes a summary with
    status "failed" and is not retried.

    Args:
        cfg: the run config; ``out_dir`` should be absolute.
        on_row: called with each new metrics row as the run writes it.
        ray_address: attach the simulation to this Ray cluster (sets RAY_ADDRESS).
        startup_timeout_s: how long the SuperLink may take to answer.
        attempts: submissions at most, >= 1.
        on_phase: called with each start-up phase ("starting SuperLink", ...) and each
            phase the ServerApp records in ``phases.jsonl`` ("loading data", ...).
        enter_out_dir: when given, the out-dir may not be written yet (the CLI's data
            checks still run in their child): the first attempt starts the SuperLink,
            ``flwr run`` and Ray, then calls it (it blocks until the checks end, raises
            their error, with everything stopped, or locks and prepares the out-dir)
            and only then lets the ServerApp start (``FEDDISTILL_ADMIT_FILE``, see
            :mod:`feddistill.server.admission`). Until then the runtime's output is
            held in memory, not written to ``flower.log``.

    Returns:
        The parsed summary.json (``status`` is "completed" or "failed").

    Raises:
        ValueError: if attempts < 1; whatever `enter_out_dir` raises (a failed data
            check) is raised as it is.
        RuntimeError: if the SuperLink does not start, or every attempt ended without
            a summary (the message points at ``flower.log``).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    if not (ray_address or os.environ.get("RAY_ADDRESS")):
        check_local_resources(cfg)
    folder = RunFolder(cfg.out_dir)
    log = folder.flower_log
    entered = False
    seen_rows, log_size = 0, 0

    def enter() -> int:
        """Touch the out-dir (the first time after `enter_out_dir`, if given; then per
        attempt); return the metrics rows already shown."""
        nonlocal entered, seen_rows, log_size
        if not entered:
            if enter_out_dir is not None:
                enter_out_dir()
            folder.root.mkdir(parents=True, exist_ok=True)
            folder.summary.unlink(missing_ok=True)
            seen_rows = _count_rows(folder.metrics_jsonl)
            entered = True
        folder.server_error.unlink(missing_ok=True)
        log_size = log.stat().st_size if log.is_file() else 0
        return seen_rows

    for attempt in range(1, attempts + 1):
        # a later attempt continues from the checkpoint an earlier one left
        attempt_cfg = dataclasses.replace(cfg, resume=True) if entered else cfg
        seen_rows = _submit_once(
            attempt_cfg, on_row, ray_address, startup_timeout_s, on_phase, enter
        )
        summary = folder.read_summary()
        if summary is not None:
            return summary
        reason = permanent_failure(folder, log_size)
        if reason is not None:
            raise RuntimeError(f"{reason}; see {log}")
        logger.warning(
            "attempt %d/%d: the Flower runtime ended without a summary; see %s",
            attempt,
            attempts,
            log,
        )
    raise RuntimeError(
        f"the run ended without writing {folder.summary} ({attempts} attempts); see {log}"
    )


# The ServerApp's error codes (server-error.json) that a new attempt cannot fix.
_PERMANENT_CODES = {
    OUT_DIR_HOLDS_RUN: "out-dir holds a previous run; resume it with --resume DIR",
    CHECKPOINT_MISMATCH: "the checkpoint does not fit the configured student-model",
}
# Ray's own message when no client actor fits a node: the ServerApp only sees clients
# that never connect, so this one cause is read from the runtime's log.
_RAY_NO_ACTOR = "ActorPool is empty"


def permanent_failure(folder: RunFolder, log_offset: int) -> str | None:
    """Why the last attempt cannot succeed if repeated, or None (worth another attempt).

    Args:
        folder: the run folder.
        log_offset: size of flower.log before the attempt (older lines do not count).

    Returns:
        The ServerApp's permanent error (``server-error.json``), or Ray's "no client
        fits a node" in the attempt's part of flower.log, said for a user; else None.
    """
    error = folder.read_server_error()
    if error is not None and error.code in _PERMANENT_CODES:
        return _PERMANENT_CODES[error.code]
    if not folder.flower_log.is_file():
        return None
    with folder.flower_log.open("rb") as fh:
        fh.seek(log_offset)
        text = fh.read().decode(errors="replace")
    if _RAY_NO_ACTOR in text:
        return (
            "Ray cannot place a single client: client-num-cpus / client-num-gpus "
            "ask for more than one node has (see `feddistill plan`)"
        )
    return None


def _count_rows(path: Path) -> int:
    return len([ln for ln in path.read_text().splitlines() if ln.strip()]) if path.is_file() else 0


def _submit_once(
    cfg: RunConfig,
    on_row: Callable[[dict[str, Any]], None] | None,
    ray_address: str | None,
    startup_timeout_s: float,
    on_phase: Callable[[str], None] | None,
    enter: Callable[[], int],
) -> int:
    """One private SuperLink, one ``flwr run``; everything stopped on return.

    `enter` is called once the runtime is starting (it may block on the data checks,
    and raise) and returns the metrics rows already shown; the ServerApp starts only
    after it returned. Returns the rows shown in all.
    """
    out = Path(cfg.out_dir)
    home = Path(tempfile.mkdtemp(prefix="feddistill-flwr-"))
    remove_on_exit(home)  # by the watchdog, should this process be killed
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    run_toml = write_run_toml(cfg, home / "run-config.toml")
    env = flower_env(home)
    admit_file = home / "admitted"
    env[ADMIT_ENV] = str(admit_file)  # the ServerApp waits for this file (enter() passed)
    bin_dir = Path(sys.executable).parent
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    elif not env.get("RAY_ADDRESS"):
        env["RAY_TMPDIR"] = str(home)  # the private Ray's session folder goes with `home`
        env.update(lean_ray_env(num_client_actors(cfg)))  # issue 13 hook: a small private Ray
    superlink_cmd = [
        str(bin_dir / "flower-superlink"),
        "--insecure",
        "--simulation",
        "--isolation",
        "subprocess",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--health-server-address",
        f"127.0.0.1:{free_port()}",
        "--database",
        str(home / "state.db"),
    ]
    flwr_cmd = [
        str(bin_dir / "flwr"),
        "run",
        str(stage_app(home / "app")),
        CONNECTION,
        "--federation-config",
        federation_config(cfg),
        "--run-config",
        str(run_toml),
        "--stream",
    ]
    group = ProcessGroup()
    log_path = RunFolder(out).flower_log
    summary_path = RunFolder(out).summary
    phase = on_phase or (lambda text: None)
    admitted = False
    with HeldLog() as log:
        pumps: list[threading.Thread] = []
        try:
            # new session, parent-death signal, watched (see feddistill.lifeline); the
            # runtime's working folder is its home: the out-dir may not be touched yet
            popen: dict[str, Any] = dict(
                env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            phase("starting SuperLink")
            superlink = spawn(superlink_cmd, **popen)
            group.track(superlink.pid)
            pumps.append(pump_without_ansi(superlink.stdout, log))
            _wait_for_port(port, superlink, startup_timeout_s, lambda: f"its output:\n{log.tail()}")
            phase("starting Ray and the Flower simulation")
            flwr = spawn(flwr_cmd, **popen)
            group.track(flwr.pid)
            pumps.append(pump_without_ansi(flwr.stdout, log))

            seen_rows = enter()  # the data checks passed (or raised): the out-dir is ours
            log.write_to(log_path)
            _, seen_phases = read_new_phases(out, 0)  # phases of earlier attempts were shown
            admit_file.touch()
            admitted = True
            while True:
                group.track(superlink.pid)
                seen_rows, seen_phases = follow_progress(out, seen_rows, seen_phases, on_row, phase)
                if summary_path.is_file() or superlink.poll() is not None:
                    break
                # `flwr run --stream` can end early when the log stream breaks; the run
                # itself lives on in flwr-simulation, so follow that process instead.
                if flwr.poll() is not None and not group.alive_named("flwr-simulation"):
                    break
                time.sleep(POLL_S)
            return _emit_new_rows(RunFolder(out).metrics_jsonl, seen_rows, on_row)
        finally:
            # After summary.json (the ServerApp's last write) the runtime has nothing left
            # to do for us, and flwr-simulation takes ~5 s to exit on SIGTERM: a short
            # grace, then SIGKILL. Otherwise (interrupt, crash) the usual grace.
            finished = not admitted or summary_path.is_file()
            group.stop(grace_s=FINISHED_GRACE_S if finished else 10.0)
            for pump in pumps:
                pump.join(timeout=10)
            shutil.rmtree(home, ignore_errors=True)


def _wait_for_port(
    port: int, proc: subprocess.Popen, timeout_s: float, log_hint: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"flower-superlink exited with code {proc.returncode}; {log_hint()}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(
        f"flower-superlink did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s; "
        f"{log_hint()}"
    )


class HeldLog:
    """A binary log for the runtime's output, held in memory until it may be written.

    The simulation engine starts the runtime while the data checks still run, and the
    out-dir (``flower.log``) may be written only once they passed; :meth:`write_to`
    then appends what was held and everything after it to the file. Thread-safe:
    one pump thread per child process writes here.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[bytes] = []
        self._file: Any = None

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._file is None:
                self._held.append(data)
            else:
                self._file.write(data)
                self._file.flush()

    def flush(self) -> None:
        """Nothing to do: :meth:`write` flushes."""

    def write_to(self, path: Path) -> None:
        """Append what was held to `path`, and from now on write there."""
        with self._lock:
            if self._file is None:
                self._file = path.open("ab")
                self._file.write(b"".join(self._held))
                self._file.flush()
                self._held.clear()

    def tail(self, lines: int = 20) -> str:
        """The last `lines` lines held (before :meth:`write_to`), as text."""
        with self._lock:
            text = b"".join(self._held).decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()

    def __enter__(self) -> HeldLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
