"""Side-by-side federated benchmark on MNIST-5k (also `feddistill bench fed`).

Runs feddistill, fedavg, fedavg-compressed, fedmd, feddf, logits-only (clients
`mlp,cnn-small,cnn,cnn-small`, no weights sent) and centralized with the same
seed, data and round count (default 10 rounds, 4 KMeans clients), each through the real
engine (private SuperLink + Flower simulation on Ray; centralized in process), and
writes `results.json`, `results.md` (final / best accuracy, worst-domain accuracy,
uplink, downlink and total bytes, FedAvg's fp32 uplink and total over each run's,
wall seconds), `accuracy_vs_bytes.png` (accuracy vs total bytes; uplink only in a
second panel), `accuracy_vs_uplink.png` and `accuracy_vs_round.png`.
`--scale` adds tiny clients: 100 Dirichlet clients (~30 samples each), 10% per round,
`local-steps` and `teacher-local-steps` SGD steps per round (`--scale-local-steps`, both),
feddistill and fedavg for `--scale-rounds` rounds,
reporting peak resident memory of the whole process tree and the first round (and
in-run seconds) at which each reaches `--scale-target` accuracy (scale.md).

`--regime label-skew` runs feddistill (``coverage-era`` consensus, server distillation in
rounds 1-5), feddistill-domain
(the default consensus), fedavg and fedavg-compressed on 10 Dirichlet(0.1) label-skewed
clients for 20 rounds, in process
(:mod:`feddistill.benchmarks.fed_label_skew`); with `--seeds` once per seed.

Usage: python -m feddistill.benchmarks.fed_mnist5k [--rounds 10] [--out DIR] [--only a,b] [--scale]
       [--scale-rounds 60] [--scale-local-steps 20] [--scale-target 0.85] [--engine E]
       feddistill bench fed --regime label-skew [--seeds 0,1,2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from feddistill.benchmarks import fed_label_skew
from feddistill.benchmarks.overhead import PeakRss
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


def run_one(
    name: str, overrides: list[str], out: Path, engine: str = "simulation"
) -> dict[str, Any]:
    cfg = load_config(None, [*overrides, f"out-dir={str(out.resolve())!r}"])
    t0 = time.perf_counter()
    mem = PeakRss(os.getpid())  # this process and all it starts (Ray, Flower)
    mem.start()
    try:
        summary = run_job(cfg, quiet=True, engine=engine)
    finally:
        mem.stop()
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


SCALE = [
    "partitioner='dirichlet'",
    "num-partitions=100",
    "dirichlet-alpha=1.0",
    "min-partition-size=5",
    "fraction-train=0.1",
    "min-train-nodes=5",
]
# A consensus of 10 teachers that each saw ~30 samples is ~70 % right: distilling the
# FedAvg student to it lifts rounds 1-2 and caps it later (README "Tiny clients").
SCALE_SERVER_DISTILL_ROUNDS = 3


def scale_overrides(
    strategy: str, rounds: int, local_steps: int, seed: int, sets: list[str]
) -> list[str]:
    """Config of one tiny-clients run: 100 Dirichlet clients, 10 % per round.

    Students and teachers both make ``local_steps`` steps per round (``local-steps``,
    ``teacher-local-steps``); feddistill distills on the server in rounds 1-3 only
    (``SCALE_SERVER_DISTILL_ROUNDS``); ``sets`` (the user's ``--set``) come last and win.
    """
    extra = (
        [f"server-distill-rounds={SCALE_SERVER_DISTILL_ROUNDS}"] if strategy == "feddistill" else []
    )
    return [
        *SCALE,
        f"num-server-rounds={rounds}",
        f"local-steps={local_steps}",
        f"teacher-local-steps={local_steps}",  # feddistill's teachers too
        f"seed={seed}",
        f"strategy={strategy!r}",
        *extra,
        *sets,
    ]


def run_scale(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    """The tiny-clients runs: feddistill and fedavg on 100 Dirichlet clients."""
    runs = []
    for strategy in [s for s in args.scale_only.split(",") if s]:
        overrides = scale_overrides(
            strategy, args.scale_rounds, args.scale_local_steps, args.seed, args.set
        )
        name = f"{strategy}-100-dirichlet-10pct"
        runs.append(run_one(name, overrides, out / f"scale100-{strategy}", args.engine))
    return runs


def first_round_at(rows: list[dict[str, Any]], target: float) -> tuple[int, float] | None:
    """(first round with accuracy >= target, in-run seconds up to it), or None.

    Args:
        rows: metrics rows in round order (``round``, ``accuracy``, ``round_seconds``).
        target: accuracy in [0, 1].
    """
    seconds = 0.0
    for row in rows:
        seconds += float(row.get("round_seconds", 0.0))
        if row["accuracy"] >= target:
            return int(row["round"]), seconds
    return None


def scale_markdown(runs: list[dict[str, Any]], target: float) -> str:
    """Rounds and seconds to `target`, final accuracy and peak RSS of the scale runs."""
    lines = [
        f"| run | rounds | final acc | best acc | first round >= {100 * target:.0f}% "
        "| in-run s to it | in-run s total | peak RSS GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        hit = first_round_at(r["rows"], target)
        reached = f"{hit[0]} | {hit[1]:.0f}" if hit else "not reached | -"
        lines.append(
            f"| {r['name']} | {len(r['rows'])} | {100 * r['final_accuracy']:.1f}% "
            f"| {100 * r['best_accuracy']:.1f}% | {reached} | {r['wall_seconds']:.0f} "
            f"| {r['peak_rss_mb'] / 1024:.2f} |"
        )
    return "\n".join(lines) + "\n"


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
        "--scale-rounds", type=int, default=60, help="rounds of the --scale runs (default 60)"
    )
    parser.add_argument(
        "--scale-local-steps",
        type=int,
        default=20,
        help="local-steps and teacher-local-steps of the --scale runs (default 20; 0 = one "
        "local epoch)",
    )
    parser.add_argument(
        "--scale-only",
        default="feddistill,fedavg",
        help="comma list of strategies of the --scale runs (default feddistill,fedavg)",
    )
    parser.add_argument(
        "--scale-target",
        type=float,
        default=0.85,
        help="accuracy whose first round --scale reports (default 0.85)",
    )
    parser.add_argument(
        "--engine",
        default="simulation",
        choices=("simulation", "inprocess"),
        help="engine of every federated run (default simulation; inprocess: same code, one "
        "process, no Ray start-up; its memory is not the simulation's)",
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
    default_only = ",".join(fed_label_skew.STRATEGIES if skew else STRATEGIES)
    only = default_only if args.only is None else args.only  # --only "": none (e.g. --scale)
    names = [s for s in only.split(",") if s]
    allowed = list(dict.fromkeys([*fed_label_skew.STRATEGIES, *STRATEGIES])) if skew else STRATEGIES
    for name in names:  # before the out-dir is touched
        if name not in allowed:
            parser.error(f"--only: unknown strategy {name!r}; choose from {', '.join(allowed)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [f"num-server-rounds={rounds}", f"seed={args.seed}", *args.set]
    results = []
    for name in names:
        if skew:
            overrides = fed_label_skew.overrides(name, rounds, args.seed, args.set)
            overrides += EXTRA.get(name, [])
            results.append(run_one(name, overrides, out / name, fed_label_skew.ENGINE))
        else:
            overrides = [*common, f"strategy={name!r}", *EXTRA.get(name, [])]
            results.append(run_one(name, overrides, out / name, args.engine))
        print(
            f"{name}: final {100 * results[-1]['final_accuracy']:.1f}%", file=sys.stderr, flush=True
        )
    if args.scale:
        scale_runs = run_scale(args, out)
        results += scale_runs
        (out / "scale.md").write_text(scale_markdown(scale_runs, args.scale_target))
        print(scale_markdown(scale_runs, args.scale_target))
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
