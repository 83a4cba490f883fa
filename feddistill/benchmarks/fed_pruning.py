"""Pruning inside the federation (issue 12), part of `feddistill bench fed --pruning`.

Four runs with the in-process driver (the real ServerApp loop and ClientApp, no Ray,
so timings are not swamped by start-up on a loaded machine), same seed and data:
dense feddistill; an 80% global mask grown over the first half of the rounds (Zhu &
Gupta's cubic ramp), then half the rounds to recover; half the channels removed at the
start of the middle round (at least 2, the first with a consensus) ranked by
first-order Taylor importance (KD loss to the consensus on the proxy set), and the same with the L2
filter norm. Then the final students are exported (int8; the sparse one zlib-stored)
and measured, and the student's own local training is timed on the dense and the
channel-pruned final student (the same client data, KD target and steps, 1 thread,
fastest of interleaved repeats) next to the in-run phase timers (teacher vs student).

Usage: python -m feddistill.benchmarks.fed_pruning [--rounds 6] [--out DIR] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from feddistill.compression import export_student
from feddistill.compression.pruning import resize_to_state
from feddistill.config_load import load_config
from feddistill.data import prepare_federated_data
from feddistill.inprocess import run_rounds
from feddistill.learn import KDSpec, KDTarget, SGDSpec, train_supervised
from feddistill.models import build_model
from feddistill.server.checkpoint import load_latest_checkpoint
from feddistill.threads import torch_threads
from feddistill.timing import read_timings


def configs(rounds: int) -> dict[str, list[str]]:
    """Run name -> config overrides."""
    half = max(1, rounds // 2)
    # channels go at the end of the mask's ramp: Taylor ranks a trained student better
    # (README: pruned at round 2 of 10 it lost 2.1 points, at round 5 1.1)
    channels = ["channel-pruning-ratio=0.5", f"channel-pruning-round={max(2, half)}"]
    return {
        "dense": [],
        "sparse-80": [
            "target-sparsity=0.8",
            "sparsity-start-round=1",
            f"sparsity-end-round={half}",
        ],
        "channels-half-taylor": [*channels, "channel-pruning-importance='taylor'"],
        "channels-half-l2": [*channels, "channel-pruning-importance='magnitude'"],
    }


def final_student(cfg: Any, out: Path) -> torch.nn.Module:
    """The final checkpoint's student of a run (channel-pruned shapes restored)."""
    splits = prepare_federated_data(cfg.data_spec()).splits
    checkpoint = load_latest_checkpoint(out / "checkpoints")
    if checkpoint is None:
        raise RuntimeError(f"the run in {out} left no checkpoint")
    state = checkpoint["student"]
    model = build_model(cfg.student_model, splits.in_shape, splits.num_classes)
    resize_to_state(model, state)
    model.load_state_dict(state)
    return model


def export_final(cfg: Any, out: Path, sparsity: float, compress: bool) -> dict[str, Any]:
    """Export the final checkpoint's student of a run; the export report."""
    splits = prepare_federated_data(cfg.data_spec()).splits
    model = final_student(cfg, out)
    return export_student(
        model, splits.proxy_x, splits.test_x, splits.test_y, out / "student", sparsity, compress
    )


def student_train_seconds(
    cfg: Any, models: dict[str, torch.nn.Module], consensus: torch.Tensor, repeats: int = 5
) -> dict[str, float]:
    """Fastest of ``repeats`` local student trainings per model, 1 thread, seconds.

    Client 0's partition, ``local-epochs`` with ``batch-size``, KD to ``consensus`` on
    the proxy set, as a client round does; the models take turns so that load on the
    machine hits them alike.
    """
    data = prepare_federated_data(cfg.data_spec())
    splits = data.splits
    idx = torch.as_tensor(data.partitions[0])
    x, y = splits.train_x[idx], splits.train_y[idx]
    kd = KDTarget(splits.proxy_x, consensus, KDSpec(cfg.alpha, cfg.temperature))
    sgd = SGDSpec(
        cfg.learning_rate,
        cfg.momentum,
        cfg.batch_size,
        epochs=cfg.local_epochs,
        steps=cfg.local_steps,
        seed=0,
    )
    best = {name: float("inf") for name in models}
    with torch_threads(1):
        for _ in range(repeats):
            for name, model in models.items():
                t0 = time.perf_counter()
                train_supervised(model, x, y, sgd, torch.device("cpu"), kd=kd)
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _export_summary(report: dict[str, Any], dense: dict[str, Any]) -> dict[str, Any]:
    d_lat, lat, acc = dense["latency_ms"], report["latency_ms"], report["accuracy"]
    stored = report["bytes"][
        "int8_torchscript_zlib" if report["file"].endswith("zlib") else "int8_torchscript"
    ]
    return {
        "stored_bytes": stored,
        "size_reduction_vs_dense_fp32": dense["bytes"]["fp32_state_dict"] / stored,
        "latency_ms": lat,
        "speedup_batch1_vs_dense_fp32": d_lat["fp32_batch1"] / lat["int8_batch1"],
        "speedup_batch64_vs_dense_fp32": d_lat["fp32_batch64"] / lat["int8_batch64"],
        "speedup_batch1_vs_own_fp32": lat["fp32_batch1"] / lat["int8_batch1"],
        "speedup_batch64_vs_own_fp32": lat["fp32_batch64"] / lat["int8_batch64"],
        "fp32_source_accuracy": acc["fp32_pruned"],
        "int8_accuracy": acc["int8_pruned"],
        "int8_minus_fp32_source_points": 100 * (acc["int8_pruned"] - acc["fp32_pruned"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fed_pruning", description=__doc__.split("\n\nUsage")[0])
    parser.add_argument("--rounds", type=int, default=6, help="server rounds (default 6)")
    parser.add_argument("--out", default="results/bench-fed/pruning", help="output folder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    out = Path(args.out)
    results: dict[str, dict[str, Any]] = {}
    for name, extra in configs(args.rounds).items():
        folder = out / name
        overrides = [f"num-server-rounds={args.rounds}", *args.set, *extra]
        cfg = load_config(None, [*overrides, f"out-dir={str(folder.resolve())!r}", "device='cpu'"])
        rows = run_rounds(cfg)
        results[name] = {"cfg": cfg, "rows": rows, "out": folder, "timers": read_timings(folder)}
        print(f"{name}: final {100 * rows[-1]['accuracy']:.1f}%", file=sys.stderr, flush=True)
    rows_of = {k: v["rows"] for k, v in results.items()}
    up = {k: r[-1]["cumulative_uplink_bytes"] for k, r in rows_of.items()}
    upd = {k: sum(row["uplink_update_bytes"] for row in r) for k, r in rows_of.items()}
    clients = {k: sum(row["accepted"] for row in r) for k, r in rows_of.items()}
    timers = {
        k: {
            phase: v["timers"].get(phase, 0.0) / clients[k]
            for phase in ("teacher_training", "student_training", "kd", "logits_affinity")
        }
        for k, v in results.items()
    }
    taylor_round = results["channels-half-taylor"]["cfg"].channel_pruning_round
    chans = [r["student_seconds_mean"] for r in rows_of["channels-half-taylor"]]
    before, after = chans[1 : taylor_round - 1], chans[taylor_round - 1 :]
    dense_cfg, dense_out = results["dense"]["cfg"], results["dense"]["out"]
    taylor_cfg, taylor_out = (results["channels-half-taylor"][k] for k in ("cfg", "out"))
    dense_checkpoint = load_latest_checkpoint(dense_out / "checkpoints")
    if dense_checkpoint is None:
        raise RuntimeError(f"the dense run in {dense_out} left no checkpoint")
    consensus = dense_checkpoint["consensus"]
    train_s = student_train_seconds(
        dense_cfg,
        {
            "dense": final_student(dense_cfg, dense_out),
            "half": final_student(taylor_cfg, taylor_out),
        },
        consensus,
    )
    dense_export = export_final(dense_cfg, dense_out, 0.0, False)
    sparse_export = export_final(
        results["sparse-80"]["cfg"],
        results["sparse-80"]["out"],
        rows_of["sparse-80"][-1]["global_sparsity"],
        True,
    )
    channels_export = export_final(taylor_cfg, taylor_out, 0.0, False)
    summary = {
        "rounds": args.rounds,
        "final_accuracy": {k: r[-1]["accuracy"] for k, r in rows_of.items()},
        "accuracy_minus_dense_points": {
            k: 100 * (r[-1]["accuracy"] - rows_of["dense"][-1]["accuracy"])
            for k, r in rows_of.items()
        },
        "student_parameters": {k: r[-1].get("student_parameters") for k, r in rows_of.items()},
        "uplink_bytes": up,
        "uplink_update_bytes": upd,
        "last_round_update_bytes": {k: r[-1]["uplink_update_bytes"] for k, r in rows_of.items()},
        "sparse_uplink_reduction": up["dense"] / up["sparse-80"],
        "sparse_update_uplink_reduction": upd["dense"] / upd["sparse-80"],
        "in_run_seconds_per_client_round": timers,
        "student_train_seconds_isolated": train_s,
        "channels_student_train_speedup": train_s["dense"] / train_s["half"],
        # the Taylor run's own rows: rounds 2..r-1 (round 1 pays warm-up) vs r..R
        "channels_student_seconds_before_after": (before, after),
        "channels_student_train_speedup_in_run": statistics.mean(before) / statistics.mean(after)
        if before and after
        else None,
        "export": {
            "dense_fp32_state_dict_bytes": dense_export["bytes"]["fp32_state_dict"],
            "dense_fp32_accuracy": dense_export["accuracy"]["fp32"],
            "dense_int8": _export_summary(dense_export, dense_export),
            "sparse80_int8_zlib": _export_summary(sparse_export, dense_export),
            "channels_half_int8": _export_summary(channels_export, dense_export),
        },
    }
    text = json.dumps(summary, indent=2)
    (out / "pruning.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
