"""What ``feddistill run`` prints while a job runs: phases, round lines, ratios.

A run goes through named phases (starting the SuperLink, starting Ray and the
simulation, loading data, each round, exporting the student). The ServerApp, which runs
in another process, appends its phases to ``<out-dir>/phases.jsonl``; the command line
follows that file (as it follows ``metrics.jsonl``) and prints one plain line per phase,
so a piped or logged run shows where its time goes. The Flower and Ray output copied to
``flower.log`` goes through :func:`pump_without_ansi`, which drops colour codes.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from feddistill.run_folder import RunFolder

PHASES_FILE = RunFolder.PHASES
# ANSI escape sequences (colours, cursor moves) that Flower and Ray print to terminals
ANSI_ESCAPE = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]")
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
            ``uplink_bytes``, ``round_seconds``; optional ``ratio_vs_fedavg_fp32``,
            ``total_ratio_vs_fedavg_fp32`` (up + down; shown instead of the uplink ratio
            when present) and ``failed``).
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
    total = row.get("total_ratio_vs_fedavg_fp32")
    if isinstance(total, float) and total > 0:
        vs = f" | up+down {ratio_phrase(total)}"
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


def emit_new_rows(
    path: Path,
    seen: int,
    on_row: Callable[[dict[str, Any]], None] | None,
    upto: int | None = None,
) -> int:
    """Pass rows ``seen..upto`` (all new rows if `upto` is None) to `on_row`."""
    if not path.is_file():
        return seen
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    lines = lines if upto is None else lines[:upto]
    for line in lines[seen:]:
        if on_row is not None:
            on_row(json.loads(line))
    return max(seen, len(lines))


def follow_progress(
    out: Path,
    seen_rows: int,
    seen_phases: int,
    on_row: Callable[[dict[str, Any]], None] | None,
    on_phase: Callable[[str], None],
) -> tuple[int, int]:
    """Pass new metrics rows and phases on in the order the run wrote them.

    A phase is shown after the rows written before it began (its ``rows`` field), so
    "round 2/3" follows round 1's line even when both are new at one poll.

    Returns:
        (rows seen, phase lines seen) after this call.
    """
    # Count the rows on disk before reading the phases: every phase that precedes one of
    # these rows was written before it, so it is in what is read next. Rows written after
    # the count wait for the next poll (else a row could overtake its own "round k").
    path = RunFolder(out).metrics_jsonl
    on_disk = (
        len([ln for ln in path.read_text().splitlines() if ln.strip()]) if path.is_file() else 0
    )
    new_phases, seen_phases = read_new_phases(out, seen_phases)
    for text, rows_done in new_phases:
        # a phase without a row count is shown before any row not yet shown
        upto = seen_rows if rows_done is None else min(rows_done, on_disk)
        seen_rows = emit_new_rows(path, seen_rows, on_row, upto)
        on_phase(text)
    return emit_new_rows(path, seen_rows, on_row, on_disk), seen_phases


def pump_without_ansi(source: Any, log: Any, close_log: bool = False) -> threading.Thread:
    """Copy a child's output to `log` line by line without ANSI escape codes.

    Flower's console handler colours its log lines unconditionally (``colored=True``
    in ``flwr.supercore.logger``; it reads no NO_COLOR-style variable), so the codes
    are removed here, as each line is written to ``flower.log``.

    Args:
        source: the child's stdout (a binary pipe).
        log: the binary log file; lines are written whole and flushed.
        close_log: close `log` when the pipe closes (the pump owns the file).

    Returns:
        The started daemon thread; it ends when the pipe closes.
    """

    def copy() -> None:
        for line in iter(source.readline, b""):
            log.write(ANSI_ESCAPE.sub(b"", line))
            log.flush()
        source.close()
        if close_log:
            log.close()

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    return thread
