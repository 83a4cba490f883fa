"""Results a user gets: metrics.csv / metrics.jsonl (one row per round), summary.json,
report.md and PNG plots. Written incrementally so a killed run keeps what it had."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from feddistill.atomic import atomic_write_text
from feddistill.config import RunConfig
from feddistill.run_folder import RunFolder

logger = logging.getLogger(__name__)

TIMING_COLUMNS = ("round_seconds", "wall_seconds")


def save_run_config(cfg: RunConfig) -> None:
    """Write ``<out-dir>/run-config.json`` (kebab-case keys), which --resume reads back."""
    RunFolder(cfg.out_dir).write_run_config(cfg.to_kebab())


def write_rows(out_dir: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """(Re)write metrics.csv and metrics.jsonl from all rows so far (atomic replace)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:  # lists (per-client events) go to metrics.jsonl only
        columns += [k for k in row if k not in columns and not isinstance(row[k], list | dict)]
    folder = RunFolder(out_dir)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k, "")) for k in columns})
    atomic_write_text(folder.metrics_csv, buffer.getvalue())
    jsonl = "".join(json.dumps(dict(row), sort_keys=False) + "\n" for row in rows)
    atomic_write_text(folder.metrics_jsonl, jsonl)


def _fmt(value: Any) -> Any:
    """A CSV / markdown cell: floats to 6 significant digits, None (not measured) empty."""
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


def write_summary(out_dir: Path, summary: Mapping[str, Any]) -> None:
    """summary.json (atomic replace)."""
    atomic_write_text(
        RunFolder(out_dir).summary, json.dumps(dict(summary), indent=2, default=str) + "\n"
    )


def write_report(
    out_dir: Path, summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
) -> None:
    """report.md: what was run and how to repeat it, the results, a per-round table.

    Sections: title (strategy and dataset) and a one-line run description; results;
    how to reproduce (the command as typed, an equivalent command from the config, the
    full config table, package versions, the machine); the exported student; rounds.
    """
    from feddistill.progress import ratio_phrase
    from feddistill.server.plots import describe_run, domain_keys
    from feddistill.server.provenance import (
        equivalent_command,
        machine,
        package_versions,
        typed_command,
    )

    config = dict(summary.get("config", {}))
    lines = [
        f"# {summary.get('strategy')} on {config.get('dataset')}: feddistill run report",
        "",
        describe_run(config) + ".",
        "",
        "## Results",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in (
        "status",
        "rounds",
        "final_accuracy",
        "best_accuracy",
        "final_worst_domain_accuracy",
        "uplink_bytes",
        "downlink_bytes",
        "uplink_ratio_vs_fedavg_fp32",
        "total_ratio_vs_fedavg_fp32",
        "wall_seconds",
    ):
        if key in summary and summary[key] is not None:
            value = summary[key]
            lines.append(
                f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
            )
    ratio = summary.get("uplink_ratio_vs_fedavg_fp32")
    if isinstance(ratio, float) and ratio > 0:
        lines += ["", f"Uplink: {ratio_phrase(ratio)} than FedAvg sending fp32 updates."]
    total = summary.get("total_ratio_vs_fedavg_fp32")
    if isinstance(total, float) and total > 0:
        lines += [f"Uplink + downlink: {ratio_phrase(total)} than fp32 FedAvg."]
    typed = typed_command(out_dir)
    lines += ["", "## Reproduce", ""]
    if typed:
        lines += ["Command as typed:", "", "```sh", typed, "```", ""]
    lines += [
        "The same run from its config (every key that differs from the default):",
        "",
        "```sh",
        equivalent_command(config),
        "```",
        "",
        "### Configuration",
        "",
        "| key | value |",
        "|---|---|",
    ]
    lines += [f"| {key} | {config[key]} |" for key in sorted(config)]
    lines += ["", "### Environment", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {version} |" for name, version in package_versions().items()]
    lines += [f"| {name} | {value} |" for name, value in machine().items()]
    if "student_export" in summary:
        lines += [
            "",
            "## Exported student",
            "",
            "```json",
            json.dumps(summary["student_export"], indent=2),
            "```",
        ]
    cols = [
        "round",
        "accuracy",
        "worst_domain_accuracy",
        *domain_keys(rows),
        "loss",
        "teacher_accuracy",
        "sampled",
        "failed",
        "uplink_bytes",
        "downlink_bytes",
        "cumulative_uplink_bytes",
        "round_seconds",
    ]
    cols = [c for c in cols if any(c in row for row in rows)]
    lines += ["", "## Rounds", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(str(_fmt(row.get(c, ""))) for c in cols) + " |")
    lines += robustness_lines(rows)
    plots = ["accuracy_vs_round.png"]
    if summary.get("uplink_bytes"):
        plots += ["accuracy_vs_uplink.png", "bytes_vs_round.png"]
    plots.append("label_distribution.png")
    lines += [
        "",
        "## Plots",
        "",
        "![accuracy per round](accuracy_vs_round.png)",
        "",
        "Also: " + ", ".join(f"`{p}`" for p in plots[1:]) + "; per-round scalars for "
        "TensorBoard: `tensorboard --logdir tensorboard`.",
        "",
    ]
    RunFolder(out_dir).report.write_text("\n".join(lines))


def robustness_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """report.md's table of per-client actions (clipped, excluded, down-weighted, capped,
    rejected) with their reasons, one line per client and round; none if nothing happened."""
    events = [(row["round"], e) for row in rows for e in row.get("robust_events", [])]
    if not events:
        return []
    lines = [
        "",
        "## Robustness: per-client actions",
        "",
        "| round | partition | action | reason |",
        "|---|---|---|---|",
    ]
    for server_round, e in events:
        pid = e["partition_id"] if e["partition_id"] >= 0 else "?"
        reason = str(e["reason"]).replace("|", "/")
        lines.append(f"| {server_round} | {pid} | {e['action']} | {reason} |")
    return lines


def plot_curves(
    out_dir: Path,
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    suffix: str = "",
    uplink: bool = True,
) -> list[Path]:
    """Accuracy vs round and accuracy vs cumulative uplink bytes, one line per run.

    Args:
        out_dir: where the PNGs go.
        curves: label -> rows (each with round, accuracy, cumulative_uplink_bytes).
        suffix: appended to the file names.
        uplink: also plot accuracy vs uplink bytes (False when nothing is sent).

    Returns:
        The PNG paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    plots = [("round", "round", "accuracy_vs_round")]
    if uplink:
        plots.append(
            (
                "cumulative_uplink_bytes",
                "cumulative uplink bytes (all clients)",
                "accuracy_vs_uplink",
            )
        )
    for x_key, x_label, name in plots:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, rows in curves.items():
            xs = [r[x_key] for r in rows if x_key in r]
            ys = [100 * r["accuracy"] for r in rows if x_key in r]
            ax.plot(xs, ys, marker="o", label=label)
        if x_key == "cumulative_uplink_bytes" and any(
            r.get(x_key, 0) > 0 for rows in curves.values() for r in rows
        ):
            ax.set_xscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{name}{suffix}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
