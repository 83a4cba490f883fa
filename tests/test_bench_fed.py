"""`feddistill bench fed`'s table: total bytes and ratios vs fp32 FedAvg."""

from __future__ import annotations

import importlib.util

import pytest

from feddistill.engine import app_dir


def _bench():
    path = app_dir() / "benchmarks" / "fed_mnist5k.py"
    spec = importlib.util.spec_from_file_location("bench_fed_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(name: str, up: int, down: int) -> dict:
    return {
        "name": name,
        "final_accuracy": 0.9,
        "best_accuracy": 0.9,
        "worst_domain_accuracy": 0.8,
        "uplink_bytes": up,
        "downlink_bytes": down,
        "wall_seconds": 10.0,
        "process_seconds": 12.0,
        "peak_rss_mb": 100.0,
    }


def test_bench_fed_table_has_total_bytes_and_total_ratio_vs_fedavg():
    # Prepare: fedavg 8 MB up + 8 MB down; logits-only 0.04 MB up + 0.76 MB down
    results = [_result("fedavg", 8_000_000, 8_000_000), _result("logits-only", 40_000, 760_000)]
    # Execute
    table = _bench().markdown(results)
    # Assert: total 0.8 MB -> 16 / 0.8 = 20.0x; uplink 8 / 0.04 = 200.0x
    row = next(line for line in table.splitlines() if line.startswith("| logits-only |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4:9] == ["0.040", "0.760", "0.800", "200.0x", "20.0x"]
    assert "logits-only" in _bench().STRATEGIES


def _label_skew():
    path = app_dir() / "benchmarks" / "fed_label_skew.py"
    spec = importlib.util.spec_from_file_location("bench_fed_label_skew_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_label_skew_table_gives_mean_and_sample_std_per_strategy():
    # Prepare: feddistill 0.90 and 0.92 (mean 91.0, std sqrt(2 * 0.01^2 / 1) = 1.41 points)
    results = [
        {"name": "feddistill", "seed": 0, "final_accuracy": 0.90},
        {"name": "fedavg", "seed": 0, "final_accuracy": 0.88},
        {"name": "feddistill", "seed": 1, "final_accuracy": 0.92},
    ]
    # Execute
    table = _label_skew().seed_table(results)
    # Assert
    lines = table.splitlines()
    assert lines[2] == "| feddistill | 0,1 | 91.0 ± 1.4 | 90.0, 92.0 |"
    assert lines[3] == "| fedavg | 0 | 88.0 ± 0.0 | 88.0 |"


def test_label_skew_regime_rejects_bad_seeds_before_running(capsys):
    # Prepare / Execute
    with pytest.raises(SystemExit):
        _bench().main(["--regime", "label-skew", "--seeds", "1,1", "--out", "/nonexistent/x"])
    # Assert
    assert "distinct integers" in capsys.readouterr().err
