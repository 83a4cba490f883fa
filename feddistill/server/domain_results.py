"""Results of a cross-domain run: source / target / per-domain accuracy in summary,
report and a plot. Only runs with ``target-domains`` get these (others are unchanged)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from feddistill.data import FederatedData


def domain_summary(data: FederatedData, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """summary.json fields of a run with target domains ({} without).

    Returns:
        ``target_domains``, ``domain_names``, ``final_source_accuracy``,
        ``final_target_accuracy``, ``best_target_accuracy`` and
        ``final_domain_accuracy`` (domain name -> accuracy of the last round).
    """
    if not data.target_domains or not rows:
        return {}
    last = rows[-1]
    names = data.domain_names or tuple(str(d) for d in range(data.num_domains))
    targets = [r["target_accuracy"] for r in rows if not math.isnan(r["target_accuracy"])]
    return {
        "target_domains": list(data.target_domains),
        "domain_names": list(names),
        "final_source_accuracy": last["source_accuracy"],
        "final_target_accuracy": last["target_accuracy"],
        "best_target_accuracy": max(targets) if targets else float("nan"),
        "final_domain_accuracy": {
            names[d]: last[f"domain_{d}_accuracy"]
            for d in range(len(names))
            if f"domain_{d}_accuracy" in last
        },
    }


def domain_report_lines(summary: Mapping[str, Any]) -> list[str]:
    """report.md section: source / target accuracy and a per-domain table."""
    if "final_target_accuracy" not in summary:
        return []
    targets = {summary["domain_names"][d] for d in summary["target_domains"]}
    lines = [
        "",
        "## Domains",
        "",
        f"source accuracy {summary['final_source_accuracy']:.4f}, target accuracy "
        f"{summary['final_target_accuracy']:.4f} (best {summary['best_target_accuracy']:.4f})",
        "",
        "| domain | role | final accuracy |",
        "|---|---|---|",
    ]
    for name, acc in summary["final_domain_accuracy"].items():
        role = "target" if name in targets else "source"
        lines.append(f"| {name} | {role} | {acc:.4f} |")
    return lines


def append_domain_report(out_dir: Path, summary: Mapping[str, Any]) -> None:
    """Append :func:`domain_report_lines` to ``report.md`` (no-op without targets)."""
    lines = domain_report_lines(summary)
    if lines:
        path = out_dir / "report.md"
        path.write_text(path.read_text() + "\n".join(lines) + "\n")


def plot_domain_curves(
    out_dir: Path, data: FederatedData, rows: Sequence[Mapping[str, Any]]
) -> Path | None:
    """``accuracy_by_domain.png``: source, target and each domain's accuracy per round."""
    if not data.target_domains or not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = data.domain_names or tuple(str(d) for d in range(data.num_domains))
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["round"] for r in rows]
    for key, label, style in (
        ("target_accuracy", "target", "-"),
        ("source_accuracy", "source", "-"),
    ):
        ax.plot(xs, [100 * r[key] for r in rows], style, marker="o", linewidth=2, label=label)
    for d, name in enumerate(names):
        key = f"domain_{d}_accuracy"
        if key in rows[-1]:
            role = "target" if d in data.target_domains else "source"
            ax.plot(xs, [100 * r[key] for r in rows], ":", label=f"{name} ({role})")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "accuracy_by_domain.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
