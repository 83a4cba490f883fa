"""Issue 13: the settings that keep a private Ray small reach the SuperLink's environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from feddistill import engine
from feddistill.config import RunConfig
from feddistill.ray_memory import lean_ray_env, num_client_actors


def test_lean_env_turns_off_worker_prestart_and_limits_idle_workers() -> None:
    # Execute
    env = lean_ray_env(num_actors=2)
    # Assert
    assert env["RAY_enable_worker_prestart"] == "0"
    assert env["RAY_prestart_worker_first_driver"] == "0"
    assert env["RAY_num_workers_soft_limit"] == "2"
    assert env["RAY_enable_metrics_collection"] == "0"
    assert env["RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION"] == "0.02"
    assert env["MALLOC_ARENA_MAX"] == "2"
    # fixed mmap / trim thresholds made every tensor above 64 KiB a fresh mmap (~1.8x
    # slower training); glibc's dynamic thresholds are kept
    assert "MALLOC_MMAP_THRESHOLD_" not in env and "MALLOC_TRIM_THRESHOLD_" not in env


def test_lean_env_refuses_zero_actors() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="num_actors must be >= 1, got 0"):
        lean_ray_env(num_actors=0)


def test_client_actors_are_cpus_over_client_num_cpus() -> None:
    # Execute / Assert: 5 CPUs, 2 per client -> 2 actors; 1 CPU, 2 per client -> still 1
    assert num_client_actors(RunConfig(client_num_cpus=2), cpus=5) == 2
    assert num_client_actors(RunConfig(client_num_cpus=2), cpus=1) == 1


def _capture_superlink_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    """The environment `_submit_once` starts the SuperLink with (nothing is started)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    seen: dict[str, Any] = {}

    def fake_spawn(cmd: list[str], **kwargs: Any) -> None:
        seen.update(kwargs["env"])
        raise RuntimeError("stop before starting anything")

    monkeypatch.setattr(engine, "spawn", fake_spawn)
    cfg = RunConfig(out_dir=str(tmp_path), client_num_cpus=1)
    with pytest.raises(RuntimeError, match="stop before starting anything"):
        engine._submit_once(cfg, None, None, 1.0, None, lambda checks_passed: 0)
    return seen


def test_private_ray_gets_the_lean_settings(tmp_path, monkeypatch) -> None:
    # Prepare
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # Execute
    env = _capture_superlink_env(tmp_path, monkeypatch)
    # Assert
    assert env["RAY_enable_worker_prestart"] == "0"
    assert env["RAY_num_workers_soft_limit"] == str(num_client_actors(RunConfig()))


def test_attached_ray_cluster_keeps_its_own_settings(tmp_path, monkeypatch) -> None:
    # Execute: RAY_ADDRESS names an existing cluster
    env = _capture_superlink_env(tmp_path, monkeypatch, RAY_ADDRESS="10.0.0.1:6379")
    # Assert
    assert "RAY_enable_worker_prestart" not in env
