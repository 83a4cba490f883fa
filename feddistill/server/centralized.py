"""Centralized baseline (upper bound): the same student trained on the pooled train data.

One "round" is `local-epochs` epochs over all clients' data together, so after R rounds
the student has seen as many epochs as each federated client; rows and summary have the
same columns as a federated run (uplink bytes are 0: nothing is sent).
"""

from __future__ import annotations

import time
from typing import Any

from feddistill.config import RunConfig
from feddistill.data import prepare_federated_data
from feddistill.learn import SGDSpec, evaluate, resolve_device, train_supervised
from feddistill.models import build_model
from feddistill.server.recorder import RunRecorder
from feddistill.server.round_metrics import RoundMetrics


def run_centralized(cfg: RunConfig, on_row: Any = None) -> dict[str, Any]:
    """Train and evaluate the pooled baseline; write the usual results to ``cfg.out_dir``."""
    recorder = RunRecorder(cfg)
    data = prepare_federated_data(cfg.data_spec())
    splits = data.splits
    device = resolve_device(cfg.device, cfg.deterministic)
    student = build_model(cfg.student_model, splits.in_shape, splits.num_classes, seed=cfg.seed)
    t_start = time.perf_counter()
    recorder.open_tracking()
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
        m = RoundMetrics(server_round, metrics, stats["loss"], 1, 1, 0, pooled=True)
        m.round_seconds = time.perf_counter() - t0
        m.wall_seconds = time.perf_counter() - t_start
        recorder.record_round(m)  # no checkpoint: the baseline does not resume
        if on_row is not None:
            on_row(m.to_row())
    recorder.close_tracking()
    wall_seconds = time.perf_counter() - t_start
    return recorder.finish(data, student, wall_seconds, export_sparsity=cfg.export_sparsity)
