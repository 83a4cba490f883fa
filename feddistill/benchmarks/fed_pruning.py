"""Pruning inside the federation (issue 12), part of `feddistill bench fed --pruning`.

Three runs with the in-process driver (the real ServerApp loop and ClientApp, no Ray,
so timings are not swamped by start-up on a loaded machine), same seed and data:
dense feddistill; an 80% global mask grown over the first half of the rounds; half
the channels removed at the start of the second half. Then the dense and the sparse
final students are exported (int8; the sparse one zlib-stored) and measured.

Usage: python -m feddistill.benchmarks.fed_pruning [--rounds 6] [--out DIR] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from feddistill.compression import export_student
from feddistill.compression.pruning import resize_to_state
from feddistill.config_load import load_config
from feddistill.data import prepare_federated_data
from feddistill.inprocess import run_rounds
from feddistill.models import build_model
from feddistill.server.checkpoint import load_latest_checkpoint


def configs(rounds: int) -> dict[str, list[str]]:
    """Run name -> config overrides."""
    half = max(1, rounds // 2)
    return {
        "dense": [],
        "sparse-80": [
            "target-sparsity=0.8",
            "sparsity-start-round=1",
            f"sparsity-end-round={half}",
        ],
        "channels-half": ["channel-pruning-ratio=0.5", f"channel-pruning-round={half + 1}"],
    }


def export_final(cfg: Any, out: Path, sparsity: float, compress: bool) -> dict[str, Any]:
    """Export the final checkpoint's student of a run; the export report."""
    data = prepare_federated_data(cfg.data_spec())
    splits = data.splits
    checkpoint = load_latest_checkpoint(out / "checkpoints")
    assert checkpoint is not None, f"the run in {out} left no checkpoint"
    state = checkpoint["student"]
    model = build_model(cfg.student_model, splits.in_shape, splits.num_classes)
    resize_to_state(model, state)
    model.load_state_dict(state)
    return export_student(
        model, splits.proxy_x, splits.test_x, splits.test_y, out / "student", sparsity, compress
    )


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
        results[name] = {"cfg": cfg, "rows": rows, "out": folder}
        print(f"{name}: final {100 * rows[-1]['accuracy']:.1f}%", file=sys.stderr, flush=True)
    dense, sparse, chans = (results[k]["rows"] for k in ("dense", "sparse-80", "channels-half"))
    half = max(1, args.rounds // 2)
    before = [r["student_seconds_mean"] for r in chans[1:half]]  # round 1 pays warm-up
    after = [r["student_seconds_mean"] for r in chans[half:]]
    up = {k: v["rows"][-1]["cumulative_uplink_bytes"] for k, v in results.items()}
    upd = {k: sum(r["uplink_update_bytes"] for r in v["rows"]) for k, v in results.items()}
    dense_export = export_final(results["dense"]["cfg"], results["dense"]["out"], 0.0, False)
    sparse_export = export_final(
        results["sparse-80"]["cfg"],
        results["sparse-80"]["out"],
        sparse[-1]["global_sparsity"],
        True,
    )
    stored = sparse_export["bytes"]["int8_torchscript_zlib"]
    d_lat, s_lat = dense_export["latency_ms"], sparse_export["latency_ms"]
    summary = {
        "rounds": args.rounds,
        "final_accuracy": {k: v["rows"][-1]["accuracy"] for k, v in results.items()},
        "uplink_bytes": up,
        "uplink_update_bytes": upd,
        "sparse_uplink_reduction": up["dense"] / up["sparse-80"],
        "sparse_update_uplink_reduction": upd["dense"] / upd["sparse-80"],
        "channels_student_seconds_before": before,
        "channels_student_seconds_after": after,
        "channels_train_speedup": statistics.mean(before) / statistics.mean(after)
        if before and after
        else None,
        "export": {
            "dense_fp32_state_dict_bytes": dense_export["bytes"]["fp32_state_dict"],
            "sparse_int8_stored_bytes": stored,
            "size_reduction": dense_export["bytes"]["fp32_state_dict"] / stored,
            "speedup_batch1": d_lat["fp32_batch1"] / s_lat["int8_batch1"],
            "speedup_batch64": d_lat["fp32_batch64"] / s_lat["int8_batch64"],
            "dense_fp32_accuracy": dense_export["accuracy"]["fp32"],
            "sparse_fp32_accuracy": sparse_export["accuracy"]["fp32"],
            "sparse_int8_accuracy": sparse_export["accuracy"]["int8_pruned"],
        },
    }
    text = json.dumps(summary, indent=2)
    (out / "pruning.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
