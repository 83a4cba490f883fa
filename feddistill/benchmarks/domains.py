"""Cross-domain benchmark (``feddistill bench domains``): source -> target distillation.

Tasks: leave-one-domain-out over ``mnist5k-rotated`` (5 clients, one per source domain;
by default the targets 0, 30 and 75 degrees, ``--targets all`` for all 6) and both
directions of ``digits-mix`` (mnist5k -> digits and digits -> mnist5k, 2 clients on the
source domain). The target domain's training inputs are the unlabeled proxy set; its
test samples give the headline metric.

Settings (``COMMON``, change with ``--set``): ``cnn-small`` teachers and student, 2
teacher epochs per round, dense fp32 student updates for every method; one torch
thread per run (the clients' ``client-num-cpus=1`` too).

Methods, all through the same harness (the real ServerApp loop and ClientApp, run in
process by :func:`feddistill.inprocess.run_in_process`, no Ray):

- ``feddistill`` (consensus ``domain``), ``feddistill-kv`` (KD3A Knowledge Vote),
  ``feddistill-cf`` (KD3A Consensus Focus), ``feddistill-cm`` (``cluster-mean``);
- ``fedmd``, ``feddf`` (proxy = target inputs), ``fedavg`` (source-only: it never sees
  target data), ``centralized`` (source-only: pooled source labels);
- ``oracle``: the student trained on the target's own labels (upper bound; the only
  run that reads target labels).

Cut to fit 60 minutes on 2 cores: 5 rounds (a 10-round feddistill run on 0 degrees:
target accuracy 0.16, 0.31, 0.39, 0.48, 0.37, 0.47, 0.46 at rounds 1-7, no gain after
round 4) and 3 of the 6 rotated targets (0 and 75 degrees, the two ends, and 30
degrees): 15 task-seeds x 9 methods = 135 runs, ``--jobs`` at a time (default: the
usable cores, at most 4; one process and one torch thread per run). Measured on the
2-core machine (``--jobs 2``): the default run took 26.7 min wall and 33.6 CPU-min
(feddistill about 23 CPU-s per run, FedAvg 8). The "Cost" table of results.md gives the
measured CPU seconds per run and the totals.

Every (task, method, seed) writes its run folder under ``<out>/runs`` with its cost
(``bench_cost.json``) and config (``bench_config.json``); a finished run is reused when
the benchmark is started again with the same config for it, and the runs go seed by
seed, so an interrupted benchmark keeps every finished run. Outputs:
``results.csv`` (one row per run), ``results.md`` (mean ± std over seeds per task, the
average over target domains, uplink / downlink MB per run, CPU seconds per run and the
totals of wall and CPU time) and ``target_accuracy.png``.

Usage: feddistill bench domains [--seeds 0,1,2] [--rounds 5] [--suites rotated,digits]
       [--targets 0,2,5 | all] [--methods a,b] [--out results/bench-domains]
       [--jobs N] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from feddistill.benchmarks.domain_runs import (
    MAX_DEFAULT_JOBS,
    cpu_seconds,
    default_jobs,
    run_plan,
)
from feddistill.config import from_mapping
from feddistill.config_load import parse_overrides
from feddistill.seeds import format_mean_std, mean_std, parse_seeds

NATIVE_SEEDS = True  # `feddistill bench domains --seeds` is handled here, not by the runner

METHODS: dict[str, dict[str, Any]] = {
    "feddistill": {"strategy": "feddistill", "consensus": "domain"},
    "feddistill-kv": {"strategy": "feddistill", "consensus": "knowledge-vote"},
    "feddistill-cf": {"strategy": "feddistill", "consensus": "consensus-focus"},
    "feddistill-cm": {"strategy": "feddistill", "consensus": "cluster-mean"},
    "fedmd": {"strategy": "fedmd"},
    "feddf": {"strategy": "feddf"},
    "fedavg": {"strategy": "fedavg"},
    "centralized": {"strategy": "centralized"},
    "oracle": {"strategy": "centralized"},  # trained on the target's labels (see run_oracle)
}
SUITES: dict[str, dict[str, Any]] = {
    "rotated": {
        "dataset": "mnist5k-rotated",
        "targets": {f"{15 * d}deg": d for d in range(6)},
        "num-partitions": 5,
    },
    "digits": {
        "dataset": "digits-mix",
        "targets": {"mnist5k->digits": 1, "digits->mnist5k": 0},
        "num-partitions": 2,
    },
}
# Small models, dense fp32 student updates for every method (this benchmark compares the
# distillation across domains; `bench fed` / `bench compression` measure compression),
# teachers trained 2 epochs per round so that the vote has confident teachers early.
COMMON = {
    "partitioner": "domain",
    "teacher-models": "cnn-small",
    "student-model": "cnn-small",
    "teacher-epochs": 2,
    "update-density": 1.0,
    "update-bit-width": 32,
    "device": "cpu",
}


# Keys each run gets from the benchmark itself (suite, task, method, seed, --rounds): a
# `--set` of one of them would relabel the rows, so it is refused.
PER_RUN_KEYS = (
    "dataset",
    "num-partitions",
    "target-domains",
    "num-server-rounds",
    "seed",
    "strategy",
    "consensus",
    "out-dir",
)
# Cut to fit 60 minutes on 2 cores (see the module docstring for the measurements).
DEFAULT_ROUNDS = 5
DEFAULT_TARGETS = "0,2,5"


def markdown(rows: list[dict[str, Any]], methods: list[str]) -> str:
    """One table per suite: target accuracy mean ± std per task, their average, bytes."""
    lines: list[str] = []
    for suite in dict.fromkeys(r["suite"] for r in rows):
        srows = [r for r in rows if r["suite"] == suite]
        tasks = list(dict.fromkeys(r["task"] for r in srows))
        seeds = sorted({r["seed"] for r in srows})
        lines += [
            f"### {suite} ({SUITES[suite]['dataset']}): target accuracy (%), mean ± std over "
            f"seeds {','.join(map(str, seeds))}",
            "",
            "| method | "
            + " | ".join(tasks)
            + " | average | source acc (avg) | uplink MB/run | downlink MB/run |",
            "|" + "---|" * (len(tasks) + 5),
        ]
        for m in methods:
            mrows = [r for r in srows if r["method"] == m]
            if not mrows:
                continue
            cells = []
            for t in tasks:
                vals = [r["target_accuracy"] for r in mrows if r["task"] == t]
                cells.append(format_mean_std(vals) if vals else "-")
            # average over tasks per seed (only seeds that ran every task), then mean ± std
            per_seed = [[r["target_accuracy"] for r in mrows if r["seed"] == s] for s in seeds]
            avg = [sum(v) / len(v) for v in per_seed if len(v) == len(tasks)]
            src = [sum(v) / len(v) for v in ([r["source_accuracy"] for r in mrows],)]
            up = mean_std([r["uplink_bytes"] / 1e6 for r in mrows])[0]
            down = mean_std([r["downlink_bytes"] / 1e6 for r in mrows])[0]
            lines.append(
                f"| {m} | "
                + " | ".join(cells)
                + f" | {format_mean_std(avg) if avg else '-'} | {100 * src[0]:.1f} "
                f"| {up:.2f} | {down:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def cost_table(rows: list[dict[str, Any]], methods: list[str], wall_s: float, cpu_s: float) -> str:
    """What the benchmark cost: CPU seconds per run by method and suite, and in total.

    Args:
        rows: one dict per run with ``suite``, ``method``, ``cpu_seconds`` (user + system
            seconds of the run, 0.0 when it was reused without a recorded cost).
        methods: the table's methods, in order.
        wall_s: wall-clock seconds of this invocation.
        cpu_s: CPU seconds of this invocation (reused runs cost nothing here).

    Returns:
        Markdown: a table of mean CPU seconds per run, then the totals line.
    """
    suites = list(dict.fromkeys(r["suite"] for r in rows))
    lines = [
        "| method | " + " | ".join(f"{s} CPU-s/run" for s in suites) + " |",
        "|" + "---|" * (len(suites) + 1),
    ]
    for m in methods:
        cells = []
        for s in suites:
            vals = [r["cpu_seconds"] for r in rows if r["suite"] == s and r["method"] == m]
            cells.append(f"{sum(vals) / len(vals):.0f}" if vals else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    recorded = sum(r["cpu_seconds"] for r in rows)
    lines += [
        "",
        f"Time: this invocation {wall_s / 60:.1f} min wall, {cpu_s / 60:.1f} CPU-min; "
        f"all {len(rows)} runs (reused ones included) {recorded / 60:.1f} CPU-min "
        "(user + system, the process and its children).",
        "",
    ]
    return "\n".join(lines)


EPS = 1e-9  # averages of the same numbers in another order differ in the last bits


def check_targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets per suite: feddistill >= fedavg + 3 points and >= feddf."""
    out = []
    for suite in dict.fromkeys(r["suite"] for r in rows):

        def avg(method: str, suite: str = suite) -> float | None:
            vals = [
                r["target_accuracy"] for r in rows if r["suite"] == suite and r["method"] == method
            ]
            return sum(vals) / len(vals) if vals else None

        best = max(
            (m for m in METHODS if m.startswith("feddistill") and avg(m) is not None),
            key=lambda m: avg(m) or 0.0,
            default=None,
        )
        fd, fa, df = avg("feddistill"), avg("fedavg"), avg("feddf")
        if fd is None or fa is None or df is None:
            continue
        out.append(
            f"{suite}: feddistill {100 * fd:.1f} vs fedavg + 3 = {100 * fa + 3:.1f} "
            f"({'met' if fd >= fa + 0.03 - EPS else 'MISSED'}), vs feddf {100 * df:.1f} "
            f"({'met' if fd >= df - EPS else 'MISSED'}); best feddistill mode: {best} "
            f"{100 * ((avg(best) if best else None) or 0):.1f}"
        )
    return out


def plot(rows: list[dict[str, Any]], methods: list[str], path: Path) -> None:
    """Bar chart: target accuracy averaged over tasks, mean ± std over seeds, per suite."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = list(dict.fromkeys(r["suite"] for r in rows))
    fig, axes = plt.subplots(1, len(suites), figsize=(5 * len(suites), 4), squeeze=False)
    for ax, suite in zip(axes[0], suites, strict=True):
        names, means, stds = [], [], []
        for m in methods:
            seeds = sorted({r["seed"] for r in rows if r["suite"] == suite and r["method"] == m})
            per_seed = []
            for s in seeds:
                v = [
                    r["target_accuracy"]
                    for r in rows
                    if r["suite"] == suite and r["method"] == m and r["seed"] == s
                ]
                per_seed.append(sum(v) / len(v))
            if per_seed:
                mu, sd = mean_std(per_seed)
                names.append(m)
                means.append(100 * mu)
                stds.append(100 * sd)
        ax.bar(range(len(names)), means, yerr=stds, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("target accuracy (%)")
        ax.set_title(suite)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tasks(
    seeds: list[int], suites: list[str], rotated_targets: set[int]
) -> list[tuple[int, str, str, int]]:
    """The benchmark's (seed, suite, task, target domain) in run order, seed by seed: an
    interrupted benchmark has every task of its first seeds (their averages over target
    domains can be read), not every seed of its first tasks.

    Args:
        seeds: the seeds, in order.
        suites: names in ``SUITES``.
        rotated_targets: the ``rotated`` suite's target domains (ids 0-5); other suites
            run all their targets.

    Returns:
        One tuple per task and seed.
    """
    return [
        (seed, suite, task, target)
        for seed in seeds
        for suite in suites
        for task, target in SUITES[suite]["targets"].items()
        if suite != "rotated" or target in rotated_targets
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="feddistill bench domains", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma list of seeds (default 0,1,2)")
    parser.add_argument(
        "--rounds", type=int, default=DEFAULT_ROUNDS, help=f"default {DEFAULT_ROUNDS} (cut from 10)"
    )
    parser.add_argument(
        "--suites",
        default="rotated,digits",
        help=f"comma list of suites (default rotated,digits; from: {', '.join(SUITES)})",
    )
    parser.add_argument(
        "--targets",
        default=DEFAULT_TARGETS,
        help=f"rotated suite: comma list of target domains 0-5 (default {DEFAULT_TARGETS}: "
        "0, 30 and 75 degrees, cut from all 6; 'all' for every one)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma list of methods (default all: {', '.join(METHODS)})",
    )
    parser.add_argument("--out", default="results/bench-domains")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key of every run (repeatable); not the keys the benchmark "
        f"sets per run ({', '.join(PER_RUN_KEYS)})",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=default_jobs(),
        help="runs at once, one process and one torch thread each (default: the usable "
        f"cores, at most {MAX_DEFAULT_JOBS}; 1 runs them in this process)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be an integer >= 1, got {args.jobs}")
    if args.rounds < 1:
        parser.error(f"--rounds must be an integer >= 1, got {args.rounds}")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        parser.error(str(exc))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    for name, allowed, kind in ((methods, METHODS, "method"), (suites, SUITES, "suite")):
        if not name:
            parser.error(f"--{kind}s is empty; give a comma list from: {', '.join(allowed)}")
        bad = [n for n in name if n not in allowed]
        if bad:
            parser.error(f"unknown {kind}(s) {bad}; choose from {', '.join(allowed)}")
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.targets != "all" and not all(t in map(str, range(6)) for t in names):
        parser.error(f"--targets must be 'all' or a comma list of 0-5, got {args.targets!r}")
    if "rotated" in suites and args.targets != "all" and not names:
        parser.error("--targets is empty; give 'all' or a comma list of 0-5")
    rotated_targets = set(range(6)) if args.targets == "all" else {int(t) for t in names}
    out = Path(args.out).resolve()
    if out.exists() and not out.is_dir():
        parser.error(f"--out '{out}' is a file; give a folder")
    extra = parse_overrides(args.set)
    taken = sorted({k.replace("_", "-") for k in extra} & set(PER_RUN_KEYS))  # either spelling
    if taken:
        parser.error(
            f"--set {', '.join(taken)}: set by the benchmark for each run; use --seeds, "
            "--rounds, --suites, --targets or --methods instead"
        )
    out.mkdir(parents=True, exist_ok=True)
    plan: list[tuple[str, str, str, int, dict[str, Any]]] = []
    for seed, suite, task, target in tasks(seeds, suites, rotated_targets):
        spec = SUITES[suite]
        for method in methods:
            run_dir = out / "runs" / suite / task.replace(">", "") / method / f"seed-{seed}"
            mapping = {
                **COMMON,
                "dataset": spec["dataset"],
                "num-partitions": spec["num-partitions"],
                "target-domains": str(target),
                "num-server-rounds": args.rounds,
                "seed": seed,
                **METHODS[method],
                **extra,
                "out-dir": str(run_dir),
            }
            from_mapping(mapping)  # a bad --set fails here, before any run starts
            plan.append((suite, task, method, seed, mapping))
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    rows = run_plan(plan, args.jobs, out / "results.csv")
    table = markdown(rows, methods)
    verdict = check_targets(rows)
    text = (
        f"## feddistill bench domains ({args.rounds} round{'' if args.rounds == 1 else 's'}, "
        "cnn-small teachers and student)\n\n"
        + table
        + ("\nTargets (average over target domains):\n\n" if verdict else "")
        + "".join(f"- {v}\n" for v in verdict)
        + "\nCost:\n\n"
        + cost_table(rows, methods, time.perf_counter() - t0, cpu_seconds() - cpu0)
    )
    (out / "results.md").write_text(text)
    if rows:
        plot(rows, methods, out / "target_accuracy.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
