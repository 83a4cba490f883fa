"""Accuracy and bytes vs downlink compression and consensus bit width.

Measurement, not a test. Runs the federation in process (:mod:`feddistill.inprocess`)
once per setting on the same split and seed, and prints, per setting, the final test
accuracy, cumulative uplink and downlink bytes and the total (up + down) ratio vs
fp32 FedAvg.

Run: ``nice -n 10 .venv/bin/python -m feddistill.benchmarks.downlink_bits [--dataset digits]
[--rounds 5] [--out /tmp/downlink-bits]``; ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from feddistill.config import from_mapping
from feddistill.inprocess import run_rounds

# (label, downlink-density, downlink-bit-width, consensus-bit-width)
SETTINGS = [
    ("fp32 model, fp16 consensus (before)", 1.0, 32, 16),
    ("delta 8 bit dense, fp16 consensus", 1.0, 8, 16),
    ("delta top-10% 8 bit, fp16 consensus", 0.1, 8, 16),
    ("delta top-10% 4 bit, fp16 consensus", 0.1, 4, 16),
    ("delta top-5% 4 bit, fp16 consensus", 0.05, 4, 16),
    ("delta top-10% 8 bit, 8 bit consensus", 0.1, 8, 8),
    ("delta top-10% 8 bit, 4 bit consensus", 0.1, 8, 4),
]


def main() -> None:
    """Run every setting and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="/tmp/downlink-bits")
    parser.add_argument("--json", default="")
    parser.add_argument("--only", type=int, nargs="*", default=None, help="setting indices")
    args = parser.parse_args()
    results = []
    print("| setting | accuracy | uplink MB | downlink MB | total x below fp32 FedAvg |")
    print("|---|---|---|---|---|")
    for i, (label, density, bits, cbits) in enumerate(SETTINGS):
        if args.only is not None and i not in args.only:
            continue
        out = Path(args.out) / str(i)
        shutil.rmtree(out, ignore_errors=True)
        cfg = from_mapping(
            {
                "dataset": args.dataset,
                "num-server-rounds": args.rounds,
                "downlink-density": density,
                "downlink-bit-width": bits,
                "consensus-bit-width": cbits,
                "out-dir": str(out),
            }
        )
        last = run_rounds(cfg)[-1]
        res = {
            "setting": label,
            "accuracy": last["accuracy"],
            "uplink_mb": last["cumulative_uplink_bytes"] / 1e6,
            "downlink_mb": last["cumulative_downlink_bytes"] / 1e6,
            "total_ratio": last["total_ratio_vs_fedavg_fp32"],
        }
        results.append(res)
        print(
            f"| {label} | {res['accuracy']:.4f} | {res['uplink_mb']:.3f} | "
            f"{res['downlink_mb']:.3f} | {res['total_ratio']:.1f} |",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
