"""Checks ``feddistill run`` makes before it starts anything, and the out-dir's set-up.

Every check that can fail fast (the out-dir, the device, the dataset on disk, the
splits the data can give, one client fitting this machine) runs here, before any
process starts or the out-dir is touched. Used by the engines and the CLI.

The checks that need torch and the data (``device=cuda`` without CUDA, a missing
torchvision dataset, splits and partitions the data cannot give) import torch, load
the dataset and partition it. Run in the ``feddistill`` process itself they leave it
holding that memory for the whole run (measured: 835 MiB RSS for mnist5k with 100
clients, 509 MiB of it ``import torch`` of the CUDA build), while the run itself
happens in other processes (SuperLink, ``flwr-simulation``, Ray workers).
:func:`run_data_checks` runs them in a short-lived child process instead: the memory
goes back when the checks end, and the errors come back unchanged (issue 13).
:class:`DataChecks` starts that child and lets the caller wait later: the simulation
engine starts the SuperLink, ``flwr run`` and Ray meanwhile (~4 s of every run's
start-up, measured) and lets the ServerApp touch the out-dir only once they passed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

from feddistill.config import RunConfig
from feddistill.data.names import DIRICHLET_PARTITIONER_NAMES
from feddistill.lifeline import die_with_parent
from feddistill.outdir_lock import LOCK_FILE
from feddistill.run_folder import RunFolder

# the data checks raise only these; anything else is a bug and propagates as it is
_CHECK_ERRORS: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "FileNotFoundError": FileNotFoundError,
}


def check_out_dir(cfg: RunConfig) -> None:
    """Refuse an out-dir a fresh run must not use; touches nothing.

    Raises:
        ValueError: if out-dir is a file, holds an interrupted run, or is a non-empty
            folder that holds no previous feddistill run (its lock file aside).
    """
    folder = RunFolder(cfg.out_dir)
    out = folder.root
    if out.exists() and not out.is_dir():
        raise ValueError(f"out-dir {str(out)!r} is a file; give a folder")
    if folder.has_checkpoint() and not folder.summary.is_file():
        raise ValueError(
            f"out-dir {str(out)!r} holds an interrupted run; continue it with "
            f"`feddistill run --resume {out}`, or delete the folder / choose another out-dir"
        )
    foreign = out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir())
    if foreign and not folder.holds_run():
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
    folder = RunFolder(cfg.out_dir)
    out = folder.root
    try:
        out.mkdir(parents=True, exist_ok=True)
        folder.remove_results()
        folder.write_run_config(cfg.to_kebab())
    except OSError as exc:
        raise ValueError(f"out-dir {str(out)!r} cannot be used: {exc}") from None


def run_is_complete(cfg: RunConfig) -> bool:
    """True if out-dir's summary says the run completed all ``num_server_rounds``."""
    summary = RunFolder(cfg.out_dir).read_summary()
    if summary is None:
        return False
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
        ValueError: as :func:`feddistill.data.prepare_federated_data`; or if
            ``logits-top-m`` is not below the dataset's class count K.
    """
    from feddistill.data import prepare_federated_data

    num_classes = prepare_federated_data(cfg.data_spec()).splits.num_classes
    if not 0 <= cfg.logits_top_m < num_classes:
        raise ValueError(
            f"logits-top-m={cfg.logits_top_m} must be below the {num_classes} classes of "
            f"dataset={cfg.dataset!r}; allowed: 0 (every class) to {num_classes - 1}"
        )


def load_run_config(out: Path) -> dict[str, Any]:
    """The config a previous run in `out` was started with.

    Raises:
        ValueError: if `out` is not a folder, or holds no ``run-config.json`` or no
            checkpoint.
    """
    folder = RunFolder(out)
    if not folder.root.is_dir():
        raise ValueError(
            f"--resume {str(out)!r}: no such folder; give the out-dir of an interrupted run"
        )
    if not folder.has_checkpoint():
        raise ValueError(f"--resume {str(out)!r}: no checkpoint found there")
    if not folder.holds_run():
        raise ValueError(f"--resume {str(out)!r}: no {RunFolder.RUN_CONFIG} found there")
    return dict(json.loads(folder.run_config.read_text()))


# what the checkpoint and the clients' state were built from: a resumed run keeps them
# (a changed logits-subset, say, made every client fail in the next round: the consensus
# had the old row count)
FIXED_ON_RESUME = (
    "seed",
    "dataset",
    "partitioner",
    "num_partitions",
    "dirichlet_alpha",
    "min_partition_size",
    "proxy_fraction",
    "test_fraction",
    "target_domains",
    "proxy_set",
    "num_domains",
    "strategy",
    "teacher_models",
    "student_model",
    "logits_subset",
    # a frozen teacher's weights are not kept: it cannot train again or be counted anew
    "teacher_rounds",
    "teacher_plateau_rounds",
)


def check_resume_changes(previous: RunConfig, cfg: RunConfig) -> None:
    """Refuse a ``--resume`` whose ``--config`` / ``--set`` change a key the run is built on.

    Args:
        previous: the interrupted run's config (its ``run-config.json``).
        cfg: the config to resume with.

    Raises:
        ValueError: naming the first changed key of :data:`FIXED_ON_RESUME`, both values
            and what may change instead.
    """
    for key in FIXED_ON_RESUME:
        old, new = getattr(previous, key), getattr(cfg, key)
        if key == "dirichlet_alpha" and previous.partitioner not in DIRICHLET_PARTITIONER_NAMES:
            continue  # read only by the Dirichlet partitioners
        if old != new:
            name = key.replace("_", "-")
            raise ValueError(
                f"--resume: {name}={new!r} differs from the run's {name}={old!r}; the "
                f"checkpoint and client state were built with it. Keys that may change on "
                f"resume: the others (e.g. num-server-rounds); start a new run to change {name}"
            )


def check_server_threads(cfg: RunConfig) -> None:
    """Fail before starting anything if ``server-num-cpus`` exceeds this machine's CPUs.

    The ServerApp runs on this machine under every engine (with ``--ray-address`` too:
    only the client actors go to the cluster) and asks torch for that many threads; a
    value such as 1e9 made the run hang in thread creation instead of failing.

    Raises:
        ValueError: naming the key and the allowed range.
    """
    cpus = os.cpu_count() or 1
    if cfg.server_num_cpus > cpus:
        raise ValueError(
            f"server-num-cpus={cfg.server_num_cpus} exceeds this machine's {cpus} CPUs, "
            f"where the ServerApp runs; allowed: 1..{cpus}"
        )


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


def _data_checks(cfg: RunConfig, check_cuda: bool) -> tuple[str, str] | None:
    """The torch + data checks: None, or (error type name, message) to send back."""
    try:
        if check_cuda:
            check_device(cfg)
        check_dataset_available(cfg)
        check_data_splits(cfg)
    except (ValueError, FileNotFoundError) as err:
        return type(err).__name__, str(err)
    return None


def _shared_data(cfg: RunConfig) -> bytes | None:
    """``client-data.npz`` for the run (domains included), from the data the checks
    built: the ServerApp then reads it instead of computing it again (issue 13)."""
    from feddistill.data import prepare_federated_data
    from feddistill.server.run_data import encode_run_data

    spec = cfg.data_spec()
    return encode_run_data(spec, prepare_federated_data(spec))


def _data_checks_child(cfg: RunConfig, check_cuda: bool, parent_pid: int, conn: Connection) -> None:
    """The child's body: die with the parent, run the checks, send back the outcome:
    (failure or None, the run's ``client-data.npz`` bytes or None)."""
    die_with_parent(parent_pid)
    try:
        failure = _data_checks(cfg, check_cuda)
        conn.send(("done", (failure, None if failure is not None else _shared_data(cfg))))
    except BaseException as exc:  # a bug, not a failed check: the parent re-raises it
        try:
            conn.send(("raised", (exc, traceback.format_exc())))
        except Exception:  # an exception that does not pickle: its text then
            conn.send(("raised", (RuntimeError(repr(exc)), traceback.format_exc())))
    finally:
        conn.close()


class ChildTraceback(Exception):
    """The data checks' child's traceback, chained to the exception it raised."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class DataChecks:
    """The device, dataset and data-split checks, running in a spawned child from now.

    Use as a context manager: leaving it kills a child still running (the caller gave
    up, e.g. the SuperLink did not start). :meth:`wait` blocks for the outcome.

    Args:
        cfg: the run config.
        check_cuda: also check that ``device=cuda`` has a CUDA device here.
    """

    def __init__(self, cfg: RunConfig, check_cuda: bool = True) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no fork of threads
        self._conn, child_conn = context.Pipe(duplex=False)
        self._proc = context.Process(
            target=_data_checks_child,
            args=(cfg, check_cuda, os.getpid(), child_conn),
            name="feddistill-data-checks",
            daemon=True,
        )
        self._proc.start()
        child_conn.close()
        self._outcome: tuple[str, Any] | None = None

    def wait(self) -> bytes | None:
        """Block until the checks end; return if they passed.

        Returns:
            The run's ``client-data.npz`` (partitions, feature space and domains, as the
            ServerApp would compute them) for the caller to write into the out-dir once
            it may, or None (named or target domains: the ServerApp computes them).

        Raises:
            ValueError: as :func:`check_device` and :func:`check_data_splits`, same message.
            FileNotFoundError: as :func:`check_dataset_available`, same message.
            RuntimeError: if the child died without an answer (its exit code named).
        """
        if self._outcome is None:
            try:
                self._outcome = self._conn.recv()
            except EOFError:
                self._proc.join()
                raise RuntimeError(
                    f"the data checks' child process ended without an answer "
                    f"(exit code {self._proc.exitcode})"
                ) from None
            self._proc.join()
        kind, value = self._outcome
        if kind == "raised":
            exc, trace = value
            raise exc from ChildTraceback(trace)
        failure, shared = value
        if failure is not None:
            name, message = failure
            raise _CHECK_ERRORS[name](message)
        return shared

    def close(self) -> None:
        """Kill the child if it still runs; idempotent."""
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join()
        self._conn.close()

    def __enter__(self) -> DataChecks:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def start_data_checks(cfg: RunConfig, check_cuda: bool = True) -> DataChecks:
    """:class:`DataChecks` for `cfg`, started now (a seam the CLI's tests replace)."""
    return DataChecks(cfg, check_cuda)


def run_data_checks(cfg: RunConfig, check_cuda: bool = True, in_child: bool = True) -> None:
    """Run the device, dataset and data-split checks, by default in a child process.

    Args:
        cfg: the run config.
        check_cuda: also check that ``device=cuda`` has a CUDA device here (off when
            the run goes to a Ray cluster).
        in_child: run them in a spawned child that dies with this process (the
            ``feddistill`` process keeps no torch or data); False runs them here (the
            in-process engine needs torch anyway).

    Raises:
        ValueError: as :func:`check_device` and :func:`check_data_splits`, same message.
        FileNotFoundError: as :func:`check_dataset_available`, same message.
    """
    if in_child:
        with DataChecks(cfg, check_cuda) as checks:
            checks.wait()
        return
    failure = _data_checks(cfg, check_cuda)
    if failure is not None:
        name, message = failure
        raise _CHECK_ERRORS[name](message)
