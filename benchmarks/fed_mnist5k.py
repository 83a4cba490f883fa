"""Side-by-side federated benchmark on MNIST-5k (also `feddistill bench fed`).

Runs feddistill, fedavg, fedavg-compressed, fedmd, feddf and centralized with the same
seed, data and round count (default 10 rounds, 4 KMeans clients), each through the real
engine (private SuperLink + Flower simulation on Ray; centralized in process), and
writes `results.json`, `results.md` (final / best accuracy, worst-domain accuracy,
uplink and downlink bytes, ratio to FedAvg's fp32 uplink, wall seconds) and
`accuracy_vs_uplink.png` / `accuracy_vs_round.png` with every strategy on one plot.
`--scale` adds a 100-client Dirichlet run with 10% of clients per round and reports
the peak resident memory of the whole process tree.

Usage: python benchmarks/fed_mnist5k.py [--rounds 10] [--out DIR] [--only a,b] [--scale]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from feddistill.cli import run_job
from feddistill.config import load_config
from feddistill.server.results import plot_curves

STRATEGIES = ("feddistill", "fedavg", "fedavg-compressed", "fedmd", "feddf", "centralized")


class PeakMemory:
    """Samples the summed RSS of this process and all its descendants."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process(os.getpid())
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_bytes = max(self.peak_bytes, total)
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_one(name: str, overrides: list[str], out: Path) -> dict[str, Any]:
    cfg = load_config(None, [*overrides, f"out-dir={str(out.resolve())!r}"])
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        summary = run_job(cfg, quiet=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    return {
        "name": name,
        "status": summary.get("status"),
        "final_accuracy": summary.get("final_accuracy"),
        "best_accuracy": summary.get("best_accuracy"),
        "worst_domain_accuracy": rows[-1].get("worst_domain_accuracy") if rows else None,
        "uplink_bytes": summary.get("uplink_bytes", 0),
        "downlink_bytes": summary.get("downlink_bytes", 0),
        "wall_seconds": summary.get("wall_seconds"),
        "process_seconds": time.perf_counter() - t0,
        "peak_rss_mb": mem.peak_bytes / 2**20,
        "rows": rows,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    fedavg_up = next((r["uplink_bytes"] for r in results if r["name"] == "fedavg"), None)
    central = next((r["wall_seconds"] for r in results if r["name"] == "centralized"), None)
    head = (
        "| strategy | final acc | best acc | worst-domain acc | uplink MB | downlink MB "
        "| fedavg uplink / uplink | wall s (in run) | s incl. start-up | wall / centralized | peak RSS MB |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in results:
        ratio = f"{fedavg_up / r['uplink_bytes']:.1f}x" if fedavg_up and r["uplink_bytes"] else "-"
        rel = f"{r['wall_seconds'] / central:.1f}" if central else "-"
        lines.append(
            f"| {r['name']} | {100 * r['final_accuracy']:.1f}% | {100 * r['best_accuracy']:.1f}% "
            f"| {100 * r['worst_domain_accuracy']:.1f}% | {r['uplink_bytes'] / 1e6:.3f} "
            f"| {r['downlink_bytes'] / 1e6:.2f} | {ratio} | {r['wall_seconds']:.1f} "
            f"| {r['process_seconds']:.1f} | {rel} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="feddistill bench fed",
        description=__doc__.split("\n\nUsage")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rounds", type=int, default=10, help="server rounds of every run (default 10)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of every run: data, partitions, init (default 0)"
    )
    parser.add_argument(
        "--out",
        default="results/bench-fed",
        help="output folder: one sub-folder per strategy, results.json / results.md and "
        "the combined plots (default results/bench-fed)",
    )
    parser.add_argument(
        "--only",
        default=",".join(STRATEGIES),
        help=f"comma list of strategies to run (default all: {','.join(STRATEGIES)})",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="add a 100-client Dirichlet run (10%% of clients per round) with peak memory",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for every run (repeatable), e.g. --set dataset=digits",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [f"num-server-rounds={args.rounds}", f"seed={args.seed}", *args.set]
    results = []
    for name in [s for s in args.only.split(",") if s]:
        if name not in STRATEGIES:
            parser.error(f"--only: unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
        results.append(run_one(name, [*common, f"strategy={name!r}"], out / name))
        print(
            f"{name}: final {100 * results[-1]['final_accuracy']:.1f}%", file=sys.stderr, flush=True
        )
    if args.scale:
        scale = [
            *common,
            "partitioner='dirichlet'",
            "num-partitions=100",
            "dirichlet-alpha=1.0",
            "min-partition-size=5",
            "fraction-train=0.1",
            "min-train-nodes=5",
        ]
        results.append(run_one("feddistill-100-dirichlet-10pct", scale, out / "scale100"))
    table = markdown(results)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(
        json.dumps([{k: v for k, v in r.items() if k != "rows"} for r in results], indent=2)
    )
    plot_curves(
        out, {r["name"]: r["rows"] for r in results if r["name"] != "centralized" and r["rows"]}
    )
    print(table)
    return 0 if all(r["status"] == "completed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
