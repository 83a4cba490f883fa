"""feddistill/benchmarks/scaling_deployment.py: argument checks and the markdown row (nothing runs)."""

from __future__ import annotations

import importlib

import pytest


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("feddistill.benchmarks.scaling_deployment")


def test_zero_rounds_is_an_error(bench, tmp_path):
    with pytest.raises(ValueError, match="rounds=0"):
        bench.bench_deployment(rounds=0, out=tmp_path)


def test_markdown_row_has_one_row_under_the_header(bench):
    result = {
        "engine": "deployment (TLS + auth)",
        "rounds": 2,
        "supernodes": 2,
        "startup_seconds": 4.1,
        "training_seconds": 20.5,
        "wall_seconds": 45.0,
        "final_accuracy": 0.91234,
    }
    lines = bench.markdown_row(result).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("| engine | rounds | SuperNodes | start-up s")
    assert lines[2] == "| deployment (TLS + auth) | 2 | 2 | 4.1 | 20.5 | 45.0 | 0.9123 |"


def test_failed_run_is_an_error(bench, tmp_path, monkeypatch):
    # Prepare: a deployment stand-in whose run fails
    class FailedDeployment:
        timings: dict = {}

        def __init__(self, *args):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def run_job(self, cfg):
            return {"status": "failed", "error": "boom"}

    monkeypatch.setattr(bench, "LocalDeployment", FailedDeployment)
    # Execute / Assert
    with pytest.raises(RuntimeError, match="the deployment run failed: boom"):
        bench.bench_deployment(rounds=1, out=tmp_path)
