"""The ServerApp's admission gate and the engine's held log (data checks overlapping start-up)."""

from __future__ import annotations

import threading
import time

import pytest

from feddistill.engine import HeldLog
from feddistill.server.admission import ADMIT_ENV, wait_for_admission


def test_no_admission_file_named_means_no_wait(monkeypatch) -> None:
    monkeypatch.delenv(ADMIT_ENV, raising=False)
    wait_for_admission(timeout_s=0.0)  # returns at once


def test_the_server_waits_until_the_engine_admits_it(tmp_path, monkeypatch) -> None:
    # Prepare: the engine creates the file a little later
    admit = tmp_path / "admitted"
    monkeypatch.setenv(ADMIT_ENV, str(admit))
    timer = threading.Timer(0.3, admit.touch)
    timer.start()
    # Execute
    t0 = time.monotonic()
    wait_for_admission(timeout_s=30)
    # Assert
    assert admit.exists() and time.monotonic() - t0 >= 0.25


def test_an_admission_that_never_comes_times_out_naming_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(ADMIT_ENV, str(tmp_path / "never"))
    with pytest.raises(TimeoutError, match="never"):
        wait_for_admission(timeout_s=0.1)


def test_held_log_writes_nothing_before_it_is_given_its_file(tmp_path) -> None:
    # Prepare
    path = tmp_path / "flower.log"
    with HeldLog() as log:
        log.write(b"superlink line\n")
        # Assert: held, not written
        assert not path.exists()
        assert log.tail() == "superlink line"
        # Execute: the out-dir is ours now
        log.write_to(path)
        log.write(b"simulation line\n")
    # Assert: what was held comes first, in order
    assert path.read_bytes() == b"superlink line\nsimulation line\n"


def test_server_side_data_check_failure_reaches_the_engine_as_the_same_error(
    tmp_path, monkeypatch
) -> None:
    # Prepare: the engine named the checks file; the data cannot give 500 partitions
    from feddistill.config import RunConfig
    from feddistill.server.admission import CHECKS_ENV, read_data_checks, report_data_checks

    checks = tmp_path / "data-checks.json"
    monkeypatch.setenv(CHECKS_ENV, str(checks))
    cfg = RunConfig(dataset="digits", num_partitions=500, out_dir=str(tmp_path / "out"))
    assert read_data_checks(checks) is False  # not reported yet
    # Execute
    passed = report_data_checks(cfg)
    # Assert: the ServerApp stops, the engine raises the check's own error, no out-dir
    assert passed is False
    with pytest.raises(ValueError, match="num-partitions=500"):
        read_data_checks(checks)
    assert not (tmp_path / "out").exists()


def test_server_side_data_checks_that_pass_are_reported(tmp_path, monkeypatch) -> None:
    from feddistill.config import RunConfig
    from feddistill.server.admission import CHECKS_ENV, read_data_checks, report_data_checks

    checks = tmp_path / "data-checks.json"
    monkeypatch.setenv(CHECKS_ENV, str(checks))
    assert report_data_checks(RunConfig(dataset="digits", out_dir=str(tmp_path / "out")))
    assert read_data_checks(checks) is True


def test_without_the_engine_the_serverapp_checks_nothing(monkeypatch) -> None:
    from feddistill.config import RunConfig
    from feddistill.server.admission import CHECKS_ENV, report_data_checks

    monkeypatch.delenv(CHECKS_ENV, raising=False)
    assert report_data_checks(RunConfig(dataset="digits", num_partitions=500)) is True


def test_the_simulation_runtime_is_told_where_to_report_and_wait(tmp_path, monkeypatch) -> None:
    # Prepare: capture the SuperLink's environment (nothing is started)
    from feddistill import engine
    from feddistill.config import RunConfig
    from feddistill.server.admission import CHECK_CUDA_ENV, CHECKS_ENV

    seen: dict = {}

    def fake_spawn(cmd, **kwargs):
        seen.update(kwargs["env"], cwd=kwargs["cwd"])
        raise RuntimeError("stop before starting anything")

    monkeypatch.setattr(engine, "spawn", fake_spawn)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = RunConfig(out_dir=str(tmp_path / "out"))
    # Execute
    with pytest.raises(RuntimeError, match="stop before"):
        engine._submit_once(cfg, None, None, 1.0, None, lambda checks_passed: 0)
    # Assert: both files in the runtime's own home, CUDA checked locally, and the
    # runtime works in its home: the out-dir is not created before the admission
    home = seen["FLWR_HOME"]
    assert seen[ADMIT_ENV].startswith(home) and seen[CHECKS_ENV].startswith(home)
    assert seen[CHECK_CUDA_ENV] == "1" and str(seen["cwd"]) == home
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_engine_raises_the_servers_failed_check_and_stops_the_runtime(tmp_path) -> None:
    # Prepare: a config the data cannot give, sent straight to the engine (no CLI checks)
    import psutil

    from feddistill.config import RunConfig
    from feddistill.engine import run_simulation_job

    out = tmp_path / "out"
    cfg = RunConfig(dataset="digits", num_partitions=500, out_dir=str(out))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    # Execute
    with pytest.raises(ValueError, match="num-partitions=500"):
        run_simulation_job(cfg)
    # Assert: the out-dir was never created, and nothing the engine started lives on
    assert not out.exists()
    left = [
        " ".join(p.cmdline())
        for p in psutil.Process().children(recursive=True)
        if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE
    ]
    # (this test process's watchdog, feddistill.lifeline, lives as long as the process)
    assert [c for c in left if "feddistill.lifeline" not in c] == []


def test_runtime_that_ends_before_the_checks_is_retried_and_leaves_the_out_dir_alone(
    tmp_path, monkeypatch
) -> None:
    # Prepare: an out-dir holding a finished run, and a runtime that always dies before
    # the ServerApp reports its data checks
    import json

    from feddistill import engine
    from feddistill.config import RunConfig

    out = tmp_path / "out"
    out.mkdir()
    old = json.dumps({"status": "completed", "rounds": 3})
    (out / "summary.json").write_text(old)
    calls = []

    def dies_early(cfg, on_row, ray_address, timeout, on_phase, enter, early):
        calls.append(cfg.resume)
        early.append("flwr-simulation: killed")
        return 0

    monkeypatch.setattr(engine, "_submit_once", dies_early)
    monkeypatch.setattr(engine, "check_local_resources", lambda cfg: None)
    # Execute
    with pytest.raises(RuntimeError, match="before the ServerApp checked the data") as err:
        engine.run_simulation_job(RunConfig(out_dir=str(out)), attempts=3)
    # Assert: three fresh attempts, the output in the error, the old run untouched (its
    # summary was neither read as this run's nor removed)
    assert calls == [False, False, False]
    assert "flwr-simulation: killed" in str(err.value)
    assert (out / "summary.json").read_text() == old


def test_a_crashing_check_reaches_the_engine_with_its_traceback(tmp_path, monkeypatch) -> None:
    # Prepare: the checks themselves break (e.g. a corrupt dataset file)
    from feddistill import preflight
    from feddistill.config import RunConfig
    from feddistill.server.admission import CHECKS_ENV, read_data_checks, report_data_checks

    def broken(cfg, check_cuda):
        raise AssertionError("corrupt idx file")

    checks = tmp_path / "data-checks.json"
    monkeypatch.setenv(CHECKS_ENV, str(checks))
    monkeypatch.setattr(preflight, "data_check_failure", broken)
    # Execute: the ServerApp re-raises; the engine raises RuntimeError with the trace
    with pytest.raises(AssertionError):
        report_data_checks(RunConfig(dataset="digits"))
    with pytest.raises(RuntimeError) as err:
        read_data_checks(checks)
    # Assert
    assert "AssertionError: corrupt idx file" in str(err.value)
    assert "Traceback" in str(err.value) and "in broken" in str(err.value)


def test_interrupt_does_not_report_a_previous_runs_summary_as_this_runs(
    tmp_path, monkeypatch, capsys
) -> None:
    # Prepare: the out-dir holds an older finished run; this run is interrupted before
    # it replaced it
    import json
    import os

    from feddistill import cli

    out = tmp_path / "out"
    out.mkdir()
    (out / "run-config.json").write_text("{}")
    (out / "summary.json").write_text(json.dumps({"status": "completed", "rounds": 3}))
    os.utime(out / "summary.json", (1_000_000_000, 1_000_000_000))

    def interrupted(cfg, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_job", interrupted)
    # Execute
    code = cli.main(["run", "--out", str(out)])
    # Assert
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err
    assert "already completed" not in err
