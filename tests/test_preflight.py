"""Issue 13: the torch + data checks of `feddistill run` run in a child process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from feddistill.config import RunConfig
from feddistill.preflight import run_data_checks


def test_data_split_error_comes_back_from_the_child_unchanged(tmp_path) -> None:
    # Prepare: digits has 1078 training samples (60 %); 200 partitions of >= 10 cannot fit
    cfg = RunConfig(dataset="digits", num_partitions=200, out_dir=str(tmp_path / "out"))
    # Execute / Assert
    with pytest.raises(ValueError, match="num-partitions=200"):
        run_data_checks(cfg, in_child=True)


def test_checks_that_pass_return_nothing_and_touch_no_out_dir(tmp_path) -> None:
    # Prepare
    cfg = RunConfig(dataset="digits", num_partitions=2, out_dir=str(tmp_path / "out"))
    # Execute
    run_data_checks(cfg, in_child=False)
    # Assert
    assert not (tmp_path / "out").exists()


def test_logits_top_m_not_below_the_class_count_fails_before_the_run(tmp_path) -> None:
    # Prepare: digits has K = 10 classes, so top-m may be 0..9
    cfg = RunConfig(dataset="digits", logits_top_m=10, out_dir=str(tmp_path / "out"))
    # Execute / Assert
    with pytest.raises(ValueError, match="logits-top-m=10 must be below the 10 classes"):
        run_data_checks(cfg, in_child=False)


def test_simulation_driver_imports_no_torch() -> None:
    # Prepare: a fresh interpreter that builds the CLI, the simulation engine's imports
    # and a checked run config (model, consensus and bit-width names included)
    code = (
        "import sys; from feddistill import cli, config_load, engine, preflight; "
        "cli.build_parser(); config_load.load_config(None, ['student-model=\"mlp\"', 'consensus=\"mean\"']); "
        "print('torch' in sys.modules)"
    )
    # Execute
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Assert: the run's own process stays without torch (it loads in the check child)
    assert out.stdout.strip() == "False"
