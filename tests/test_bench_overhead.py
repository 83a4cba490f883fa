"""feddistill/benchmarks/overhead.py: how the table's derived rows come from two engines' runs."""

from __future__ import annotations

import importlib
import os

import pytest

from feddistill.cli import BENCHMARK_HELP, BENCHMARKS


@pytest.fixture(scope="module")
def overhead():  # type: ignore[no-untyped-def]
    return importlib.import_module("feddistill.benchmarks.overhead")


def _run(command_s: float, in_run_s: float, phases: dict[str, float]) -> dict:
    return {
        "command_s": command_s,
        "in_run_s": in_run_s,
        "final_accuracy": 0.5,
        "phases": phases,
        "server_data_loading_s": 1.0,
    }


def test_derived_rows_subtract_what_was_measured(overhead) -> None:  # type: ignore[no-untyped-def]
    # Prepare
    phases = {"export": 2.0, "report_plots": 1.0, "student_training": 5.0, "kd": 1.5}
    phases |= {"server_aggregation": 0.75, "decode_server": 0.25, "encode": 0.5, "decode": 0.125}
    runs = {"inprocess": _run(30.0, 20.0, phases), "simulation": _run(60.0, 26.0, phases)}

    # Execute
    rows = {label: (a, b) for label, a, b in overhead.table_rows(runs)}

    # Assert: start-up = command - in-run - server data loading - export - report/plots
    assert rows["process + runtime start-up and shutdown"] == (30 - 20 - 1 - 2 - 1, 60 - 26 - 4)
    assert rows["student training"] == (3.5, 3.5)  # 5.0 - KD 1.5
    assert rows["encode / decode"] == (0.875, 0.875)  # 0.5 + 0.125 + 0.25
    assert rows["server aggregation"] == (0.5, 0.5)  # 0.75 - decode 0.25
    assert rows["Flower messaging + Ray scheduling (sim - inprocess, in-run)"] == (0.0, 6.0)


def test_peak_rss_of_this_process_is_positive_then_zero_once_gone(overhead) -> None:  # type: ignore[no-untyped-def]
    # Execute
    here = overhead.PeakRss(os.getpid()).tree_rss()
    gone = overhead.PeakRss(2**22 + 1).tree_rss()  # above Linux's default pid_max

    # Assert
    assert here > 0
    assert gone == 0


def test_overhead_is_a_registered_benchmark() -> None:
    # Assert
    assert BENCHMARKS["overhead"] == "overhead"
    assert "simulation and in-process engines" in BENCHMARK_HELP["overhead"]
