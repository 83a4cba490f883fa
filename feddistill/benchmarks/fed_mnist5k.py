"""Side-by-side federated benchmark on MNIST-5k (also `feddistill bench fed`).

Runs feddistill, fedavg, fedavg-compressed, fedmd, feddf, logits-only (clients
`mlp,cnn-small,cnn,cnn-small`, no weights sent) and centralized with the same
seed, data and round count (default 10 rounds, 4 KMeans clients), each through the real
engine (private SuperLink + Flower simulation on Ray; centralized in process), and
writes `results.json`, `results.md` (final / best accuracy, worst-domain accuracy,
uplink, downlink and total bytes, FedAvg's fp32 uplink and total over each run's,
wall seconds), `accuracy_vs_bytes.png` (accuracy vs total bytes; uplink only in a
second panel), `accuracy_vs_uplink.png` and `accuracy_vs_round.png`.
`--scale` adds a 100-client Dirichlet run with 10% of clients per round and reports
the peak resident memory of the whole process tree.
`--regime label-skew` runs feddistill (``coverage-era`` consensus) and fedavg on 10
Dirichlet(0.1) label-skewed clients for 20 rounds, in process
(:mod:`feddistill.benchmarks.fed_label_skew`); with `--seeds` once per seed.

Usage: python -m feddistill.benchmarks.fed_mnist5k [--rounds 10] [--out DIR] [--only a,b] [--scale]
       feddistill bench fed --regime label-skew [--seeds 0,1,2] [--out DIR]
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

from feddistill.benchmarks import fed_label_skew
from feddistill.cli import run_job
from feddistill.config_load import load_config
from feddistill.server.results import plot_curves

STRATEGIES = (
    "feddistill",
    "fedavg",
    "fedavg-compressed",
    "fedmd",
    "feddf",
    "logits-only",
    "centralized",
)
# logits-only: every client runs its own architecture, the server student differs
EXTRA = {"logits-only": ["teacher-models='mlp,cnn-small,cnn,cnn-small'"]}


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


def run_one(
    name: str, overrides: list[str], out: Path, engine: str = "simulation"
) -> dict[str, Any]:
    cfg = load_config(None, [*overrides, f"out-dir={str(out.resolve())!r}"])
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        summary = run_job(cfg, quiet=True, engine=engine)
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


def _ratio(reference: int | None, value: int) -> str:
    return f"{reference / value:.1f}x" if reference and value else "-"


def markdown(results: list[dict[str, Any]]) -> str:
    """The results table; ratios are fedavg's bytes over each run's (same rounds)."""
    fedavg = next((r for r in results if r["name"] == "fedavg"), None)
    fedavg_up = fedavg["uplink_bytes"] if fedavg else None
    fedavg_total = fedavg["uplink_bytes"] + fedavg["downlink_bytes"] if fedavg else None
    central = next((r["wall_seconds"] for r in results if r["name"] == "centralized"), None)
    head = (
        "| strategy | final acc | best acc | worst-domain acc | uplink MB | downlink MB "
        "| total MB | fedavg uplink / uplink | fedavg total / total | wall s (in run) "
        "| s incl. start-up | wall / centralized | peak RSS MB |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in results:
        total = r["uplink_bytes"] + r["downlink_bytes"]
        rel = f"{r['wall_seconds'] / central:.1f}" if central else "-"
        lines.append(
            f"| {r['name']} | {100 * r['final_accuracy']:.1f}% | {100 * r['best_accuracy']:.1f}% "
            f"| {100 * r['worst_domain_accuracy']:.1f}% | {r['uplink_bytes'] / 1e6:.3f} "
            f"| {r['downlink_bytes'] / 1e6:.3f} | {total / 1e6:.3f} "
            f"| {_ratio(fedavg_up, r['uplink_bytes'])} | {_ratio(fedavg_total, total)} "
            f"| {r['wall_seconds']:.1f} "
            f"| {r['process_seconds']:.1f} | {rel} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot_bytes(out: Path, results: list[dict[str, Any]]) -> Path:
    """accuracy_vs_bytes.png: accuracy vs cumulative total bytes; uplink only on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in results:
        rows = r["rows"]
        if r["name"] == "centralized" or not rows:
            continue  # sends nothing: no place on a log axis
        acc = [100 * row["accuracy"] for row in rows]
        up = [row["cumulative_uplink_bytes"] / 1e6 for row in rows]
        total = [
            u + row["cumulative_downlink_bytes"] / 1e6 for u, row in zip(up, rows, strict=True)
        ]
        left.plot(total, acc, "o-", ms=4, label=r["name"])
        right.plot(up, acc, "o-", ms=4, label=r["name"])
    for ax, what in ((left, "uplink + downlink"), (right, "uplink only")):
        ax.set_xscale("log")
        ax.set_xlabel(f"cumulative MB sent, {what} (log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Test accuracy vs bytes sent", x=0.02, ha="left", fontweight="bold")
    fig.tight_layout()
    path = out / "accuracy_vs_bytes.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="feddistill bench fed",
        description=__doc__.split("\n\nUsage")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="server rounds of every run (default 10; 20 with --regime label-skew)",
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
        default=None,
        help=f"comma list of strategies to run (default all: {','.join(STRATEGIES)}; "
        f"{','.join(fed_label_skew.STRATEGIES)} with --regime label-skew)",
    )
    parser.add_argument(
        "--regime",
        choices=("kmeans", "label-skew"),
        default="kmeans",
        help="kmeans: the default job's 4 KMeans clients (default); label-skew: 10 "
        "Dirichlet(0.1) clients, 20 rounds, in process (feddistill/benchmarks/fed_label_skew.py)",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="add a 100-client Dirichlet run (10%% of clients per round) with peak memory",
    )
    parser.add_argument(
        "--pruning",
        action="store_true",
        help="add issue 12's rows (feddistill/benchmarks/fed_pruning.py, in process): dense vs 80%% "
        "in-loop mask vs half the channels (Taylor, L2), the exported int8 students and the student train time",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for every run (repeatable), e.g. --set dataset=digits",
    )
    args = parser.parse_args(argv)
    skew = args.regime == "label-skew"
    if skew and (args.scale or args.pruning):
        parser.error("--scale and --pruning add rows to the kmeans regime, not to label-skew")
    default_rounds = fed_label_skew.ROUNDS if skew else 10
    rounds = default_rounds if args.rounds is None else args.rounds
    only = args.only or ",".join(fed_label_skew.STRATEGIES if skew else STRATEGIES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [f"num-server-rounds={rounds}", f"seed={args.seed}", *args.set]
    results = []
    for name in [s for s in only.split(",") if s]:
        if name not in STRATEGIES:
            parser.error(f"--only: unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
        if skew:
            overrides = fed_label_skew.overrides(name, rounds, args.seed, args.set)
            overrides += EXTRA.get(name, [])
            results.append(run_one(name, overrides, out / name, fed_label_skew.ENGINE))
        else:
            overrides = [*common, f"strategy={name!r}", *EXTRA.get(name, [])]
            results.append(run_one(name, overrides, out / name))
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
    if args.pruning:
        from feddistill.benchmarks import fed_pruning

        sets = [f"--set={s}" for s in [f"seed={args.seed}", *args.set]]
        fed_pruning.main(["--rounds", str(rounds), "--out", str(out / "pruning"), *sets])
    table = markdown(results)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(
        json.dumps([{k: v for k, v in r.items() if k != "rows"} for r in results], indent=2)
    )
    plot_curves(
        out, {r["name"]: r["rows"] for r in results if r["name"] != "centralized" and r["rows"]}
    )
    plot_bytes(out, results)
    print(table)
    return 0 if all(r["status"] == "completed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
