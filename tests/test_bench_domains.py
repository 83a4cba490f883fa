"""feddistill/benchmarks/domains.py: the table and the target check, on hand-made rows."""

from __future__ import annotations

import importlib

import pytest


def _bench():
    return importlib.import_module("feddistill.benchmarks.domains")


def _row(method, task, seed, target, up=0):
    return {
        "suite": "digits",
        "task": task,
        "method": method,
        "seed": seed,
        "target_accuracy": target,
        "source_accuracy": 0.9,
        "uplink_bytes": up,
        "downlink_bytes": 0,
        "wall_seconds": 1.0,
    }


ROWS = [
    _row("feddistill", "a", 0, 0.60, 2_000_000),
    _row("feddistill", "b", 0, 0.80, 2_000_000),
    _row("feddistill", "a", 1, 0.70, 2_000_000),
    _row("feddistill", "b", 1, 0.90, 2_000_000),
    _row("fedavg", "a", 0, 0.60),
    _row("fedavg", "b", 0, 0.70),
    _row("feddf", "a", 0, 0.70),
    _row("feddf", "b", 0, 0.80),
]


def test_table_averages_tasks_per_seed_then_over_seeds():
    # Prepare: feddistill seed 0 avg 0.70, seed 1 avg 0.80 -> 75.0 ± 7.1
    bench = _bench()
    # Execute
    table = bench.markdown(ROWS, ["feddistill", "fedavg"])
    # Assert
    line = next(x for x in table.splitlines() if x.startswith("| feddistill |"))
    assert line == "| feddistill | 65.0 ± 7.1 | 85.0 ± 7.1 | 75.0 ± 7.1 | 90.0 | 2.00 | 0.00 |"


def test_target_check_compares_averages_with_fedavg_plus_3_and_feddf():
    # Prepare: feddistill 0.75, fedavg 0.65 (+3 = 68.0), feddf 0.75
    bench = _bench()
    # Execute
    verdict = bench.check_targets(ROWS)
    # Assert
    assert verdict == [
        "digits: feddistill 75.0 vs fedavg + 3 = 68.0 (met), vs feddf 75.0 (met); "
        "best feddistill mode: feddistill 75.0"
    ]


def test_unknown_method_is_refused(capsys):
    # Prepare
    bench = _bench()
    # Execute / Assert
    with pytest.raises(SystemExit):
        bench.main(["--methods", "fedprox"])
    assert "unknown method(s) ['fedprox']" in capsys.readouterr().err
