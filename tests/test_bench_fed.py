"""`feddistill bench fed`'s table: total bytes and ratios vs fp32 FedAvg."""

from __future__ import annotations

import importlib


def _bench():
    return importlib.import_module("feddistill.benchmarks.fed_mnist5k")


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
