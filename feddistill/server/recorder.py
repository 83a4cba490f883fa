"""RunRecorder: everything a run writes to its folder, and the end-of-run sequence.

The round loop measures; the recorder keeps the rows (:class:`RoundMetrics`) and
writes them (metrics.csv / .jsonl, TensorBoard, placement.jsonl, a checkpoint per
round), records phases for the progress display, and ends the run once: export the
student, write report.md and the plots, then summary.json (last: it tells
``feddistill run`` that the run is over). The federated loop and the centralized
baseline both end through :meth:`RunRecorder.finish`.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from feddistill.config import RunConfig
from feddistill.data import FederatedData
from feddistill.progress import record_phase
from feddistill.run_folder import RUN_FAILED, RunFolder
from feddistill.server.checkpoint import load_latest_checkpoint, save_checkpoint
from feddistill.server.domain_results import (
    append_domain_report,
    domain_summary,
    plot_domain_curves,
)
from feddistill.server.logits_only import latest_client_accuracy
from feddistill.server.plots import plot_run
from feddistill.server.results import save_run_config, write_report, write_rows, write_summary
from feddistill.server.round_metrics import RoundMetrics
from feddistill.server.tracking import RunTracker
from feddistill.timing import flush, timed

logger = logging.getLogger(__name__)


class RunRecorder:
    """Writes one run's folder.

    Args:
        cfg: the run config (``out_dir`` is the folder; the config goes into
            run-config.json, TensorBoard and summary.json).
    """

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.folder = RunFolder(cfg.out_dir)
        self.folder.root.mkdir(parents=True, exist_ok=True)
        self.metrics: list[RoundMetrics] = []
        self.tracker: RunTracker | None = None

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The rows so far as written to metrics.jsonl (column -> value)."""
        return [m.to_row() for m in self.metrics]

    def phase(self, text: str, rows_done: int | None = None) -> None:
        """Record a phase ("loading data", "round 3/10") for the progress display."""
        record_phase(self.folder.root, text, rows_done=rows_done)

    def latest_checkpoint(self) -> dict[str, Any] | None:
        """The newest checkpoint in the folder (None: a fresh run); its rows are
        read back into :attr:`metrics`."""
        ckpt = load_latest_checkpoint(self.folder.checkpoints)
        if ckpt is not None:
            self.metrics = [RoundMetrics.from_row(r) for r in ckpt["rows"]]
        return ckpt

    def save_config(self) -> None:
        """run-config.json, unless the folder already holds it (a resumed run)."""
        if not self.folder.holds_run():
            save_run_config(self.cfg)

    def open_tracking(self) -> None:
        """Start the TensorBoard / MLflow log of the rounds."""
        self.tracker = RunTracker(self.folder.root, self.cfg.to_kebab(), run_name=self.cfg.strategy)

    def close_tracking(self) -> None:
        """Flush and close the TensorBoard / MLflow log."""
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None

    def record_round(
        self,
        metrics: RoundMetrics,
        checkpoint: dict[str, Any] | None = None,
        placement: Iterable[dict[str, Any]] = (),
    ) -> None:
        """Append a round: metrics files, TensorBoard, placement.jsonl and a checkpoint.

        Args:
            metrics: the round's measurements.
            checkpoint: state to resume from after this round (None: no checkpoint);
                the rows so far and ``wall_seconds`` are added here.
            placement: one record per accepted client (which node ran it).
        """
        self.metrics.append(metrics)
        rows = self.rows
        with timed("checkpoint_io"):
            write_rows(self.folder.root, rows)
            lines = [json.dumps({"round": metrics.round, **r}) + "\n" for r in placement]
            if lines:
                with self.folder.placement.open("a") as fh:
                    fh.writelines(lines)
            if checkpoint is not None:
                state = {**checkpoint, "rows": rows, "wall_seconds": metrics.wall_seconds}
                save_checkpoint(self.folder.checkpoints, metrics.round, state)
        flush(self.folder.root)
        if self.tracker is not None:
            self.tracker.log_round(rows[-1])

    def finish(
        self,
        data: FederatedData,
        student: nn.Module,
        wall_seconds: float,
        export_sparsity: float,
        compress: bool = False,
    ) -> dict[str, Any]:
        """End the run: export the student, report.md and plots, then summary.json.

        Args:
            data: the run's data (per-domain summary, label plot).
            student: the final global student.
            wall_seconds: the run's wall-clock seconds.
            export_sparsity: fraction of the student's weights pruned for export, in [0, 1).
            compress: store the exported student zlib-compressed (a sparse run).

        Returns:
            The summary, as written to summary.json.
        """
        from feddistill.compression import export_student  # heavy (quantization backends)

        out, rows, splits = self.folder.root, self.rows, data.splits
        self.phase(
            f"exporting student ({self.cfg.student_model}, int8 and pruned)",
            rows_done=len(rows),
        )
        with timed("export"):
            export = export_student(
                student,
                splits.proxy_x,
                splits.test_x,
                splits.test_y,
                self.folder.student,
                sparsity=export_sparsity,
                compress=compress,
            )
        summary = build_summary(self.cfg, rows, wall_seconds, status="completed")
        summary["student_export"] = export
        summary["final_worst_domain_accuracy"] = rows[-1].get("worst_domain_accuracy")
        summary.update(domain_summary(data, rows))
        self.phase("writing report.md and plots", rows_done=len(rows))
        with timed("report_plots"):
            write_report(out, summary, rows)
            plot_run(out, rows, summary)
            append_domain_report(out, summary)
            plot_domain_curves(out, data, rows)
            save_label_plot(data, self.cfg, out)
        flush(out)
        # last: summary.json tells `feddistill run` the run is over, and it then stops
        # every process of the run, this one included
        write_summary(out, summary)
        return summary

    def record_failure(self, exc: BaseException) -> None:
        """summary.json with status "failed" (error and traceback), and the error code."""
        message = f"{type(exc).__name__}: {exc}"
        self.folder.write_server_error(RUN_FAILED, message)
        summary = {
            "status": "failed",
            "strategy": self.cfg.strategy,
            "error": message,
            "traceback": traceback.format_exc(),
            "config": self.cfg.to_kebab(),
        }
        write_summary(self.folder.root, summary)


def save_label_plot(data: FederatedData, cfg: RunConfig, out: Path) -> None:
    """label_distribution.png: samples per class of every client's partition."""
    from feddistill.data.plots import save_plot

    title = f"{cfg.dataset}: {cfg.partitioner} partitions"
    save_plot(data.partition_label_counts(), out / RunFolder.LABEL_PLOT, title)


def build_summary(
    cfg: RunConfig, rows: list[dict[str, Any]], wall_seconds: float, status: str
) -> dict[str, Any]:
    """The summary.json fields every run has."""
    last = rows[-1] if rows else {}
    return {
        "status": status,
        "strategy": cfg.strategy,
        "rounds": len(rows),
        "final_accuracy": last.get("accuracy"),
        "best_accuracy": max((r["accuracy"] for r in rows), default=None),
        "uplink_bytes": last.get("cumulative_uplink_bytes", 0),
        "downlink_bytes": last.get("cumulative_downlink_bytes", 0),
        "uplink_ratio_vs_fedavg_fp32": last.get("ratio_vs_fedavg_fp32"),
        "total_ratio_vs_fedavg_fp32": last.get("total_ratio_vs_fedavg_fp32"),
        **latest_client_accuracy(rows),
        "wall_seconds": wall_seconds,
        "config": cfg.to_kebab(),
    }
