"""``feddistill compare DIR...``: several runs in one table and on shared plots.

Runs whose configs differ only in ``seed`` (and in where they live: ``out-dir``,
``data-root``, ``resume``) form one group: the table shows each run and, for a group
of two or more, a mean +- std row (sample standard deviation, n - 1); the plots draw
each group's mean with a +-1 std band over the rounds all its runs have.

Writes ``compare.md``, ``compare.json``, ``compare_accuracy_vs_round.png`` and
``compare_accuracy_vs_bytes.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feddistill.run_folder import RunFolder
from feddistill.server.provenance import LOCAL_KEYS

IGNORED_KEYS = (*LOCAL_KEYS, "seed")
MB = 1e6
# summary / last-row value -> column title
COLUMNS = (
    ("final_accuracy", "final acc %"),
    ("best_accuracy", "best acc %"),
    ("worst_domain_accuracy", "worst domain %"),
    ("uplink_mb", "uplink MB"),
    ("downlink_mb", "downlink MB"),
    ("wall_seconds", "wall s"),
)
PERCENT = {"final_accuracy", "best_accuracy", "worst_domain_accuracy"}


@dataclass
class Run:
    """One finished run read back from its out-dir."""

    path: Path
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    values: dict[str, float]


@dataclass
class Group:
    """Runs of one config (all seeds) and the label that tells it from the others."""

    label: str
    runs: list[Run] = field(default_factory=list)


def load_run(path: Path) -> Run:
    """Read ``summary.json`` and ``metrics.jsonl`` of the run in `path`.

    Raises:
        ValueError: if `path` holds no summary.json / metrics.jsonl, or the run did not
            complete (the message names the folder and its status).
    """
    folder = RunFolder(path)
    summary_path, metrics_path = folder.summary, folder.metrics_jsonl
    if not summary_path.is_file() or not metrics_path.is_file():
        raise ValueError(
            f"{str(path)!r} holds no finished feddistill run (summary.json and "
            "metrics.jsonl are needed)"
        )
    summary = json.loads(summary_path.read_text())
    if summary.get("status") != "completed":
        raise ValueError(
            f"{str(path)!r}: the run's status is {summary.get('status')!r}; "
            "only completed runs can be compared"
        )
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    last = rows[-1] if rows else {}
    values = {
        "final_accuracy": summary.get("final_accuracy"),
        "best_accuracy": summary.get("best_accuracy"),
        "worst_domain_accuracy": last.get("worst_domain_accuracy"),
        "uplink_mb": summary.get("uplink_bytes", 0) / MB,
        "downlink_mb": summary.get("downlink_bytes", 0) / MB,
        "wall_seconds": summary.get("wall_seconds"),
    }
    clean = {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
    return Run(path, dict(summary.get("config", {})), rows, clean)


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Group runs by config without :data:`IGNORED_KEYS`, in first-seen order.

    A group's label is its strategy, plus ``key=value`` for each key whose value differs
    between groups (e.g. ``feddistill update-bit-width=8``).
    """
    keyed: dict[str, list[Run]] = {}
    for run in runs:
        key = json.dumps(
            {k: v for k, v in sorted(run.config.items()) if k not in IGNORED_KEYS}, default=str
        )
        keyed.setdefault(key, []).append(run)
    configs = [group[0].config for group in keyed.values()]
    varying = sorted(
        k
        for k in {k for c in configs for k in c}
        if k not in IGNORED_KEYS
        and k != "strategy"
        and len({json.dumps(c.get(k), default=str) for c in configs}) > 1
    )
    groups = []
    for members in keyed.values():
        cfg = members[0].config
        label = " ".join([str(cfg.get("strategy")), *(f"{k}={cfg.get(k)}" for k in varying)])
        groups.append(Group(label, members))
    return groups


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0.0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(key: str, value: float) -> str:
    return (
        f"{100 * value:.2f}"
        if key in PERCENT
        else f"{value:.3f}"
        if "mb" in key
        else f"{value:.1f}"
    )


def table_rows(groups: Sequence[Group]) -> list[list[str]]:
    """Table cells: one row per run, and a ``mean +- std (n=k)`` row per multi-run group."""
    out = []
    for group in groups:
        for run in group.runs:
            cells = [group.label, str(run.config.get("seed", "")), str(run.path)]
            cells += [_cell(k, run.values[k]) if k in run.values else "" for k, _ in COLUMNS]
            out.append(cells)
        if len(group.runs) > 1:
            cells = [group.label, f"mean +- std (n={len(group.runs)})", ""]
            for key, _ in COLUMNS:
                values = [r.values[key] for r in group.runs if key in r.values]
                if len(values) == len(group.runs):
                    mean, std = mean_std(values)
                    cells.append(f"{_cell(key, mean)} +- {_cell(key, std)}")
                else:
                    cells.append("")
            out.append(cells)
    return out


def markdown(groups: Sequence[Group]) -> str:
    """The comparison as a markdown table."""
    header = ["run", "seed", "folder", *(title for _, title in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(groups)]
    return "\n".join(lines) + "\n"


def curve(group: Group, key: str, scale: float) -> tuple[list[int], list[float], list[float]]:
    """Rounds, mean and std of ``row[key] * scale`` over the rounds every run has."""
    rounds = min(len(run.rows) for run in group.runs)
    means, stds = [], []
    for i in range(rounds):
        mean, std = mean_std([scale * float(run.rows[i].get(key, 0.0)) for run in group.runs])
        means.append(mean)
        stds.append(std)
    return [int(group.runs[0].rows[i]["round"]) for i in range(rounds)], means, stds


def plot(groups: Sequence[Group], out: Path) -> list[Path]:
    """The two overlaid plots: accuracy vs round, accuracy vs cumulative total MB sent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from feddistill.server.plots import readable_log_axis

    datasets = sorted({str(r.config.get("dataset")) for g in groups for r in g.runs})
    seeds = ", ".join(f"{g.label}: {len(g.runs)} seed(s)" for g in groups)
    subtitle = f"{', '.join(datasets)}; mean +- 1 std over seeds; {seeds}"
    paths = []
    for name, title in (
        ("compare_accuracy_vs_round.png", "Test accuracy per round"),
        ("compare_accuracy_vs_bytes.png", "Test accuracy vs bytes sent (uplink + downlink)"),
    ):
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        fig.suptitle(title, fontsize=12, fontweight="bold", x=0.02, ha="left")
        ax.set_title(subtitle, fontsize=8, loc="left", color="dimgray")
        for group in groups:
            rounds, acc, acc_std = curve(group, "accuracy", 100.0)
            if name.endswith("round.png"):
                xs: list[float] = [float(r) for r in rounds]
            elif not any(r.values.get("uplink_mb") for r in group.runs):
                continue  # sends nothing (centralized): no place on a log axis
            else:
                _, up, _ = curve(group, "cumulative_uplink_bytes", 1 / MB)
                _, down, _ = curve(group, "cumulative_downlink_bytes", 1 / MB)
                xs = [u + d for u, d in zip(up, down, strict=True)]
            n = f" (n={len(group.runs)})" if len(group.runs) > 1 else ""
            (line,) = ax.plot(xs, acc, "o-", ms=4, label=group.label + n)
            if len(group.runs) > 1:
                low = [m - s for m, s in zip(acc, acc_std, strict=True)]
                high = [m + s for m, s in zip(acc, acc_std, strict=True)]
                ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2)
        if name.endswith("round.png"):
            ax.set_xlabel("round")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            readable_log_axis(ax.xaxis)
            ax.set_xlabel("cumulative MB sent, all clients (log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)
    return paths


def compare(dirs: Sequence[Path], out: Path) -> tuple[list[Group], list[Path]]:
    """Load the runs in `dirs`, write the table and plots to `out`.

    Args:
        dirs: run folders (each with summary.json and metrics.jsonl).
        out: output folder (created).

    Returns:
        The groups and the files written.

    Raises:
        ValueError: see :func:`load_run`; also if a folder is given twice.
    """
    resolved = [Path(d).resolve() for d in dirs]
    if len(set(resolved)) < len(resolved):
        raise ValueError("a run folder is given more than once")
    groups = group_runs([load_run(path) for path in resolved])
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(markdown(groups))
    data = [
        {
            "label": g.label,
            "runs": [
                {"path": str(r.path), "seed": r.config.get("seed"), **r.values} for r in g.runs
            ],
        }
        for g in groups
    ]
    (out / "compare.json").write_text(json.dumps(data, indent=2) + "\n")
    return groups, [out / "compare.md", out / "compare.json", *plot(groups, out)]


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``feddistill compare``."""
    parser = subparsers.add_parser(
        "compare",
        help="compare finished runs: one table, overlaid accuracy plots, mean +- std over seeds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run folders (out-dirs)")
    parser.add_argument(
        "--out", default="results/compare", help="output folder (default results/compare)"
    )
    parser.set_defaults(func=cmd_compare)
    return parser


def cmd_compare(args: argparse.Namespace) -> int:
    """Print the comparison table and say where the files went."""
    from rich.table import Table

    from feddistill.terminal import make_console

    console = make_console()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a folder for the comparison")
    groups, files = compare([Path(d) for d in args.dirs], out)
    table = Table("run", "seed", "folder", *(title for _, title in COLUMNS))
    for cells in table_rows(groups):
        table.add_row(*cells)
    console.print(table)
    console.print(f"written: {', '.join(str(f) for f in files)}")
    return 0
