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
from feddistill.outdir_lock import LOCK_FILE
from feddistill.progress import emit_new_rows as _emit_new_rows
from feddistill.progress import follow_progress, pump_without_ansi, read_new_phases
from feddistill.ray_memory import lean_ray_env, num_client_actors
from feddistill.server.results import RUN_CONFIG_FILE, save_run_config

logger = logging.getLogger(__name__)
CONNECTION = "feddistill-local"
RESULT_FILES = (
    "metrics.csv",
    "metrics.jsonl",
    "summary.json",
    "report.md",
    "placement.jsonl",
    "flower.log",
    "phases.jsonl",
    "command.txt",
)
RESULT_DIRS = ("checkpoints", "client-state", "student", "deployment", "tensorboard", "mlruns")
PLOTS = (
    "accuracy_vs_round.png",
    "accuracy_vs_uplink.png",
    "bytes_vs_round.png",
    "label_distribution.png",
)


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def check_out_dir(cfg: RunConfig) -> None:
    """Refuse an out-dir a fresh run must not use; touches nothing.

    Raises:
        ValueError: if out-dir is a file, holds an interrupted run, or is a non-empty
            folder that holds no previous feddistill run (its lock file aside).
    """
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out-dir {str(out)!r} is a file; give a folder")
    if (out / "checkpoints" / "latest").is_file() and not (out / "summary.json").is_file():
        raise ValueError(
            f"out-dir {str(out)!r} holds an interrupted run; continue it with "
            f"`feddistill run --resume {out}`, or delete the folder / choose another out-dir"
        )
    foreign = out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir())
    if foreign and not (out / RUN_CONFIG_FILE).is_file():
        raise ValueError(
            f"out-dir {str(out)!r} is not empty and holds no previous feddistill run; "
            "choose an empty or new folder (nothing in it was touched)"
        )


def prepare_out_dir(cfg: RunConfig) -> None:
    """Make ``cfg.out_dir`` ready for a fresh run and record the run's config in it.

    A previous run's results there (a folder holding ``run-config.json``) are removed;
    only the files a run writes are touched. Anything else is refused, so a user's own
    files are never deleted.

    Raises:
        ValueError: if out-dir is a file, cannot be created or written, or is a
            non-empty folder that holds no previous feddistill run.
    """
    check_out_dir(cfg)
    out = Path(cfg.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in RESULT_FILES:
            (out / name).unlink(missing_ok=True)
        for name in RESULT_DIRS:
            shutil.rmtree(out / name, ignore_errors=True)
        for png in PLOTS:
            (out / png).unlink(missing_ok=True)
        save_run_config(cfg)
    except OSError as exc:
        raise ValueError(f"out-dir {str(out)!r} cannot be used: {exc}") from None


def run_is_complete(cfg: RunConfig) -> bool:
    """True if out-dir's summary says the run completed all ``num_server_rounds``."""
    path = Path(cfg.out_dir) / "summary.json"
    if not path.is_file():
        return False
    summary = json.loads(path.read_text())
    return bool(
        summary.get("status") == "completed" and summary.get("rounds") == cfg.num_server_rounds
    )


def check_dataset_available(cfg: RunConfig) -> None:
    """Fail before anything starts if a torchvision dataset is missing and downloads are off.

    Raises:
        FileNotFoundError: naming the data root and the ``download`` key.
    """
    if cfg.dataset in ("mnist", "fashion-mnist", "cifar10") and not cfg.download:
        from feddistill.data import load_dataset

        load_dataset(cfg.dataset, cfg.data_root, download=False)
    if cfg.dataset == "mnist-usps" and not cfg.download:
        from feddistill.data.domain_datasets import load_mnist_usps

        load_mnist_usps(cfg.data_root, download=False)


def check_device(cfg: RunConfig) -> None:
    """Fail before anything starts if ``device=cuda`` is asked for on a machine without CUDA.

    Raises:
        ValueError: naming the key and what is allowed here.
    """
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError(
                "device='cuda' but this machine has no CUDA device; allowed here: auto, cpu "
                "(or --ray-address to a cluster with GPUs)"
            )


def check_data_splits(cfg: RunConfig) -> None:
    """Fail before anything starts if the data cannot be split as configured.

    Builds the splits and partitions once in this process (the same, seeded, as the
    run's), so errors that depend on the data (too many partitions for the samples,
    target domains the dataset does not have, no source domain left) come before the
    out-dir is touched.

    Raises:
        ValueError: as :func:`feddistill.data.prepare_federated_data`.
    """
    from feddistill.data import prepare_federated_data

    prepare_federated_data(cfg)


def load_run_config(out: Path) -> dict[str, Any]:
    """The config a previous run in `out` was started with.

    Raises:
        ValueError: if `out` holds no ``run-config.json`` or no checkpoint.
    """
    if not (out / "checkpoints" / "latest").is_file():
        raise ValueError(f"--resume {str(out)!r}: no checkpoint found there")
    path = out / RUN_CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"--resume {str(out)!r}: no {RUN_CONFIG_FILE} found there")
    return dict(json.loads(path.read_text()))


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

    Returns:
        The parsed summary.json (``status`` is "completed" or "failed").

    Raises:
        ValueError: if attempts < 1.
        RuntimeError: if the SuperLink does not start, or every attempt ended without
            a summary (the message points at ``flower.log``).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    if not (ray_address or os.environ.get("RAY_ADDRESS")):
        check_local_resources(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    summary_path.unlink(missing_ok=True)
    seen_rows = _count_rows(out / "metrics.jsonl")
    for attempt in range(1, attempts + 1):
        # a later attempt continues from the checkpoint the earlier one left
        attempt_cfg = cfg if attempt == 1 else dataclasses.replace(cfg, resume=True)
        log_size = (out / "flower.log").stat().st_size if (out / "flower.log").is_file() else 0
        seen_rows = _submit_once(
            attempt_cfg, on_row, ray_address, startup_timeout_s, seen_rows, on_phase
        )
        if summary_path.is_file():
            return json.loads(summary_path.read_text())
        reason = _runtime_failure(out / "flower.log", log_size)
        if reason is not None:
            raise RuntimeError(f"{reason}; see {out / 'flower.log'}")
        logger.warning(
            "attempt %d/%d: the Flower runtime ended without a summary; see %s",
            attempt,
            attempts,
            out / "flower.log",
        )
    raise RuntimeError(
        f"the run ended without writing {summary_path} ({attempts} attempts); "
        f"see {out / 'flower.log'}"
    )


# Failures in the log that a new attempt cannot fix: stop and say why.
_PERMANENT = {
    "holds a previous run": "out-dir holds a previous run; resume it with --resume DIR",
    "does not fit student-model": "the checkpoint does not fit the configured student-model",
    "is in use by a live run": "out-dir is in use by another live run (its PID is in the log)",
    "ActorPool is empty": "Ray cannot place a single client: client-num-cpus / client-num-gpus "
    "ask for more than one node has (see `feddistill plan`)",
}


def _runtime_failure(log_path: Path, offset: int) -> str | None:
    """A permanent failure named in the part of `log_path` written after `offset`."""
    if not log_path.is_file():
        return None
    with log_path.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    return next((why for needle, why in _PERMANENT.items() if needle in text), None)


def check_local_resources(cfg: RunConfig) -> None:
    """Fail before starting anything if one client cannot fit on this machine.

    Raises:
        ValueError: if client-num-cpus exceeds this machine's CPUs, or client-num-gpus
            is above 0 and no CUDA device is present.
    """
    cpus = os.cpu_count() or 1
    if cfg.client_num_cpus > cpus:
        raise ValueError(
            f"client-num-cpus={cfg.client_num_cpus} exceeds this machine's {cpus} CPUs; "
            f"allowed: 1..{cpus} (or attach to a bigger Ray cluster with --ray-address)"
        )
    if cfg.client_num_gpus > 0:
        import torch

        if torch.cuda.device_count() == 0:
            raise ValueError(
                f"client-num-gpus={cfg.client_num_gpus} but this machine has no CUDA device; "
                "use client-num-gpus=0 (or --ray-address to a cluster with GPUs)"
            )


def _count_rows(path: Path) -> int:
    return len([ln for ln in path.read_text().splitlines() if ln.strip()]) if path.is_file() else 0


def _submit_once(
    cfg: RunConfig,
    on_row: Callable[[dict[str, Any]], None] | None,
    ray_address: str | None,
    startup_timeout_s: float,
    seen_rows: int,
    on_phase: Callable[[str], None] | None = None,
) -> int:
    """One private SuperLink, one ``flwr run``; everything stopped on return."""
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
        str(app_dir()),
        CONNECTION,
        "--federation-config",
        federation_config(cfg),
        "--run-config",
        str(run_toml),
        "--stream",
    ]
    group = ProcessGroup()
    log_path = out / "flower.log"
    summary_path = out / "summary.json"
    _, seen_phases = read_new_phases(out, 0)  # phases of earlier attempts were shown
    phase = on_phase or (lambda text: None)
    with log_path.open("ab") as log:
        pumps: list[threading.Thread] = []
        try:
            # new session, parent-death signal, watched (see feddistill.lifeline)
            popen: dict[str, Any] = dict(
                env=env, cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            phase("starting SuperLink")
            superlink = spawn(superlink_cmd, **popen)
            group.track(superlink.pid)
            pumps.append(pump_without_ansi(superlink.stdout, log))
            _wait_for_port(port, superlink, startup_timeout_s, log_path)
            phase("starting Ray and the Flower simulation")
            flwr = spawn(flwr_cmd, **popen)
            group.track(flwr.pid)
            pumps.append(pump_without_ansi(flwr.stdout, log))
            while True:
                group.track(superlink.pid)
                seen_rows, seen_phases = follow_progress(out, seen_rows, seen_phases, on_row, phase)
                if summary_path.is_file() or superlink.poll() is not None:
                    break
                # `flwr run --stream` can end early when the log stream breaks; the run
                # itself lives on in flwr-simulation, so follow that process instead.
                if flwr.poll() is not None and not group.alive_named("flwr-simulation"):
                    break
                time.sleep(0.5)
            return _emit_new_rows(out / "metrics.jsonl", seen_rows, on_row)
        finally:
            group.stop()
            for pump in pumps:
                pump.join(timeout=10)
            shutil.rmtree(home, ignore_errors=True)


def _wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"flower-superlink exited with code {proc.returncode}; see {log_path}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(
        f"flower-superlink did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s; see {log_path}"
    )
