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


def test_partition_json_through_the_main_command_is_deterministic(tmp_path):
    # Execute
    first = cli(
        "partition",
        "--dataset",
        "digits",
        "--num-partitions",
        "3",
        "--json",
        "--out",
        str(tmp_path / "a"),
    )
    second = cli(
        "partition",
        "--dataset",
        "digits",
        "--num-partitions",
        "3",
        "--json",
        "--out",
        str(tmp_path / "b"),
    )
    # Assert
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert [p["id"] for p in data["partitions"]] == [0, 1, 2]
    assert (
        sum(p["size"] for p in data["partitions"]) + data["proxy_size"] + data["test_size"] == 1797
    )
    assert first.stdout == second.stdout


def test_bench_dispatches_to_the_benchmark_script():
    # the compression benchmark's own parser rejects the flag: proof it was reached
    proc = cli("bench", "compression", "--no-such-flag")
    assert proc.returncode == 2 and "--no-such-flag" in proc.stderr


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
