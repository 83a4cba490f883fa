"""`feddistill bench fed`'s table: total bytes and ratios vs fp32 FedAvg."""

from __future__ import annotations

import importlib

import pytest

from feddistill.benchmarks import fed_label_skew
from feddistill.config_load import load_config


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


def test_label_skew_regime_runs_ten_dirichlet_clients_and_coverage_era_for_feddistill():
    # Prepare / Execute
    cfg = load_config(None, fed_label_skew.overrides("feddistill", 20, 3, []))
    # Assert
    assert (cfg.partitioner, cfg.dirichlet_alpha, cfg.num_partitions) == ("dirichlet", 0.1, 10)
    assert (cfg.strategy, cfg.consensus) == ("feddistill", "coverage-era")
    assert cfg.server_distill_rounds == 5
    assert (cfg.num_server_rounds, cfg.seed) == (20, 3)


def test_label_skew_regime_lets_the_users_set_win():
    # Prepare / Execute
    cfg = load_config(None, fed_label_skew.overrides("feddistill", 20, 0, ["consensus='domain'"]))
    # Assert
    assert cfg.consensus == "domain"


def test_label_skew_regime_refuses_the_kmeans_regimes_extra_rows(capsys):
    # Prepare / Execute: refused before anything runs or is written
    with pytest.raises(SystemExit):
        _bench().main(["--regime", "label-skew", "--scale", "--out", "/nonexistent/x"])
    # Assert
    assert "--scale and --pruning add rows to the kmeans regime" in capsys.readouterr().err


def test_scale_reports_the_first_round_at_the_target_and_seconds_to_it() -> None:
    # Prepare: 70 % after round 1 (4 s), 86 % after round 2 (5 s), 90 % after round 3
    rows = [
        {"round": 1, "accuracy": 0.70, "round_seconds": 4.0},
        {"round": 2, "accuracy": 0.86, "round_seconds": 5.0},
        {"round": 3, "accuracy": 0.90, "round_seconds": 6.0},
    ]
    # Execute
    hit = _bench().first_round_at(rows, 0.85)
    # Assert: round 2, 4 + 5 = 9 s
    assert hit == (2, 9.0)


def test_scale_says_when_the_target_is_not_reached() -> None:
    # Prepare
    rows = [{"round": 1, "accuracy": 0.5, "round_seconds": 1.0}]
    run = {**_result("fedavg-100", 1, 1), "rows": rows, "final_accuracy": 0.5}
    # Execute
    table = _bench().scale_markdown([run], 0.85)
    # Assert
    assert "| fedavg-100 | 1 | 50.0% | 90.0% | not reached | - | 10 | 0.10 |" in table


def test_scale_runs_give_teachers_the_same_fixed_steps_as_students() -> None:
    # Prepare / Execute
    cfg = load_config(None, _bench().scale_overrides("feddistill", 30, 20, 0, []))
    # Assert: tiny clients: both models make 20 steps per round
    assert (cfg.local_steps, cfg.teacher_local_steps) == (20, 20)
    assert (cfg.num_partitions, cfg.fraction_train, cfg.num_server_rounds) == (100, 0.1, 30)


def test_scale_feddistill_distills_on_the_server_in_rounds_1_to_3_only() -> None:
    # Prepare / Execute
    feddistill = load_config(None, _bench().scale_overrides("feddistill", 30, 20, 0, []))
    fedavg = load_config(None, _bench().scale_overrides("fedavg", 30, 20, 0, []))
    # Assert: fedavg keeps the default (it does not distill anyway)
    assert (feddistill.server_distill_rounds, fedavg.server_distill_rounds) == (3, 0)


def test_only_empty_runs_none_of_the_main_strategies(tmp_path, monkeypatch) -> None:
    # Prepare: record the runs instead of running them (regression: '' meant "all")
    bench = _bench()
    names: list[str] = []
    monkeypatch.setattr(bench, "run_one", lambda name, *a, **k: names.append(name))
    monkeypatch.setattr(bench, "plot_curves", lambda *a, **k: None)
    monkeypatch.setattr(bench, "plot_bytes", lambda *a, **k: None)
    # Execute
    code = bench.main(["--only", "", "--out", str(tmp_path)])
    # Assert
    assert (names, code) == ([], 0)


def test_label_skew_regime_runs_the_default_consensus_as_feddistill_domain():
    # Prepare / Execute
    cfg = load_config(None, fed_label_skew.overrides("feddistill-domain", 20, 1, []))
    # Assert
    assert (cfg.strategy, cfg.consensus, cfg.seed) == ("feddistill", "domain", 1)


def test_label_skew_regime_has_both_feddistill_rows_and_both_fedavg_rows_by_default():
    # Prepare / Execute
    rows = fed_label_skew.STRATEGIES
    # Assert
    assert rows == ("feddistill", "feddistill-domain", "fedavg", "fedavg-compressed")


def test_label_skew_regime_refuses_an_unknown_row_naming_the_allowed_ones(capsys, tmp_path):
    # Prepare / Execute: refused before anything runs
    with pytest.raises(SystemExit):
        _bench().main(
            ["--regime", "label-skew", "--only", "feddistill-nope", "--out", str(tmp_path / "x")]
        )
    # Assert
    err = capsys.readouterr().err
    assert "unknown strategy 'feddistill-nope'" in err and "feddistill-domain" in err
    assert not (tmp_path / "x").exists()
