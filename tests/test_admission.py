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


def test_the_simulation_runtime_is_told_where_to_wait(tmp_path, monkeypatch) -> None:
    # Prepare: capture the SuperLink's environment (nothing is started)
    from feddistill import engine
    from feddistill.config import RunConfig

    seen: dict = {}

    def fake_spawn(cmd, **kwargs):
        seen.update(kwargs["env"], cwd=kwargs["cwd"])
        raise RuntimeError("stop before starting anything")

    monkeypatch.setattr(engine, "spawn", fake_spawn)
    cfg = RunConfig(out_dir=str(tmp_path / "out"))
    # Execute
    with pytest.raises(RuntimeError, match="stop before"):
        engine._submit_once(cfg, None, None, 1.0, None, lambda: 0)
    # Assert: the admission file lies in the runtime's own home, and the runtime works
    # there: the out-dir is not created before the admission
    home = seen["FLWR_HOME"]
    assert seen[ADMIT_ENV].startswith(home) and str(seen["cwd"]) == home
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_failed_check_stops_the_started_runtime_before_the_out_dir(tmp_path) -> None:
    # Prepare: the data checks fail while the runtime starts (the CLI's enter_out_dir)
    import psutil

    from feddistill.config import RunConfig
    from feddistill.engine import run_simulation_job

    out = tmp_path / "out"
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    def checks_fail() -> None:
        time.sleep(2)  # the SuperLink and `flwr run` are up by now
        raise ValueError("num-partitions=500 is more than the data can give")

    # Execute
    with pytest.raises(ValueError, match="num-partitions=500"):
        run_simulation_job(RunConfig(out_dir=str(out)), enter_out_dir=checks_fail)
    # Assert: the out-dir was never created, and nothing the engine started lives on
    assert not out.exists()
    left = [
        " ".join(p.cmdline())
        for p in psutil.Process().children(recursive=True)
        if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE
    ]
    # (this test process's watchdog, feddistill.lifeline, lives as long as the process)
    assert [c for c in left if "feddistill.lifeline" not in c] == []


def test_a_crashing_check_comes_back_with_the_childs_traceback(tmp_path) -> None:
    # Prepare: MNIST files that exist but hold garbage: torchvision's reader breaks (a
    # bug-like exception, not a failed check)
    import os

    from feddistill.config import RunConfig
    from feddistill.preflight import ChildTraceback, DataChecks

    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (raw / name).write_bytes(os.urandom(100))
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(os.urandom(100))
    cfg = RunConfig(dataset="mnist", data_root=str(tmp_path / "data"), out_dir=str(tmp_path / "o"))
    # Execute
    with DataChecks(cfg) as checks, pytest.raises(Exception) as err:
        checks.wait()
    # Assert: the child's traceback is chained to the re-raised exception
    assert isinstance(err.value.__cause__, ChildTraceback)
    assert "Traceback" in str(err.value.__cause__)


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
