"""RunFolder: the run folder's file names, its error code file and its config record."""

from __future__ import annotations

import json

import pytest

from feddistill.run_folder import OUT_DIR_HOLDS_RUN, RunFolder, ServerError


def test_server_error_round_trips(tmp_path):
    # Prepare
    folder = RunFolder(tmp_path / "run")
    # Execute
    folder.write_server_error(OUT_DIR_HOLDS_RUN, "out-dir holds a previous run")
    # Assert
    assert folder.read_server_error() == ServerError(
        OUT_DIR_HOLDS_RUN, "out-dir holds a previous run"
    )
    assert folder.server_error.name == "server-error.json"


def test_unknown_error_code_is_refused(tmp_path):
    # Execute / Assert
    with pytest.raises(ValueError, match="error code 'oops' is not one of"):
        RunFolder(tmp_path).write_server_error("oops", "x")


def test_unreadable_error_file_reads_as_none(tmp_path):
    # Prepare: a torn write
    folder = RunFolder(tmp_path)
    folder.server_error.write_text('{"code": ')
    # Execute / Assert
    assert folder.read_server_error() is None


def test_run_config_leaves_out_resume(tmp_path):
    # Prepare
    folder = RunFolder(tmp_path)
    # Execute
    folder.write_run_config({"num-server-rounds": 3, "resume": True})
    # Assert
    assert json.loads(folder.run_config.read_text()) == {"num-server-rounds": 3}
    assert folder.holds_run()


def test_remove_results_keeps_foreign_files(tmp_path):
    # Prepare: run files, a plot, a checkpoint folder, and a user's file
    folder = RunFolder(tmp_path)
    for name in ("metrics.csv", "summary.json", "accuracy_vs_round.png", "notes.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("round-1.pt")
    (tmp_path / "timings").mkdir()  # an earlier run's phase timers would add to the next's
    (tmp_path / "timings" / "pid-1.json").write_text("{}")
    # Execute
    folder.remove_results()
    # Assert
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
