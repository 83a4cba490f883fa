"""feddistill/benchmarks/domains.py: the table and the target check, on hand-made rows."""

from __future__ import annotations

import csv
import importlib
import json

import pytest


def _bench():
    return importlib.import_module("feddistill.benchmarks.domains")


def _runs():
    return importlib.import_module("feddistill.benchmarks.domain_runs")


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


def test_bad_rotated_target_is_refused(capsys):
    # Prepare
    bench = _bench()
    # Execute / Assert
    with pytest.raises(SystemExit):
        bench.main(["--targets", "0,6"])
    assert "--targets must be 'all' or a comma list of 0-5, got '0,6'" in capsys.readouterr().err


def test_tasks_run_seed_by_seed_over_the_chosen_rotated_targets():
    # Prepare
    bench = _bench()
    # Execute
    order = bench.tasks([0, 1], ["rotated", "digits"], {0, 5})
    # Assert: every task of seed 0 comes before any task of seed 1
    assert order == [
        (0, "rotated", "0deg", 0),
        (0, "rotated", "75deg", 5),
        (0, "digits", "mnist5k->digits", 1),
        (0, "digits", "digits->mnist5k", 0),
        (1, "rotated", "0deg", 0),
        (1, "rotated", "75deg", 5),
        (1, "digits", "mnist5k->digits", 1),
        (1, "digits", "digits->mnist5k", 0),
    ]


def test_reused_run_reports_its_recorded_cost(tmp_path):
    # Prepare: a finished run folder with its cost file; nothing may run again
    runs = _runs()
    from feddistill.config import from_mapping

    summary = {"status": "completed", "final_target_accuracy": 0.5}
    cfg = from_mapping({"out-dir": str(tmp_path)})
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / runs.COST_FILE).write_text('{"cpu_seconds": 12.5, "wall_seconds": 30.0}')
    (tmp_path / runs.CONFIG_FILE).write_text(json.dumps(runs.config_record(cfg)))
    # Execute
    got = runs.run_one(cfg, "fedavg")
    # Assert
    assert got == {**summary, "cpu_seconds": 12.5, "bench_wall_seconds": 30.0, "reused": True}


def test_finished_run_of_another_config_is_run_again(tmp_path, monkeypatch):
    # Prepare: a finished 1-round run; now 2 rounds are asked for (regression: it was reused)
    runs = _runs()
    from feddistill import inprocess
    from feddistill.config import from_mapping

    one = from_mapping({"out-dir": str(tmp_path), "num-server-rounds": 1})
    two = from_mapping({"out-dir": str(tmp_path), "num-server-rounds": 2})
    (tmp_path / "summary.json").write_text(json.dumps({"status": "completed"}))
    (tmp_path / runs.CONFIG_FILE).write_text(json.dumps(runs.config_record(one)))
    ran = []

    def fake_run(cfg):  # a real run makes its out-dir
        ran.append(cfg.num_server_rounds)
        tmp_path.mkdir()
        return {"status": "completed"}

    monkeypatch.setattr(inprocess, "run_in_process", fake_run)
    # Execute
    got = runs.run_one(two, "fedavg")
    # Assert: it ran with 2 rounds and recorded that config
    assert ran == [2] and got["reused"] is False
    assert json.loads((tmp_path / runs.CONFIG_FILE).read_text()) == runs.config_record(two)


def test_cost_table_gives_mean_cpu_per_run_and_the_totals():
    # Prepare: feddistill digits runs 10 s and 30 s (mean 20), fedavg 60 s; 100 s in all
    bench = _bench()
    rows = [
        {**_row("feddistill", "a", 0, 0.5), "cpu_seconds": 10.0},
        {**_row("feddistill", "b", 0, 0.5), "cpu_seconds": 30.0},
        {**_row("fedavg", "a", 0, 0.5), "cpu_seconds": 60.0},
    ]
    # Execute
    text = bench.cost_table(rows, ["feddistill", "fedavg", "feddf"], wall_s=120.0, cpu_s=90.0)
    # Assert
    assert text.splitlines()[:4] == [
        "| method | digits CPU-s/run |",
        "|---|---|",
        "| feddistill | 20 |",
        "| fedavg | 60 |",
    ]
    assert (
        "Time: this invocation 2.0 min wall, 1.5 CPU-min; all 3 runs (reused ones included) "
        "1.7 CPU-min" in text
    )


@pytest.mark.slow
def test_parallel_runs_give_the_same_rows_as_one_after_another(tmp_path):
    # Prepare: one seed, one round, the digits suite's two tasks, FedAvg (the cheapest
    # method that goes through the in-process engine)
    bench = _bench()
    argv = ["--seeds", "0", "--rounds", "1", "--suites", "digits", "--methods", "fedavg"]
    measured = ("wall_seconds", "cpu_seconds", "bench_wall_seconds")
    # Execute
    assert bench.main([*argv, "--jobs", "1", "--out", str(tmp_path / "one")]) == 0
    assert bench.main([*argv, "--jobs", "2", "--out", str(tmp_path / "two")]) == 0
    # Assert: same rows in the same (plan) order; only the time columns may differ
    rows = {}
    for name in ("one", "two"):
        with (tmp_path / name / "results.csv").open() as fh:
            rows[name] = [
                {k: v for k, v in r.items() if k not in measured} for r in csv.DictReader(fh)
            ]
    assert [(r["task"], r["method"]) for r in rows["one"]] == [
        ("mnist5k->digits", "fedavg"),
        ("digits->mnist5k", "fedavg"),
    ]
    assert rows["two"] == rows["one"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--jobs", "0"], "--jobs must be an integer >= 1, got 0"),
        (["--rounds", "0"], "--rounds must be an integer >= 1, got 0"),
        (["--methods", ""], "--methods is empty; give a comma list from: feddistill,"),
        (["--suites", " "], "--suites is empty; give a comma list from: rotated, digits"),
        (["--targets", ""], "--targets is empty; give 'all' or a comma list of 0-5"),
        (
            ["--set", "target-domains=1", "--set", "seed=3"],
            "--set seed, target-domains: set by the benchmark for each run",
        ),
        (["--set", "target_domains=1"], "--set target-domains: set by the benchmark for each run"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(tmp_path, capsys, argv, message):
    # Prepare
    bench = _bench()
    out = tmp_path / "out"
    # Execute / Assert
    with pytest.raises(SystemExit):
        bench.main([*argv, "--out", str(out)])
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    # Prepare
    bench = _bench()
    path = tmp_path / "file"
    path.write_text("x")
    # Execute / Assert
    with pytest.raises(SystemExit):
        bench.main(["--out", str(path)])
    assert f"--out '{path}' is a file; give a folder" in capsys.readouterr().err
