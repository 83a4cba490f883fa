"""Experiment tracking: TensorBoard event files per run, MLflow when it is installed.

Every run writes ``<out-dir>/tensorboard/`` through the standard
``torch.utils.tensorboard.SummaryWriter``: per-round scalars (accuracy, worst-domain
and per-domain accuracy, loss, bytes) and the config as a text table, so
``tensorboard --logdir results`` puts runs side by side. When ``mlflow`` can be imported
the same scalars and the config go to MLflow too (``MLFLOW_TRACKING_URI`` if set, else
``<out-dir>/mlruns``); mlflow is not a dependency of feddistill.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from feddistill.run_folder import RunFolder

logger = logging.getLogger(__name__)
TENSORBOARD_DIR = RunFolder.TENSORBOARD
# metrics-row key -> TensorBoard tag; per-domain accuracies are added as they appear
SCALARS = {
    "accuracy": "accuracy/overall",
    "worst_domain_accuracy": "accuracy/worst_domain",
    "teacher_accuracy": "accuracy/teacher_train",
    "loss": "loss/test",
    "student_train_loss": "loss/student_train",
    "server_distill_loss": "loss/server_distill",
    "uplink_bytes": "bytes/uplink",
    "downlink_bytes": "bytes/downlink",
    "cumulative_uplink_bytes": "bytes/cumulative_uplink",
    "cumulative_downlink_bytes": "bytes/cumulative_downlink",
    "ratio_vs_fedavg_fp32": "bytes/ratio_vs_fedavg_fp32",
    "total_ratio_vs_fedavg_fp32": "bytes/total_ratio_vs_fedavg_fp32",
    "round_seconds": "time/round_seconds",
}


def row_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The numeric values of a metrics row under their TensorBoard tags.

    Args:
        row: one round's metrics row.

    Returns:
        tag -> value: the keys of :data:`SCALARS` present with a number,
        ``accuracy/domain_<d>`` for each ``domain_<d>_accuracy``, and
        ``bytes/cumulative_total`` (uplink + downlink) when both are present.
    """
    out: dict[str, float] = {}
    for key, value in row.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key in SCALARS:
            out[SCALARS[key]] = float(value)
        elif key.startswith("domain_") and key.endswith("_accuracy"):
            out[f"accuracy/{key.removesuffix('_accuracy')}"] = float(value)
    if "bytes/cumulative_uplink" in out and "bytes/cumulative_downlink" in out:
        out["bytes/cumulative_total"] = (
            out["bytes/cumulative_uplink"] + out["bytes/cumulative_downlink"]
        )
    return out


def config_markdown(config: Mapping[str, Any]) -> str:
    """The config as a two-column markdown table (TensorBoard renders it in TEXT)."""
    lines = ["| key | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in sorted(config.items())]
    return "\n".join(lines)


class RunTracker:
    """Writes one run's rounds to TensorBoard (always) and MLflow (if importable).

    Args:
        out_dir: the run's out-dir; events go to ``<out_dir>/tensorboard``.
        config: the run config, kebab-case keys; logged once as text / params.
        run_name: the name shown in MLflow (e.g. the strategy).
    """

    def __init__(self, out_dir: Path, config: Mapping[str, Any], run_name: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(out_dir) / TENSORBOARD_DIR))
        self.writer.add_text("config", config_markdown(config), global_step=0)
        self.mlflow: Any = None
        if importlib.util.find_spec("mlflow") is not None:
            self._start_mlflow(Path(out_dir), config, run_name)

    def _start_mlflow(self, out_dir: Path, config: Mapping[str, Any], run_name: str) -> None:
        import mlflow

        try:
            if "MLFLOW_TRACKING_URI" not in os.environ:
                mlflow.set_tracking_uri((out_dir / RunFolder.MLRUNS).resolve().as_uri())
            mlflow.start_run(run_name=run_name)
            mlflow.log_params({k: str(v)[:250] for k, v in config.items()})
            self.mlflow = mlflow
        except Exception as exc:  # tracking must never fail a run
            logger.warning("MLflow logging is off: %s", exc)

    def log_round(self, row: Mapping[str, Any]) -> None:
        """Log one metrics row at step ``row["round"]``."""
        step = int(row["round"])
        scalars = row_scalars(row)
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()
        if self.mlflow is not None:
            try:
                self.mlflow.log_metrics(
                    {tag.replace("/", "."): v for tag, v in scalars.items()}, step=step
                )
            except Exception as exc:  # tracking must never fail a run
                logger.warning("MLflow logging failed: %s", exc)

    def close(self) -> None:
        """Flush and close the event file; end the MLflow run."""
        self.writer.close()
        if self.mlflow is not None:
            try:
                self.mlflow.end_run()
            except Exception as exc:
                logger.warning("MLflow end_run failed: %s", exc)
