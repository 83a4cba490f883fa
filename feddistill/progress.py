"""What ``feddistill run`` prints while a job runs: phases, round lines, ratios.

A run goes through named phases (starting the SuperLink, starting Ray and the
simulation, loading data, each round, exporting the student). The ServerApp, which runs
in another process, appends its phases to ``<out-dir>/phases.jsonl``; the command line
follows that file (as it follows ``metrics.jsonl``) and prints one plain line per phase,
so a piped or logged run shows where its time goes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PHASES_FILE = "phases.jsonl"
ROUND_LINE_MAX = 100  # characters; a round line stays one line in a 100-column log


def ratio_phrase(ratio: float) -> str:
    """How a payload compares with a reference, phrased so that it reads right both ways.

    Args:
        ratio: reference bytes / actual bytes (> 1 means the actual payload is smaller).

    Returns:
        ``"4.0x smaller"`` for 4.0, ``"1.25x larger"`` for 0.8, ``"same size"`` when the
        two agree to within 0.5 %.

    Raises:
        ValueError: if `ratio` is not a positive finite number.
    """
    if not ratio > 0 or ratio == float("inf"):
        raise ValueError(f"ratio must be a positive finite number, got {ratio!r}")
    if abs(ratio - 1.0) < 0.005:
        return "same size"
    if ratio > 1:
        return f"{ratio:.1f}x smaller" if ratio >= 1.995 else f"{ratio:.2f}x smaller"
    inverse = 1 / ratio
    return f"{inverse:.1f}x larger" if inverse >= 1.995 else f"{inverse:.2f}x larger"


def format_bytes(num_bytes: float) -> str:
    """Bytes with a decimal unit, 3 digits: ``"512 B"``, ``"89.3 kB"``, ``"1.00 GB"``."""
    value, unit = float(num_bytes), "B"
    for next_unit in ("kB", "MB", "GB", "TB"):
        if value < 999.5:
            break
        value, unit = value / 1000, next_unit
    if unit == "B":
        return f"{value:.0f} B"
    if value >= 99.95:
        return f"{value:.0f} {unit}"
    return f"{value:.1f} {unit}" if value >= 9.995 else f"{value:.2f} {unit}"


def format_round_line(row: Mapping[str, Any], rounds: int) -> str:
    """One line per finished round, at most :data:`ROUND_LINE_MAX` characters.

    Args:
        row: a metrics row (``round``, ``accuracy``, ``worst_domain_accuracy``, ``loss``,
            ``uplink_bytes``, ``round_seconds``; optional ``ratio_vs_fedavg_fp32`` and
            ``failed``).
        rounds: the run's number of rounds.

    Returns:
        e.g. ``round   3/10 | acc  91.2% worst  85.0% | loss 0.312 | up 1.23 MB (4.0x
        smaller than fp32) | 12.3 s``; ``| 2 failed`` is added when clients failed.
    """
    ratio = row.get("ratio_vs_fedavg_fp32")
    vs = ""
    if isinstance(ratio, float) and ratio > 0:
        phrase = ratio_phrase(ratio)
        vs = f" ({phrase} {'as' if phrase == 'same size' else 'than'} fp32)"
    failed = int(row.get("failed", 0) or 0)
    return (
        f"round {row['round']:>3}/{rounds} | acc {100 * row['accuracy']:5.1f}% "
        f"worst {100 * row['worst_domain_accuracy']:5.1f}% | loss {row['loss']:.3f} | "
        f"up {format_bytes(row['uplink_bytes'])}{vs}"
        f"{f' | {failed} failed' if failed else ''} | {row['round_seconds']:.1f} s"
    )


def record_phase(out_dir: Path, phase: str, rows_done: int | None = None) -> None:
    """Append `phase` (e.g. ``"loading data"``) to ``<out_dir>/phases.jsonl``.

    Args:
        out_dir: the run's out-dir.
        phase: what starts now, as shown to the user.
        rows_done: metrics rows written so far, so that a reader following both files
            shows the phase after those rows and before later ones.
    """
    with (Path(out_dir) / PHASES_FILE).open("a") as fh:
        fh.write(json.dumps({"phase": phase, "rows": rows_done}) + "\n")


def read_new_phases(out_dir: Path, seen: int) -> tuple[list[tuple[str, int | None]], int]:
    """Phases recorded after the first `seen` lines.

    Returns:
        ([(phase, rows_done), ...], lines seen now); a partial last line is left for
        the next call.
    """
    path = Path(out_dir) / PHASES_FILE
    if not path.is_file():
        return [], seen
    lines = path.read_text().split("\n")[:-1]  # the last piece is "" or a partial line
    phases: list[tuple[str, int | None]] = []
    for line in lines[seen:]:
        try:
            record = json.loads(line)
            rows = record.get("rows")
            phases.append((str(record["phase"]), int(rows) if rows is not None else None))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # not a phase record
    return phases, max(seen, len(lines))
