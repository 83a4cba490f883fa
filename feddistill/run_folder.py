"""The run folder (``--out DIR``): the one place that knows its file names.

The ServerApp's recorder writes it, the launchers (``feddistill run``'s engines,
deployment) prepare and read it, ``feddistill compare`` and the progress follower read
it. Standard library only, so every layer may import it.

Layout::

    run-config.json   the config the run was started with (marks a feddistill run)
    command.txt       the command line as typed
    run.lock          the live writer's OS lock and PID
    phases.jsonl      one line per phase ("loading data", "round 3/10", ...)
    metrics.csv       one row per round (and metrics.jsonl, the same rows as JSON)
    placement.jsonl   which node ran which client, per round
    checkpoints/      round-<r>.pt and ``latest``
    client-state/     per-client state the ClientApp keeps on disk
    summary.json      written last: the run is over (status "completed" or "failed")
    server-error.json the ServerApp's error code when it refused to run
    report.md, *.png, student/, tensorboard/, mlruns/, deployment/, flower.log
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Error codes the ServerApp writes to server-error.json (read by the engines).
OUT_DIR_HOLDS_RUN = "out-dir-holds-run"  # a checkpoint, and resume was not asked
CHECKPOINT_MISMATCH = "checkpoint-mismatch"  # the checkpoint does not fit student-model
RUN_FAILED = "run-failed"  # any other exception; summary.json has the traceback
ERROR_CODES = (OUT_DIR_HOLDS_RUN, CHECKPOINT_MISMATCH, RUN_FAILED)


@dataclass(frozen=True)
class ServerError:
    """Why a ServerApp stopped: a code of :data:`ERROR_CODES` and its message."""

    code: str
    message: str


@dataclass(frozen=True)
class RunFolder:
    """The files of one run folder.

    Args:
        root: the folder (``out-dir``).
    """

    root: Path

    RUN_CONFIG = "run-config.json"
    COMMAND = "command.txt"
    LOCK = "run.lock"
    PHASES = "phases.jsonl"
    METRICS_CSV = "metrics.csv"
    METRICS_JSONL = "metrics.jsonl"
    PLACEMENT = "placement.jsonl"
    SUMMARY = "summary.json"
    SERVER_ERROR = "server-error.json"
    REPORT = "report.md"
    FLOWER_LOG = "flower.log"
    TIMINGS = "timings"  # one <pid>.json per process (feddistill.timing)
    CHECKPOINTS = "checkpoints"
    CLIENT_STATE = "client-state"
    CLIENT_DATA = "client-data.npz"  # partitions + feature space for clients (data.client_data)
    STUDENT = "student"
    DEPLOYMENT = "deployment"
    TENSORBOARD = "tensorboard"
    MLRUNS = "mlruns"
    LABEL_PLOT = "label_distribution.png"
    PLOTS = (
        "accuracy_vs_round.png",
        "accuracy_vs_uplink.png",
        "bytes_vs_round.png",
        LABEL_PLOT,
    )
    # what a new run replaces (run-config.json is rewritten; run.lock stays)
    RESULT_FILES = (
        METRICS_CSV,
        METRICS_JSONL,
        SUMMARY,
        SERVER_ERROR,
        REPORT,
        PLACEMENT,
        FLOWER_LOG,
        PHASES,
        COMMAND,
        CLIENT_DATA,
    )
    RESULT_DIRS = (CHECKPOINTS, CLIENT_STATE, STUDENT, DEPLOYMENT, TENSORBOARD, MLRUNS, TIMINGS)

    def __init__(self, root: Path | str) -> None:
        object.__setattr__(self, "root", Path(root))

    def file(self, name: str) -> Path:
        """``root / name`` (one of the class's file or folder names)."""
        return self.root / name

    @property
    def run_config(self) -> Path:
        return self.root / self.RUN_CONFIG

    @property
    def phases(self) -> Path:
        return self.root / self.PHASES

    @property
    def metrics_csv(self) -> Path:
        return self.root / self.METRICS_CSV

    @property
    def metrics_jsonl(self) -> Path:
        return self.root / self.METRICS_JSONL

    @property
    def placement(self) -> Path:
        return self.root / self.PLACEMENT

    @property
    def summary(self) -> Path:
        return self.root / self.SUMMARY

    @property
    def server_error(self) -> Path:
        return self.root / self.SERVER_ERROR

    @property
    def report(self) -> Path:
        return self.root / self.REPORT

    @property
    def flower_log(self) -> Path:
        return self.root / self.FLOWER_LOG

    @property
    def checkpoints(self) -> Path:
        return self.root / self.CHECKPOINTS

    @property
    def client_data(self) -> Path:
        return self.root / self.CLIENT_DATA

    @property
    def student(self) -> Path:
        return self.root / self.STUDENT

    def holds_run(self) -> bool:
        """True if the folder holds a feddistill run (its ``run-config.json``)."""
        return self.run_config.is_file()

    def has_checkpoint(self) -> bool:
        """True if a checkpoint was written (``checkpoints/latest``)."""
        return (self.checkpoints / "latest").is_file()

    def write_run_config(self, config: Mapping[str, Any]) -> None:
        """Write run-config.json (kebab-case keys), which ``--resume`` reads back.

        ``resume`` is left out: the file says what was run, not how it was started.
        """
        record = {k: v for k, v in config.items() if k != "resume"}
        self.run_config.write_text(json.dumps(record, indent=2) + "\n")

    def read_summary(self) -> dict[str, Any] | None:
        """The parsed summary.json, or None when the run wrote none (yet)."""
        if not self.summary.is_file():
            return None
        return dict(json.loads(self.summary.read_text()))

    def remove_results(self) -> None:
        """Delete what a run writes (:data:`RESULT_FILES`, :data:`RESULT_DIRS`, plots);
        anything else in the folder is left alone."""
        for name in (*self.RESULT_FILES, *self.PLOTS):
            (self.root / name).unlink(missing_ok=True)
        for name in self.RESULT_DIRS:
            shutil.rmtree(self.root / name, ignore_errors=True)

    def write_server_error(self, code: str, message: str) -> None:
        """Record why the ServerApp stopped, for the engine that launched it.

        Raises:
            ValueError: if `code` is not one of :data:`ERROR_CODES`.
        """
        if code not in ERROR_CODES:
            raise ValueError(f"error code {code!r} is not one of {ERROR_CODES}")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.server_error.with_suffix(".tmp")
        tmp.write_text(json.dumps({"code": code, "message": message}) + "\n")
        tmp.replace(self.server_error)

    def read_server_error(self) -> ServerError | None:
        """The error the ServerApp recorded, or None (no file, or one it cannot parse)."""
        try:
            data = json.loads(self.server_error.read_text())
            return ServerError(code=str(data["code"]), message=str(data["message"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
