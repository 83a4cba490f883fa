"""Centralized baseline (upper bound): the same student trained on the pooled train data.

One "round" is `local-epochs` epochs over all clients' data together, so after R rounds
the student has seen as many epochs as each federated client; rows and summary have the
same columns as a federated run (uplink bytes are 0: nothing is sent).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from feddistill.config import RunConfig
from feddistill.data import prepare_federated_data
from feddistill.learn import SGDSpec, evaluate, resolve_device, train_supervised
from feddistill.models import build_model
from feddistill.server.domain_results import (
    append_domain_report,
    domain_summary,
    plot_domain_curves,
)
from feddistill.server.loop import build_summary, save_label_plot
from feddistill.server.plots import plot_run
from feddistill.server.results import write_report, write_rows, write_summary
from feddistill.server.tracking import RunTracker


def run_centralized(cfg: RunConfig, on_row: Any = None) -> dict[str, Any]:
    """Train and evaluate the pooled baseline; write the usual results to ``cfg.out_dir``."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_federated_data(cfg.data_spec())
    splits = data.splits
    device = resolve_device(cfg.device)
    student = build_model(cfg.student_model, splits.in_shape, splits.num_classes, seed=cfg.seed)
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    tracker = RunTracker(out, cfg.to_kebab(), run_name=cfg.strategy)
    for server_round in range(1, cfg.num_server_rounds + 1):
        t0 = time.perf_counter()
        sgd = SGDSpec(
            cfg.learning_rate,
            cfg.momentum,
            cfg.batch_size,
            epochs=cfg.local_epochs,
            seed=cfg.seed * 7919 + server_round,
        )
        stats = train_supervised(student, splits.train_x, splits.train_y, sgd, device)
        metrics = evaluate(
            student,
            splits.test_x,
            splits.test_y,
            device,
            data.test_domains,
            target_domains=data.target_domains,
        )
        row = {
            "round": server_round,
            **metrics,
            "student_train_loss": stats["loss"],
            "sampled": 1,
            "accepted": 1,
            "failed": 0,
            "uplink_bytes": 0,
            "cumulative_uplink_bytes": 0,
            "cumulative_downlink_bytes": 0,
            "round_seconds": time.perf_counter() - t0,
            "wall_seconds": time.perf_counter() - t_start,
        }
        rows.append(row)
        write_rows(out, rows)
        tracker.log_round(row)
        if on_row is not None:
            on_row(row)
    tracker.close()
    summary = build_summary(cfg, rows, time.perf_counter() - t_start, status="completed")
    summary["final_worst_domain_accuracy"] = rows[-1]["worst_domain_accuracy"]
    from feddistill.compression import export_student

    summary["student_export"] = export_student(
        student,
        splits.proxy_x,
        splits.test_x,
        splits.test_y,
        out / "student",
        sparsity=cfg.export_sparsity,
    )
    summary.update(domain_summary(data, rows))
    write_summary(out, summary)
    write_report(out, summary, rows)
    append_domain_report(out, summary)
    plot_run(out, rows, summary)  # accuracy only: nothing is sent
    plot_domain_curves(out, data, rows)
    save_label_plot(data, cfg, out)
    return summary
