"""`feddistill bench memory`: who holds the memory at the tree's peak (issue 13)."""

from __future__ import annotations

import os

import psutil

from feddistill.benchmarks.memory import ProcessMemory, by_role, markdown, pss_bytes, role_of


def test_role_of_names_a_ray_client_actor_before_the_generic_worker() -> None:
    # Prepare: a client actor's command line also holds default_worker.py
    cmdline = ["ray::ClientAppActor", "/x/ray/_private/workers/default_worker.py"]
    # Execute / Assert
    assert role_of(cmdline) == "Ray worker (client actor)"


def test_role_of_an_unknown_process_is_its_program_name() -> None:
    # Execute / Assert
    assert role_of(["/usr/bin/sleep", "5"]) == "sleep"


def test_by_role_sums_processes_per_role_largest_first() -> None:
    # Prepare: two actors of 100 + 300 MiB (40 + 60 of CUDA libs), one ServerApp of 250
    mib = 2**20
    snapshot = [
        ProcessMemory(1, "actor", 100 * mib, 40 * mib, 10 * mib),
        ProcessMemory(2, "server", 250 * mib, 0, 0),
        ProcessMemory(3, "actor", 300 * mib, 60 * mib, 5 * mib),
    ]
    # Execute
    rows = by_role(snapshot)
    # Assert: actor 2 processes, 400 MiB (100 CUDA, 15 torch); then server
    assert rows == [("actor", 2, 400 * mib, 100 * mib, 15 * mib), ("server", 1, 250 * mib, 0, 0)]


def test_markdown_states_the_peak_in_gib_and_the_snapshot_total() -> None:
    # Prepare: 1.5 GiB peak; a snapshot of 512 + 256 MiB
    mib = 2**20
    snapshot = [ProcessMemory(1, "a", 512 * mib, 0, 0), ProcessMemory(2, "b", 256 * mib, 0, 0)]
    # Execute
    text = markdown(snapshot, 3 * 2**29, "run")
    # Assert
    assert text.startswith("run: peak RSS of the process tree 1.50 GiB")
    assert "| a | 1 | 512 | 0 | 0 |" in text
    assert "| **total at the peak snapshot** | 2 | 768 | | |" in text


def test_pss_bytes_of_this_process_is_positive_and_at_most_its_rss() -> None:
    # Prepare
    rss = psutil.Process().memory_info().rss
    # Execute
    pss = pss_bytes(os.getpid())
    # Assert: this process maps shared libraries, so 0 < PSS <= RSS (+ slack for growth)
    assert 0 < pss <= rss * 1.1


def test_pss_bytes_of_a_missing_process_is_zero() -> None:
    # Prepare: pid 0 has no /proc entry
    # Execute / Assert
    assert pss_bytes(0) == 0


def test_role_of_the_raylet_is_not_a_worker() -> None:
    # Prepare: the raylet's command line names the Python worker command too
    cmdline = [
        "/x/ray/core/src/ray/raylet/raylet",
        "--python_worker_command=/x/python /x/ray/_private/workers/default_worker.py",
    ]
    # Execute / Assert
    assert role_of(cmdline) == "Ray raylet"
