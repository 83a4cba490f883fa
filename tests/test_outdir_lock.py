"""One live writer per out-dir: the OS lock on <out-dir>/run.lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from feddistill.cli import main
from feddistill.outdir_lock import LOCK_FILE, OutDirLock, OutDirLocked
from feddistill.server import app as server_app

HOLDER = """
import sys, time
from feddistill.outdir_lock import OutDirLock
OutDirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock on tmp_path/out; killed after the test."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield out, proc
    proc.kill()
    proc.wait()


def test_second_writer_is_refused_naming_the_holder_pid(holder):
    # Prepare
    out, proc = holder
    # Execute / Assert
    with pytest.raises(OutDirLocked, match=rf"in use by a live run \(PID {proc.pid},"):
        OutDirLock(out).acquire()


def test_check_free_refuses_without_touching_the_folder(holder):
    # Prepare
    out, proc = holder
    before = sorted(p.name for p in out.iterdir())
    # Execute
    with pytest.raises(OutDirLocked, match=rf"PID {proc.pid}"):
        OutDirLock(out).check_free()
    # Assert
    assert sorted(p.name for p in out.iterdir()) == before == [LOCK_FILE]


def test_lock_is_free_after_the_holder_is_sigkilled(holder):
    # Prepare
    out, proc = holder
    # Execute
    proc.kill()
    proc.wait()
    lock = OutDirLock(out).acquire()
    # Assert
    assert lock.fd is not None
    assert (out / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    lock.release()


def test_holder_and_its_descendants_share_the_lock(tmp_path):
    # Prepare: this process holds the lock (as `feddistill run` does for its ServerApp)
    out = tmp_path / "out"
    with OutDirLock(out):
        # Execute: a child of this process asks for it
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from feddistill.outdir_lock import OutDirLock; "
                "lock = OutDirLock(sys.argv[1]).acquire(); print(lock.fd, lock.holder)",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    # Assert: not taken again, the holder named
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["None", str(os.getpid())]


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    # Prepare
    path = tmp_path / "results"
    path.write_text("not a folder")
    # Execute / Assert
    with pytest.raises(ValueError, match="is a file; give a folder"):
        OutDirLock(path).acquire()


def test_out_dir_that_cannot_be_created_is_refused(tmp_path):
    # Prepare: a parent that is a file
    (tmp_path / "file").write_text("x")
    # Execute / Assert
    with pytest.raises(ValueError, match="cannot be used"):
        OutDirLock(tmp_path / "file" / "out").acquire()


def test_feddistill_run_on_a_locked_out_dir_exits_2_naming_the_pid(holder, capsys):
    # Prepare
    out, proc = holder
    # Execute
    code = main(["run", "--out", str(out), "--set", 'dataset="digits"'])
    # Assert: refused before anything else; the folder holds only the lock file
    assert code == 2
    assert f"PID {proc.pid}" in capsys.readouterr().err
    assert [p.name for p in Path(out).iterdir()] == [LOCK_FILE]


def test_serverapp_on_a_locked_out_dir_is_refused_and_writes_nothing(holder):
    # Prepare: what `flwr run . --run-config "out-dir=..."` hands the ServerApp
    out, proc = holder
    context = SimpleNamespace(run_config={"out-dir": str(out)})
    # Execute / Assert
    with pytest.raises(OutDirLocked, match=rf"PID {proc.pid}"):
        server_app.main(None, context)
    assert [p.name for p in out.iterdir()] == [LOCK_FILE]
