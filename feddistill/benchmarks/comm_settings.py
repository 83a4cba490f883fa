"""Accuracy and bytes of communication settings on one split (issue 11).

Measurement, not a test. Runs the federation in process (:mod:`feddistill.inprocess`)
once per named setting (a list of ``key=value`` overrides on the default job) with the
same split and seed, and prints per setting the final and best test accuracy, cumulative
uplink and downlink bytes, and the uplink and total (up + down) ratios vs fp32 FedAvg.

Presets: ``logits-bits`` (4 / 8 / 16 / 2-bit teacher logits; the codec packs 1, 2, 4,
8, 16 or 32 bits), ``cheaper-logits`` (top-m classes, teacher freeze) and ``targets``
(issue 11's targets in one run). Any setting can also be given by hand:
``--setting "name:key=value,key=value"``.

Run: ``nice -n 10 feddistill bench comm --preset logits-bits [--rounds 10] [--seed 0]
[--out results/bench-comm] [--set key=value ...]``. Writes ``results.json`` (setting ->
numbers) and ``results.md`` (the table) into ``--out``, beside one run folder per setting.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from feddistill.atomic import atomic_write_text
from feddistill.config import from_mapping
from feddistill.inprocess import run_in_process, run_rounds

PRESETS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "logits-bits": [(f"logits {b} bit", {"logits-bit-width": b}) for b in (4, 8, 16, 2)],
    "cheaper-logits": [
        ("all classes", {}),
        ("top-3 classes", {"logits-top-m": 3}),
        ("top-1 class", {"logits-top-m": 1}),
        ("teacher frozen after 3 rounds", {"teacher-rounds": 3}),
        ("teacher frozen on plateau", {"teacher-plateau-rounds": 2}),
    ],
    # issue 11's targets, one run: centralized, the default strategy with compressed
    # traffic both ways, logits-only with mixed client models, and a resnet18 server
    # student (2 rounds: bytes only)
    "targets": [
        ("centralized", {"strategy": "centralized"}),
        (
            "feddistill, downlink 10% 8 bit, consensus 8 bit, top-2, subset 0.5",
            {
                "downlink-density": 0.1,
                "downlink-bit-width": 8,
                "consensus-bit-width": 8,
                "logits-top-m": 2,
                "logits-subset": 0.5,
            },
        ),
        (
            "logits-only mlp,cnn-small,cnn,cnn-small, top-2, subset 0.5, consensus 8 bit",
            {
                "strategy": "logits-only",
                "teacher-models": "mlp,cnn-small,cnn,cnn-small",
                "logits-top-m": 2,
                "logits-subset": 0.5,
                "consensus-bit-width": 8,
            },
        ),
        (
            "logits-only mlp,cnn-small,cnn,cnn-small, top-2, whole proxy, consensus 8 bit",
            {
                "strategy": "logits-only",
                "teacher-models": "mlp,cnn-small,cnn,cnn-small",
                "logits-top-m": 2,
                "consensus-bit-width": 8,
            },
        ),
        (
            "logits-only, resnet18 server student, 2 rounds",
            {
                "strategy": "logits-only",
                "teacher-models": "mlp,cnn-small,cnn,cnn-small",
                "student-model": "resnet18",
                "num-server-rounds": 2,
                "logits-top-m": 2,
                "logits-subset": 0.5,
                "consensus-bit-width": 8,
            },
        ),
    ],
}


def _parse_setting(text: str) -> tuple[str, dict[str, Any]]:
    name, _, body = text.partition(":")
    overrides: dict[str, Any] = {}
    for item in [s for s in body.split(",") if s]:
        key, _, value = item.partition("=")
        try:  # numbers, true/false, quoted strings; a bare word stays a string
            overrides[key.strip()] = json.loads(value)
        except ValueError:
            overrides[key.strip()] = value
    return name, overrides


def run_setting(
    name: str, overrides: dict[str, Any], common: dict[str, Any], out: Path
) -> dict[str, Any]:
    """Run one setting in process; return its final numbers."""
    shutil.rmtree(out, ignore_errors=True)
    cfg = from_mapping({**common, **overrides, "out-dir": str(out)})
    if cfg.strategy == "centralized":  # pooled training: sends nothing
        summary = run_in_process(cfg)
        acc = float(summary["final_accuracy"])
        best = float(summary.get("best_accuracy") or acc)
        return {
            "setting": name,
            "overrides": overrides,
            "final_accuracy": acc,
            "best_accuracy": best,
            "uplink_mb": 0.0,
            "downlink_mb": 0.0,
            "uplink_ratio": None,  # nothing sent: no ratio
            "total_ratio": None,
        }
    rows = run_rounds(cfg)
    last = rows[-1]
    return {
        "setting": name,
        "overrides": overrides,
        "final_accuracy": last["accuracy"],
        "best_accuracy": max(r["accuracy"] for r in rows),
        "uplink_mb": last["cumulative_uplink_bytes"] / 1e6,
        "downlink_mb": last["cumulative_downlink_bytes"] / 1e6,
        "uplink_ratio": last["ratio_vs_fedavg_fp32"],
        "total_ratio": last["total_ratio_vs_fedavg_fp32"],
    }


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    """Run the chosen settings; print and write the markdown table and results.json."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
    parser.add_argument("--setting", action="append", default=[], help="name:key=value,...")
    parser.add_argument("--only", type=int, nargs="*", default=None, help="preset indices")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="key=value for every run")
    parser.add_argument("--out", default="results/bench-comm")
    args = parser.parse_args(argv)
    settings = list(PRESETS[args.preset]) if args.preset else []
    if args.only is not None:
        settings = [s for i, s in enumerate(settings) if i in args.only]
    settings += [_parse_setting(s) for s in args.setting]
    if not settings:
        parser.error("give --preset and/or --setting")
    common: dict[str, Any] = {"num-server-rounds": args.rounds, "seed": args.seed}
    common.update(_parse_setting("common:" + ",".join(args.set))[1])
    out = Path(args.out)
    lines = [
        "| setting | final acc | best acc | uplink MB | downlink MB | up x | total x |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    results: dict[str, dict[str, Any]] = {}
    for i, (name, overrides) in enumerate(settings):
        res = run_setting(name, overrides, common, out / str(i))
        results[name] = res
        lines.append(
            f"| {name} | {res['final_accuracy']:.4f} | {res['best_accuracy']:.4f} | "
            f"{res['uplink_mb']:.3f} | {res['downlink_mb']:.3f} | "
            f"{_ratio(res['uplink_ratio'])} | {_ratio(res['total_ratio'])} |"
        )
        print(lines[-1], flush=True)
        atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
        atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
