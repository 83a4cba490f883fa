"""Per-phase timers (feddistill.timing): totals per process, files summed per run."""

from __future__ import annotations

import json
import os

import pytest

from feddistill import timing


@pytest.fixture(autouse=True)
def fresh_totals():
    saved = timing.totals()
    timing.reset()
    yield
    timing.reset()
    timing._totals.update(saved)


def test_timed_blocks_add_to_their_phase_total(monkeypatch):
    # Prepare: a clock that reads 10, 12.5 (first block), 20, 21 (second block)
    ticks = iter([10.0, 12.5, 20.0, 21.0])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))

    # Execute
    with timing.timed("encode"):
        pass
    with timing.timed("encode"):
        pass

    # Assert: 2.5 + 1.0
    assert timing.totals() == {"encode": 3.5}


def test_timed_counts_a_block_that_raises(monkeypatch):
    # Prepare
    ticks = iter([0.0, 0.25])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))

    # Execute
    with pytest.raises(KeyError), timing.timed("decode"):
        raise KeyError("x")

    # Assert
    assert timing.totals() == {"decode": 0.25}


def test_read_timings_sums_every_process_file(tmp_path):
    # Prepare: this process's totals plus another process's file
    timing._totals.update({"kd": 1.5, "encode": 0.5})
    timing.flush(tmp_path)
    (tmp_path / "timings" / "pid-999999.json").write_text(json.dumps({"kd": 2.0}))

    # Execute
    summed = timing.read_timings(tmp_path)

    # Assert: kd 1.5 + 2.0, encode only here
    assert summed == {"kd": 3.5, "encode": 0.5}
    assert (tmp_path / "timings" / f"pid-{os.getpid()}.json").is_file()


def test_read_timings_skips_a_file_that_is_not_phase_seconds(tmp_path):
    # Prepare
    folder = tmp_path / "timings"
    folder.mkdir()
    (folder / "pid-1.json").write_text("[1, 2]")
    (folder / "pid-2.json").write_text("{not json")
    (folder / "pid-3.json").write_text(json.dumps({"evaluation": 4}))

    # Execute
    summed = timing.read_timings(tmp_path)

    # Assert
    assert summed == {"evaluation": 4.0}


def test_read_timings_of_a_run_without_timings_is_empty(tmp_path):
    # Execute / Assert
    assert timing.read_timings(tmp_path) == {}
