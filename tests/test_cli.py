"""The `feddistill` command's wiring (the e2e tests run `feddistill run` for real)."""

import json
import os
import subprocess
import sys

import pytest

from feddistill.cli import build_parser, main


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "feddistill.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_partition_json_through_the_main_command_is_deterministic(tmp_path, capsys):
    # Execute: `python -m feddistill.cli` in a child, and main() in this process
    args = ["partition", "--dataset", "digits", "--num-partitions", "3", "--json", "--out"]
    first = cli(*args, str(tmp_path / "a"))
    code = main([*args, str(tmp_path / "b")])
    second = capsys.readouterr().out
    # Assert
    assert first.returncode == 0, first.stderr
    assert code == 0
    data = json.loads(first.stdout)
    assert [p["id"] for p in data["partitions"]] == [0, 1, 2]
    assert (
        sum(p["size"] for p in data["partitions"]) + data["proxy_size"] + data["test_size"] == 1797
    )
    assert first.stdout == second


def test_bench_dispatches_to_the_benchmark_script():
    # the compression benchmark's own parser rejects the flag: proof it was reached
    proc = cli("bench", "compression", "--no-such-flag")
    assert proc.returncode == 2 and "--no-such-flag" in proc.stderr


def test_out_and_a_different_set_out_dir_are_refused_before_anything_starts(tmp_path, capsys):
    # Prepare
    a, b = tmp_path / "a", tmp_path / "b"
    # Execute
    rc = main(["run", "--out", str(a), "--set", f"out-dir='{b}'"])
    # Assert: a usage error naming both folders; neither folder was created
    err = capsys.readouterr().err
    assert rc == 2
    assert "name different results folders" in " ".join(err.split())
    assert not a.exists() and not b.exists()


def test_run_with_bad_set_is_a_clean_error(capsys):
    assert main(["run", "--set", "alpha"]) == 2
    assert "--set expects key=value, got 'alpha'" in capsys.readouterr().err


def test_unknown_subcommand_is_rejected():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train"])


def test_long_messages_to_a_pipe_are_one_line(tmp_path):
    # Prepare: an error message far longer than 80 columns, naming a long path
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 12) / "job.toml"
    # Execute: stdout and stderr are pipes; COLUMNS would narrow a wrapping console
    proc = subprocess.run(
        [sys.executable, "-m", "feddistill.cli", "run", "--config", str(deep)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "40"},
    )
    # Assert: the path is in the output unbroken, on a single line
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and str(deep) in lines[0], proc.stderr


def test_round_lines_are_never_wrapped():
    # Prepare: a console writing to a pipe-like buffer
    import io

    from feddistill.terminal import make_console

    buffer = io.StringIO()
    console = make_console(file=buffer)
    text = "round   1/10 | " + "x" * 300 + " | /a/path/that/must/stay/whole"
    # Execute
    console.print(text)
    # Assert
    assert buffer.getvalue() == text + "\n"


def test_version_names_feddistill_and_its_runtime(capsys):
    # Execute
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    # Assert
    import importlib.metadata

    out = capsys.readouterr().out
    assert info.value.code == 0
    assert out.startswith(
        f"feddistill {importlib.metadata.version('feddistill')} "
        f"(flwr {importlib.metadata.version('flwr')}, torch "
    )


def test_bench_help_describes_every_benchmark(capsys):
    # Execute
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    # Assert: one description line per benchmark
    out = capsys.readouterr().out
    for name in ("compression", "fed", "scaling"):
        assert any(line.startswith(f"  {name:<12} ") for line in out.splitlines()), out


def test_bench_fed_help_describes_every_option(capsys):
    # Execute
    with pytest.raises(SystemExit):
        main(["bench", "fed", "--help"])
    # Assert
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps at the terminal width
    for text in (
        "--rounds ROUNDS server rounds of every run",
        "--seed SEED seed of every run",
        "--out OUT output folder",
        "--only ONLY comma list of strategies",
        "--scale add a 100-client Dirichlet run",
        "--set KEY=VALUE override a config key",
    ):
        assert text in out


def test_bench_scaling_help_mentions_the_deployment_engine(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "scaling", "--help"])
    assert "Flower's Deployment Engine" in capsys.readouterr().out


def _fake_job(summary):
    def run_job(cfg, ray_address=None, quiet=False, engine="simulation"):
        return summary

    return run_job


def test_run_into_a_finished_run_says_it_replaces_it(
    tmp_path, capsys, monkeypatch, data_checks_recorded
):
    # Prepare: a folder holding a finished 3-round fedavg run
    from feddistill import cli as cli_module

    out = tmp_path / "run"
    out.mkdir()
    (out / "run-config.json").write_text("{}")
    (out / "summary.json").write_text(
        json.dumps({"status": "completed", "strategy": "fedavg", "rounds": 3})
    )
    done = {"status": "completed", "final_accuracy": 0.5, "best_accuracy": 0.5}
    monkeypatch.setattr(
        cli_module, "run_job", _fake_job({**done, "uplink_bytes": 0, "wall_seconds": 1.0})
    )
    argv = ["run", "--out", str(out), "--set", "dataset=digits", "--set", "strategy=centralized"]
    # Execute
    code = main(argv)
    # Assert
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert f"{out} held a finished run (fedavg, 3 rounds); it was replaced by this run" in lines
    assert (out / "command.txt").read_text() == (
        f"feddistill run --out {out} --set dataset=digits --set strategy=centralized\n"
    )
    assert [cfg.out_dir for cfg in data_checks_recorded] == [str(out.resolve())]


def test_resumed_run_says_from_which_round_it_continues(
    tmp_path, capsys, monkeypatch, data_checks_recorded
):
    # Prepare: an interrupted 4-round run with a checkpoint after round 2
    from feddistill import cli as cli_module

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest").write_text("round-2.pt")
    config = {"dataset": "digits", "strategy": "centralized", "num-server-rounds": 4}
    (out / "run-config.json").write_text(json.dumps(config))
    done = {"status": "completed", "final_accuracy": 0.5, "best_accuracy": 0.5}
    monkeypatch.setattr(
        cli_module, "run_job", _fake_job({**done, "uplink_bytes": 0, "wall_seconds": 1.0})
    )
    # Execute
    code = main(["run", "--resume", str(out)])
    # Assert
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert f"resuming {out}: continuing from round 3 of 4 (checkpoint after round 2)" in lines
    assert [cfg.num_server_rounds for cfg in data_checks_recorded] == [4]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "logits-subset=0.5",
            "--resume: logits-subset=0.5 differs from the run's logits-subset=1.0",
        ),
        ("seed=3", "--resume: seed=3 differs from the run's seed=0"),
        ("teacher-rounds=0", "--resume: teacher-rounds=0 differs from the run's teacher-rounds=5"),
        (
            "student-model='mlp'",
            "--resume: student-model='mlp' differs from the run's student-model='cnn-small'",
        ),
    ],
)
def test_resume_refuses_a_change_of_what_the_run_is_built_on(
    tmp_path, capsys, monkeypatch, change, message
):
    # Prepare: an interrupted run (checkpoint after round 2)
    from feddistill import cli as cli_module

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest").write_text("round-2.pt")
    (out / "run-config.json").write_text(json.dumps({"num-server-rounds": 4}))
    before = sorted(p.name for p in out.rglob("*"))
    monkeypatch.setattr(cli_module, "run_job", _fake_job({"status": "completed"}))
    # Execute
    code = main(["run", "--resume", str(out), "--set", change])
    # Assert: refused before anything runs; the folder is untouched
    assert code == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == before


def test_resume_refuses_fewer_rounds_than_the_checkpoint_holds(tmp_path, capsys, monkeypatch):
    # Prepare: an interrupted 4-round run with a checkpoint after round 3
    from feddistill import cli as cli_module

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest").write_text("round-3.pt")
    (out / "run-config.json").write_text(json.dumps({"num-server-rounds": 4}))
    before = sorted(p.name for p in out.rglob("*"))
    monkeypatch.setattr(cli_module, "run_job", _fake_job({"status": "completed"}))
    # Execute
    code = main(["run", "--resume", str(out), "--set", "num-server-rounds=2"])
    # Assert: refused, naming both counts and what is allowed; nothing touched
    assert code == 2
    err = capsys.readouterr().err
    assert "num-server-rounds=2 is below the 3 rounds the checkpoint" in err
    assert "allowed: 3 or more" in err
    assert sorted(p.name for p in out.rglob("*")) == before


def test_unwritable_out_dir_is_one_line_naming_the_path(
    tmp_path, capsys, monkeypatch, data_checks_recorded
):
    # Prepare: the run cannot write into its folder (a read-only out-dir on --resume;
    # found by the fresh-user pass: it ended in a traceback)
    from feddistill import cli as cli_module

    denied = tmp_path / "run" / ".client-data.npz.tmp"

    def run_job(cfg, **kw):
        raise PermissionError(1, "Operation not permitted", str(denied))

    monkeypatch.setattr(cli_module, "run_job", run_job)
    # Execute
    code = main(["run", "--engine", "inprocess", "--out", str(tmp_path / "run")])
    # Assert
    err = capsys.readouterr().err
    assert code == 2
    assert "error: cannot write there:" in err and str(denied) in err.replace("\n", "")
    assert "Traceback" not in err


def test_resume_may_change_what_the_run_does_not_read(tmp_path, monkeypatch, data_checks_recorded):
    # Prepare: an interrupted kmeans run: dirichlet-alpha plays no part in it
    from feddistill import cli as cli_module

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest").write_text("round-2.pt")
    (out / "run-config.json").write_text(json.dumps({"num-server-rounds": 4}))
    done = {"status": "completed", "final_accuracy": 0.5, "best_accuracy": 0.5}
    monkeypatch.setattr(
        cli_module, "run_job", _fake_job({**done, "uplink_bytes": 0, "wall_seconds": 1.0})
    )
    # Execute
    code = main(["run", "--resume", str(out), "--set", "dirichlet-alpha=0.1"])
    # Assert
    assert code == 0
    assert [cfg.dirichlet_alpha for cfg in data_checks_recorded] == [0.1]


def test_phases_and_rounds_are_plain_lines_when_piped(tmp_path, capsys, monkeypatch):
    # Prepare: an engine that reports two phases and one round
    from feddistill import engine
    from feddistill.cli import run_job
    from feddistill.config import from_mapping

    row = {
        "round": 1,
        "accuracy": 0.5,
        "worst_domain_accuracy": 0.25,
        "loss": 1.0,
        "uplink_bytes": 2000,
        "ratio_vs_fedavg_fp32": 0.8,
        "round_seconds": 3.0,
    }

    def fake_job(cfg, on_row=None, ray_address=None, on_phase=None, enter_out_dir=None):
        if enter_out_dir is not None:
            enter_out_dir()
        on_phase("starting SuperLink")
        on_phase("exporting student (mlp, int8 and pruned)")
        on_row(row)
        return {"status": "completed"}

    monkeypatch.setattr(engine, "run_simulation_job", fake_job)
    cfg = from_mapping({"num-server-rounds": 1, "out-dir": str(tmp_path)})
    # Execute
    run_job(cfg)
    # Assert: "<elapsed> s  <phase>" lines, then the round line
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" s  ", 1)[1] for line in lines[:2]] == [
        "starting SuperLink",
        "exporting student (mlp, int8 and pruned)",
    ]
    assert lines[2] == (
        "round   1/1 | acc  50.0% worst  25.0% | loss 1.000 | up 2.00 kB (1.25x larger "
        "than fp32) | 3.0 s"
    )


def test_every_benchmark_is_an_importable_module_with_main():
    # Prepare: the regression guarded: `feddistill bench` ran scripts by file path,
    # which an installed wheel does not have
    import importlib

    from feddistill.cli import BENCHMARKS

    # Execute
    modules = {
        name: importlib.import_module(f"feddistill.benchmarks.{m}")
        for name, m in BENCHMARKS.items()
    }

    # Assert
    assert all(callable(module.main) for module in modules.values())
