"""Tracking helpers: which row values become scalars; MLflow when it is importable."""

from __future__ import annotations

import importlib.machinery
import sys
import types

from feddistill.server.provenance import equivalent_command
from feddistill.server.tracking import RunTracker, config_markdown, row_scalars


def test_row_scalars_map_keys_to_tags_and_add_the_total():
    # Prepare
    row = {
        "round": 2,
        "accuracy": 0.5,
        "domain_0_accuracy": 0.25,
        "domain_11_accuracy": 0.75,
        "cumulative_uplink_bytes": 100,
        "cumulative_downlink_bytes": 300,
        "teacher_accuracy": "",  # no teachers in this strategy: skipped
        "accepted": 3,  # not a tracked key
    }
    # Execute
    scalars = row_scalars(row)
    # Assert
    assert scalars == {
        "accuracy/overall": 0.5,
        "accuracy/domain_0": 0.25,
        "accuracy/domain_11": 0.75,
        "bytes/cumulative_uplink": 100.0,
        "bytes/cumulative_downlink": 300.0,
        "bytes/cumulative_total": 400.0,
    }


def test_config_markdown_is_a_sorted_two_column_table():
    assert config_markdown({"seed": 0, "dataset": "digits"}) == (
        "| key | value |\n|---|---|\n| dataset | digits |\n| seed | 0 |"
    )


def test_mlflow_gets_params_and_metrics_when_importable(tmp_path, monkeypatch):
    # Prepare: a stand-in mlflow module that records its calls
    calls = []
    fake = types.ModuleType("mlflow")
    fake.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
    fake.set_tracking_uri = lambda uri: calls.append(("uri", uri))
    fake.start_run = lambda run_name: calls.append(("start", run_name))
    fake.log_params = lambda params: calls.append(("params", params))
    fake.log_metrics = lambda metrics, step: calls.append(("metrics", step, metrics))
    fake.end_run = lambda: calls.append(("end",))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # Execute
    tracker = RunTracker(tmp_path, {"seed": 3}, run_name="fedavg")
    tracker.log_round({"round": 1, "accuracy": 0.5})
    tracker.close()
    # Assert
    assert calls == [
        ("uri", (tmp_path / "mlruns").resolve().as_uri()),
        ("start", "fedavg"),
        ("params", {"seed": "3"}),
        ("metrics", 1, {"accuracy.overall": 0.5}),
        ("end",),
    ]


def test_equivalent_command_quotes_only_what_would_not_read_back():
    # Prepare: a string that reads as a number, one that does not, a bool, a path
    config = {
        "out-dir": "/tmp/a b",
        "dataset": "digits",
        "fail-partitions": "1",
        "download": True,
        "seed": 3,
        "resume": True,  # where/how, not what: left out
    }
    # Execute
    command = equivalent_command(config)
    # Assert
    assert command == (
        "feddistill run --out '/tmp/a b' --set dataset=digits --set download=true "
        "--set 'fail-partitions=\"1\"' --set seed=3"
    )
