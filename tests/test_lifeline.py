"""Processes a command starts die with it (parent-death signal + watchdog), on `sleep` trees.

Each test runs a small parent script in a subprocess, kills it with SIGKILL (or lets it
exit) and checks that none of the processes it started is left, and that its temporary
folder is gone. The requirement is "dead within 10 s of the parent's death", so the
tests wait at most 10 s for that and then assert.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from feddistill.lifeline import parent_death_signal, spawn

# The parent: starts `argv`, tells the test the PIDs of the tree below it, then waits.
PARENT = """
import json, subprocess, sys, time
import psutil
from feddistill.lifeline import parent_death_signal, remove_on_exit, spawn
mode, folder, argv, below = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
if mode == "preexec":
    root = subprocess.Popen(argv, preexec_fn=parent_death_signal())
else:
    root = spawn(argv)
    remove_on_exit(folder)
deadline = time.monotonic() + 60
while len(psutil.Process(root.pid).children(recursive=True)) < below and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(3)  # a few watchdog scans (every 1 s) record the tree
tree = [root.pid, *(p.pid for p in psutil.Process(root.pid).children(recursive=True))]
print(json.dumps(tree), flush=True)
if mode != "exit":
    time.sleep(600)
"""

# A root with two grandchildren, one of which leaves the root's session (setsid), so
# only the watchdog's record of the tree can find it once the root is dead.
TREE = ["sh", "-c", "sleep 300 & setsid sleep 301 & wait"]


def start_parent(
    mode: str, folder: Path, argv: list[str], below: int = 2
) -> tuple[subprocess.Popen, list[int]]:
    """Start the parent script; return it and [root, *descendants] (`below` of them)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode, str(folder), json.dumps(argv), str(below)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    line = parent.stdout.readline()
    assert line, "the parent script printed no PIDs"
    return parent, json.loads(line)


def survivors(pids: list[int], wait_s: float) -> list[int]:
    """PIDs still running (not zombies) after waiting up to `wait_s` for them to end."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=wait_s)
    left = []
    for proc in alive:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc.pid)
        except psutil.NoSuchProcess:
            continue
    return left


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_parent_death_signal_kills_the_direct_child_on_sigkill(tmp_path):
    # Prepare: a plain `sleep` started with the parent-death signal only (no watchdog)
    parent, tree = start_parent("preexec", tmp_path, ["sleep", "300"], below=0)
    # Execute
    parent.kill()
    parent.wait()
    left = survivors(tree, wait_s=10)
    kill_all(left)
    # Assert
    assert len(tree) == 1
    assert left == []


def test_watchdog_kills_the_whole_tree_and_removes_the_folder_on_sigkill(tmp_path):
    # Prepare
    folder = tmp_path / "run-home"
    folder.mkdir()
    (folder / "state.db").write_text("x")
    parent, tree = start_parent("spawn", folder, TREE)
    # Execute
    parent.kill()
    parent.wait()
    left = survivors(tree, wait_s=10)
    kill_all(left)
    deadline = time.monotonic() + 10
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    # Assert: the root, `sleep 300` and the setsid'd `sleep 301` are all gone
    assert len(tree) == 3
    assert left == []
    assert not folder.exists()


def test_normal_exit_stops_what_was_left_running_before_returning(tmp_path):
    # Prepare: the parent exits normally without stopping its `sleep` tree
    folder = tmp_path / "run-home"
    folder.mkdir()
    parent, tree = start_parent("exit", folder, TREE)
    # Execute: the parent waits for its watchdog's last sweep before it exits
    parent.wait(timeout=60)
    left = survivors(tree, wait_s=0)
    kill_all(left)
    # Assert
    assert parent.returncode == 0
    assert left == []
    assert not folder.exists()


def test_spawn_refuses_its_own_options():
    # Execute / Assert
    with pytest.raises(ValueError, match=r"spawn\(\) sets \['preexec_fn'\] itself"):
        spawn(["true"], preexec_fn=parent_death_signal())
