"""Engine pieces that need no SuperLink: out-dir safety, resume config, failure triage."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from feddistill import cli
from feddistill.config import RunConfig
from feddistill.engine import ProcessGroup, permanent_failure
from feddistill.preflight import (
    check_local_resources,
    check_server_threads,
    load_run_config,
    prepare_out_dir,
)
from feddistill.run_folder import CHECKPOINT_MISMATCH, RUN_FAILED, RunFolder


def test_out_dir_with_foreign_files_is_refused_and_untouched(tmp_path):
    # Prepare
    (tmp_path / "holiday.png").write_bytes(b"png")
    (tmp_path / "report.md").write_text("mine")
    # Execute / Assert
    with pytest.raises(ValueError, match="is not empty and holds no previous feddistill run"):
        prepare_out_dir(RunConfig(out_dir=str(tmp_path)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holiday.png", "report.md"]


def test_previous_run_folder_is_cleared_of_run_files_only(tmp_path):
    # Prepare: a previous run's files plus one of the user's
    prepare_out_dir(RunConfig(out_dir=str(tmp_path)))
    for name in ("metrics.csv", "summary.json", "accuracy_vs_round.png"):
        (tmp_path / name).write_text("old")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "notes.txt").write_text("keep")
    # Execute
    prepare_out_dir(RunConfig(out_dir=str(tmp_path), num_server_rounds=3))
    # Assert
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "run-config.json"]
    assert json.loads((tmp_path / "run-config.json").read_text())["num-server-rounds"] == 3


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text("")
    with pytest.raises(ValueError, match="is a file; give a folder"):
        prepare_out_dir(RunConfig(out_dir=str(path)))


def test_out_dir_that_cannot_be_created_is_a_clear_error():
    with pytest.raises(ValueError, match="out-dir '/proc/feddistill-x' cannot be used"):
        prepare_out_dir(RunConfig(out_dir="/proc/feddistill-x"))


def test_resume_of_a_missing_folder_says_there_is_no_such_folder(tmp_path):
    with pytest.raises(ValueError, match=r"'.*missing': no such folder; give the out-dir"):
        load_run_config(tmp_path / "missing")


def test_out_dir_that_is_a_file_is_refused_before_the_data_checks(
    tmp_path, data_checks_recorded, capsys
):
    # Prepare: the out-dir is a file; the data checks would take seconds to a minute
    target = tmp_path / "a-file"
    target.write_text("x")
    # Execute
    code = cli.main(["run", "--out", str(target), "--engine", "inprocess"])
    # Assert: refused by the cheap check, the data checks never ran
    assert code == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    assert data_checks_recorded == []
    assert target.read_text() == "x"


def test_load_run_config_needs_checkpoint_and_config(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint found there"):
        load_run_config(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("round-1.pt")
    with pytest.raises(ValueError, match="no run-config.json found there"):
        load_run_config(tmp_path)


def test_resume_uses_the_interrupted_runs_config_then_overrides(
    tmp_path, monkeypatch, data_checks_recorded
):
    # Prepare: a run started with 4 rounds on digits, checkpointed
    prepare_out_dir(RunConfig(out_dir=str(tmp_path), num_server_rounds=4, dataset="digits"))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("round-2.pt")
    seen = []
    monkeypatch.setattr(cli, "run_job", lambda cfg, **kw: seen.append(cfg) or {"status": "failed"})
    # Execute
    cli.main(["run", "--resume", str(tmp_path), "--set", "alpha=0.5"])
    # Assert
    cfg = seen[0]
    assert (cfg.num_server_rounds, cfg.dataset, cfg.alpha, cfg.resume) == (4, "digits", 0.5, True)
    assert cfg.out_dir == str(tmp_path.resolve())
    assert data_checks_recorded == [cfg]  # the data checks saw the config that runs


def test_fresh_run_never_resumes(tmp_path, monkeypatch, data_checks_recorded):
    seen = []
    monkeypatch.setattr(cli, "run_job", lambda cfg, **kw: seen.append(cfg) or {"status": "failed"})
    assert cli.main(["run", "--out", str(tmp_path / "new"), "--set", "resume=true"]) == 1
    assert seen[0].resume is False
    assert data_checks_recorded == seen


def test_ray_placement_failure_in_this_attempts_log_is_permanent(tmp_path):
    # Prepare: an old attempt's line, then this attempt's
    folder = RunFolder(tmp_path)
    folder.flower_log.write_text("old: ActorPool is empty\n")
    offset = folder.flower_log.stat().st_size
    # Execute / Assert: only what this attempt wrote counts
    assert permanent_failure(folder, offset) is None
    with folder.flower_log.open("a") as fh:
        fh.write("ERROR ... ActorPool is empty. ...\n")
    assert "client-num-cpus / client-num-gpus" in permanent_failure(folder, offset)


def test_server_error_code_stops_the_retries(tmp_path):
    # Prepare: the ServerApp refused a checkpoint that does not fit (no log text needed)
    folder = RunFolder(tmp_path)
    folder.write_server_error(CHECKPOINT_MISMATCH, "the checkpoint in ... does not fit")
    # Execute
    reason = permanent_failure(folder, 0)
    # Assert
    assert reason == "the checkpoint does not fit the configured student-model"


def test_failed_run_code_is_not_a_permanent_runtime_failure(tmp_path):
    # Prepare: a run that failed in our code writes a summary; the code alone says nothing
    folder = RunFolder(tmp_path)
    folder.write_server_error(RUN_FAILED, "RuntimeError: boom")
    # Execute / Assert
    assert permanent_failure(folder, 0) is None


def test_resources_this_machine_lacks_fail_before_start(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    with pytest.raises(ValueError, match="client-num-cpus=4 exceeds this machine's 2 CPUs"):
        check_local_resources(RunConfig(client_num_cpus=4))
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    with pytest.raises(ValueError, match="client-num-gpus=0.5 but this machine has no CUDA device"):
        check_local_resources(RunConfig(client_num_gpus=0.5))


def test_more_server_threads_than_cpus_fail_before_start(monkeypatch):
    # (server-num-cpus=1e9 was accepted and hung the run in thread creation)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    with pytest.raises(ValueError, match=r"server-num-cpus=3 exceeds .* 2 CPUs.*allowed: 1..2"):
        check_server_threads(RunConfig(server_num_cpus=3))
    check_server_threads(RunConfig(server_num_cpus=2))


def test_process_group_stops_what_it_tracked():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    group = ProcessGroup()
    group.track(proc.pid)
    group.stop(grace_s=5)
    assert proc.wait(timeout=5) is not None
    assert group.alive() == []


def finished_run(tmp_path, status="completed", rounds=2):
    """A folder that looks like a previous run with a checkpoint and a summary."""
    prepare_out_dir(RunConfig(out_dir=str(tmp_path), num_server_rounds=rounds))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text(f"round-{rounds}.pt")
    if status:
        (tmp_path / "summary.json").write_text(json.dumps({"status": status, "rounds": rounds}))
    return tmp_path


def test_rejected_resources_leave_the_previous_run_untouched(tmp_path, monkeypatch):
    # Prepare
    out = finished_run(tmp_path)
    before = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    # Execute
    code = cli.main(["run", "--out", str(out), "--set", "client-num-cpus=4"])
    # Assert
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == before
    assert json.loads((out / "run-config.json").read_text())["client-num-cpus"] == 1


def test_interrupted_run_is_not_silently_replaced(tmp_path):
    out = finished_run(tmp_path, status=None)
    with pytest.raises(
        ValueError, match="holds an interrupted run; continue it with `feddistill run --resume"
    ):
        prepare_out_dir(RunConfig(out_dir=str(out)))


def test_resuming_a_complete_run_does_nothing(tmp_path, monkeypatch, capsys):
    out = finished_run(tmp_path, rounds=2)
    monkeypatch.setattr(cli, "run_job", lambda cfg, **kw: pytest.fail("must not run"))
    assert cli.main(["run", "--resume", str(out)]) == 0
    # the whole message on one line, whatever the length of the temporary path
    assert f"{out}: the run is already complete (2 rounds)\n" in capsys.readouterr().out


# The data checks are the same on both engines; these run them in process (no runtime
# start-up each). The simulation engine's overlap of the checks with its start-up:
# test_too_many_partitions_fail_before_the_out_dir_is_touched below, and
# tests/test_admission.py.


def test_missing_torchvision_data_fails_before_the_out_dir_is_touched(tmp_path):
    out = tmp_path / "out"
    code = cli.main(
        [
            "run",
            "--engine",
            "inprocess",
            "--out",
            str(out),
            "--set",
            "dataset=mnist",
            "--set",
            f"data-root='{tmp_path / 'none'}'",
        ]
    )
    assert code == 2 and not out.exists()


def test_flower_log_is_written_without_ansi_colour_codes(tmp_path):
    # Prepare: a child printing Flower-style coloured log lines
    import subprocess
    import sys

    from feddistill.progress import pump_without_ansi

    code = r"print('\x1b[92mINFO \x1b[0m:      Starting\n\x1b[93mWARNING \x1b[0m:   slow')"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    # Execute
    with (tmp_path / "flower.log").open("ab") as log:
        pump_without_ansi(child.stdout, log).join(timeout=60)
    child.wait(timeout=60)
    # Assert
    assert (tmp_path / "flower.log").read_bytes() == b"INFO :      Starting\nWARNING :   slow\n"


def test_round_lines_and_phases_keep_the_order_they_were_written(tmp_path):
    # Prepare: both rounds finished between two polls
    from feddistill.progress import follow_progress, record_phase

    record_phase(tmp_path, "round 1/2", rows_done=0)
    (tmp_path / "metrics.jsonl").write_text('{"round": 1}\n')
    record_phase(tmp_path, "round 2/2", rows_done=1)
    with (tmp_path / "metrics.jsonl").open("a") as fh:
        fh.write('{"round": 2}\n')
    record_phase(tmp_path, "exporting student", rows_done=2)
    shown = []
    # Execute
    seen = follow_progress(
        tmp_path, 0, 0, lambda row: shown.append(f"row {row['round']}"), shown.append
    )
    # Assert
    assert shown == ["round 1/2", "row 1", "round 2/2", "row 2", "exporting student"]
    assert seen == (2, 3)


def test_cuda_device_without_cuda_fails_before_the_out_dir_is_touched(tmp_path, monkeypatch):
    # Prepare
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    # Execute
    code = cli.main(["run", "--engine", "inprocess", "--out", str(out), "--set", "device=cuda"])
    # Assert
    assert code == 2 and not out.exists()


def test_too_many_partitions_fail_before_the_out_dir_is_touched(tmp_path, capsys):
    # Prepare: on the simulation engine, whose runtime starts while the checks run
    out = tmp_path / "out"
    # Execute
    code = cli.main(
        ["run", "--out", str(out), "--set", "dataset=digits", "--set", "num-partitions=500"]
    )
    # Assert
    assert code == 2 and not out.exists()
    assert "num-partitions=500" in capsys.readouterr().err


def test_missing_target_domain_fails_before_the_out_dir_is_touched(tmp_path, capsys):
    # Prepare
    out = tmp_path / "out"
    args = ["dataset=digits-mix", "partitioner=domain", "num-partitions=2", "target-domains=7"]
    # Execute
    sets = [a for kv in args for a in ("--set", kv)]
    code = cli.main(["run", "--engine", "inprocess", "--out", str(out), *sets])
    # Assert
    assert code == 2 and not out.exists()
    assert "target-domains [7] do not exist" in capsys.readouterr().err


def test_staged_app_builds_a_fab_of_the_package_alone(tmp_path):
    # Prepare: what `flwr run` builds from the staged copy (Flower's own builder)
    from flwr.cli.build import build_fab_from_disk

    from feddistill.engine import app_dir, stage_app

    # Execute
    staged = stage_app(tmp_path / "app")
    fab = build_fab_from_disk(staged)
    # Assert: the apps' code and pyproject.toml, nothing from the checkout around them
    names = set(zipfile.ZipFile(io.BytesIO(fab)).namelist())
    assert {"pyproject.toml", "feddistill/server/app.py", "feddistill/clients/app.py"} <= names
    assert not [
        n for n in names if n.split("/")[0] not in {"pyproject.toml", "feddistill", ".info"}
    ]
    assert not [n for n in names if "__pycache__" in n]
    sources = {
        p.relative_to(app_dir()).as_posix() for p in (app_dir() / "feddistill").rglob("*.py")
    }
    assert sources <= names
    assert (staged / "pyproject.toml").read_bytes() == (app_dir() / "pyproject.toml").read_bytes()
    with pytest.raises(FileExistsError):
        stage_app(tmp_path / "app")
