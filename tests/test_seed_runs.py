"""`feddistill run --seeds` and `feddistill bench X --seeds` (feddistill/seed_runs.py)."""

from __future__ import annotations

import json

import pytest

from feddistill.cli import main
from feddistill.config import RunConfig
from feddistill.seed_runs import (
    bench_seeds,
    check_seeds_out,
    split_bench_args,
    write_run_seeds,
)

SMALL = [
    "--set",
    "dataset=digits",
    "--set",
    "strategy=fedavg",
    "--set",
    "student-model=mlp",
    "--set",
    "num-partitions=2",
    "--set",
    "num-server-rounds=1",
    "--set",
    "device=cpu",
]


def test_run_seeds_with_resume_is_refused(tmp_path, capsys):
    # Execute
    code = main(["run", "--seeds", "0,1", "--resume", str(tmp_path)])
    # Assert
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "--seeds cannot be combined with --resume" in err


def test_run_seeds_with_a_seed_key_is_refused(tmp_path, capsys):
    # Execute
    code = main(["run", "--seeds", "0,1", "--out", str(tmp_path / "o"), "--set", "seed=3"])
    # Assert
    assert code == 2
    assert "--seeds sets each run's seed" in " ".join(capsys.readouterr().err.split())


def test_run_with_a_bad_seed_list_is_refused(tmp_path, capsys):
    # Execute
    code = main(["run", "--seeds", "1,1", "--out", str(tmp_path / "o")])
    # Assert
    assert code == 2
    assert "--seeds must be a non-empty comma list" in " ".join(capsys.readouterr().err.split())


def test_seeds_out_with_other_files_is_refused_and_untouched(tmp_path):
    # Prepare: a folder with a user's file
    (tmp_path / "notes.txt").write_text("mine")
    # Execute / Assert
    with pytest.raises(ValueError, match="holds notes.txt; with --seeds it must be new"):
        check_seeds_out(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_seeds_out_that_is_a_file_is_refused(tmp_path):
    # Prepare
    (tmp_path / "f").write_text("")
    # Execute / Assert
    with pytest.raises(ValueError, match="is a file; give a folder"):
        check_seeds_out(tmp_path / "f")


def test_seeds_out_of_a_previous_seeds_run_is_accepted(tmp_path):
    # Prepare: what `run --seeds` leaves behind
    (tmp_path / "seed-0").mkdir()
    (tmp_path / "seeds.json").write_text("{}")
    (tmp_path / "seeds.md").write_text("")
    # Execute / Assert: no error
    check_seeds_out(tmp_path)


def test_run_seeds_table_has_mean_std_and_leaves_out_missing_target(tmp_path):
    # Prepare: final 0.90 / 0.92 -> 91.00 ± 1.41 (sample std sqrt(2 * 0.01^2 / 1));
    # uplink 1 MB / 3 MB -> 2.000 ± 1.414; no target accuracy in the summaries
    summaries = {
        0: {"final_accuracy": 0.90, "best_accuracy": 0.90, "uplink_bytes": 1_000_000},
        1: {"final_accuracy": 0.92, "best_accuracy": 0.94, "uplink_bytes": 3_000_000},
    }
    # Execute
    text = write_run_seeds(tmp_path, RunConfig(strategy="fedavg"), summaries, failed=[2])
    # Assert
    lines = text.splitlines()
    assert "| final accuracy (%) | 91.00 ± 1.41 | 90.00 | 92.00 |" in lines
    assert "| uplink (MB) | 2.000 ± 1.414 | 1.000 | 3.000 |" in lines
    assert not any("target" in line for line in lines)
    assert "Not completed (left out): seeds 2." in lines
    saved = json.loads((tmp_path / "seeds.json").read_text())
    assert saved["metrics"]["final_accuracy"]["values"] == [0.90, 0.92]
    assert saved["failed"] == [2]
    assert (tmp_path / "seeds.md").read_text() == text


def test_run_seeds_writes_one_full_run_per_seed_and_their_mean(tmp_path, capsys):
    # Prepare
    out = tmp_path / "multi"
    # Execute
    code = main(
        ["run", "--engine", "inprocess", "--quiet", "--seeds", "3,4", "--out", str(out), *SMALL]
    )
    # Assert
    assert code == 0
    summaries = [json.loads((out / f"seed-{s}" / "summary.json").read_text()) for s in (3, 4)]
    assert [s["config"]["seed"] for s in summaries] == [3, 4]
    assert all((out / f"seed-{s}" / "metrics.csv").is_file() for s in (3, 4))
    saved = json.loads((out / "seeds.json").read_text())
    assert saved["seeds"] == [3, 4]
    assert saved["metrics"]["final_accuracy"]["values"] == [s["final_accuracy"] for s in summaries]
    assert (out / "seeds.md").read_text().startswith("## feddistill run --seeds 3,4 (fedavg,")


def test_split_bench_args_takes_seeds_and_out_in_both_spellings():
    # Execute
    seeds, out, others = split_bench_args(["--quick", "--seeds=0,1", "--out", "R", "--x"])
    # Assert
    assert (seeds, out, others) == ("0,1", "R", ["--quick", "--x"])


def test_split_bench_args_refuses_seeds_without_a_value():
    # Execute / Assert
    with pytest.raises(ValueError, match="--seeds needs a value"):
        split_bench_args(["--seeds", "--quick"])


def _fake_bench(calls):
    """A benchmark whose one number is seed / 10."""

    def main(argv):
        calls.append(argv)
        seed, out = int(argv[argv.index("--seed") + 1]), argv[argv.index("--out") + 1]
        from pathlib import Path

        Path(out).mkdir(parents=True)
        rows = {"rows": [{"name": "a", "acc": seed / 10, "ok": True}]}
        (Path(out) / "results.json").write_text(json.dumps(rows))
        return 0

    return main


def test_bench_seeds_runs_the_benchmark_per_seed_and_aggregates(tmp_path):
    # Prepare: seeds 0 and 1 -> acc 0.0 and 0.1: mean 0.05, std sqrt(2 * 0.05^2) = 0.07071
    calls: list[list[str]] = []
    out = tmp_path / "b"
    # Execute
    code = bench_seeds("x", _fake_bench(calls), ["--quick", "--seeds", "0,1", "--out", str(out)])
    # Assert
    assert code == 0
    assert calls[0] == ["--quick", "--seed", "0", "--out", str(out / "seed-0")]
    metrics = json.loads((out / "seeds.json").read_text())["metrics"]
    assert list(metrics) == ["rows.a.acc"]  # the bool is not a number
    assert metrics["rows.a.acc"]["mean"] == pytest.approx(0.05)
    assert metrics["rows.a.acc"]["std"] == pytest.approx(0.0707107, abs=1e-6)
    assert "| rows.a.acc | 0.05 ± 0.07071 | 0 | 0.1 |" in (out / "seeds.md").read_text()


def test_bench_seeds_with_seed_too_is_refused(tmp_path):
    # Execute / Assert
    with pytest.raises(ValueError, match="--seeds sets each run's --seed"):
        bench_seeds("x", _fake_bench([]), ["--seeds", "0", "--seed", "1", "--out", str(tmp_path)])


def test_bench_seeds_counts_a_failed_seed_out(tmp_path):
    # Prepare: a benchmark that fails for seed 1
    def main(argv):
        return 1 if "1" in argv else _fake_bench([])(argv)

    # Execute
    code = bench_seeds("x", main, ["--seeds", "0,1", "--out", str(tmp_path / "b")])
    # Assert
    assert code == 1
    assert json.loads((tmp_path / "b" / "seeds.json").read_text())["failed"] == [1]


def test_bench_seeds_stops_at_a_benchmark_that_refuses_to_start(tmp_path):
    # Prepare: the regression guarded: bench gpu without a GPU returns 2; the runner
    # printed the refusal once per seed, exited 1 and wrote a malformed seeds.md
    calls: list[list[str]] = []

    def refuses(argv):
        calls.append(argv)
        return 2

    # Execute
    code = bench_seeds("x", refuses, ["--seeds", "0,1,2", "--out", str(tmp_path / "b")])
    # Assert
    assert code == 2
    assert len(calls) == 1
    assert not (tmp_path / "b" / "seeds.md").exists()


def test_bench_seeds_with_no_seed_done_says_so_in_seeds_md(tmp_path):
    # Execute: every seed fails
    code = bench_seeds("x", lambda argv: 1, ["--seeds", "0,1", "--out", str(tmp_path / "b")])
    # Assert
    assert code == 1
    text = (tmp_path / "b" / "seeds.md").read_text()
    assert "No seed completed." in text and "| quantity |" not in text


def test_bench_without_native_seeds_goes_through_the_runner(monkeypatch, tmp_path):
    # Prepare: record what the runner is asked to do instead of running compression
    import feddistill.seed_runs as seed_runs

    seen = {}
    monkeypatch.setattr(
        seed_runs, "bench_seeds", lambda which, main, rest: seen.update(w=which, r=rest) or 0
    )
    # Execute
    code = main(["bench", "compression", "--quick", "--seeds", "0,1"])
    # Assert
    assert code == 0
    assert seen == {"w": "compression", "r": ["--quick", "--seeds", "0,1"]}


def test_bench_with_native_seeds_gets_the_option_itself(capsys):
    # Execute: fidelity's own parser rejects the list (exit 2), the runner never sees it
    with pytest.raises(SystemExit) as exc:
        main(["bench", "fidelity", "--seeds", "x"])
    # Assert
    assert exc.value.code == 2
    assert "--seeds must be a comma list" in capsys.readouterr().err
