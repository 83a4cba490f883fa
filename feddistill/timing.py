"""Light per-phase timers: seconds per named phase, summed per process.

Not a profiler: :func:`timed` adds one ``perf_counter`` difference to a per-process
total, so it can wrap hot code (a training step's KD term) at no measurable cost.
Each process of a run (the ServerApp, every client actor; one process under
``--engine inprocess``) writes its own totals to ``<out-dir>/timings/pid-<pid>.json``
with :func:`flush`; :func:`read_timings` sums the files. ``feddistill bench overhead``
reads them.

Phase names (seconds): ``data_loading``, ``teacher_training``, ``student_training``
(the KD term's backward pass included), ``kd`` (the student's forward pass on the
proxy batch and the KD loss), ``logits_affinity`` (teacher logits on the proxy set and
domain affinity), ``encode``, ``decode``, ``server_aggregation`` (decode, validation,
FedAvg, consensus), ``server_distillation``, ``evaluation``, ``checkpoint_io`` (server
checkpoints and metrics files), ``client_state_io``, ``export`` (int8/pruned student), ``report_plots``, and
``decode_server`` (the server's decode and validation of replies, a part of
``server_aggregation``).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from feddistill.atomic import atomic_write_text
from feddistill.run_folder import RunFolder

TIMINGS_DIR = RunFolder.TIMINGS
_totals: defaultdict[str, float] = defaultdict(float)


@contextmanager
def timed(phase: str) -> Iterator[None]:
    """Add the seconds spent in the ``with`` block to this process's total for `phase`."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        _totals[phase] += time.perf_counter() - t0


def totals() -> dict[str, float]:
    """This process's totals so far: phase -> seconds."""
    return dict(_totals)


def reset() -> None:
    """Forget this process's totals (a new run starts)."""
    _totals.clear()


def flush(out_dir: str | Path) -> None:
    """Write this process's totals to ``<out_dir>/timings/pid-<pid>.json`` (replaced)."""
    folder = Path(out_dir) / TIMINGS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / f"pid-{os.getpid()}.json", json.dumps(totals(), sort_keys=True))


def read_timings(out_dir: str | Path) -> dict[str, float]:
    """Phase -> seconds summed over every process of the run in `out_dir`.

    Returns:
        An empty dict if the run wrote no timings; a file that is not a JSON object of
        numbers is skipped.
    """
    summed: defaultdict[str, float] = defaultdict(float)
    for path in sorted((Path(out_dir) / TIMINGS_DIR).glob("pid-*.json")):
        try:
            data = json.loads(path.read_text())
            items = [(str(k), float(v)) for k, v in data.items()]
        except (ValueError, AttributeError, TypeError):
            continue
        for phase, seconds in items:
            summed[phase] += seconds
    return dict(summed)
