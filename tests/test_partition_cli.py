"""`feddistill partition`: JSON on stdout, files, table, exit status 2 on errors."""

from __future__ import annotations

import argparse
import json

import pytest

from feddistill.data import federated
from feddistill.partition_cli import add_partition_parser, run_partition


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="feddistill")
    add_partition_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["partition", *argv])
    assert args.func is run_partition
    return run_partition(args)


def test_json_mode_prints_only_the_summary(tmp_path, capsys):
    # Execute
    code = _run(["--json", "--out", str(tmp_path)])
    # Assert
    out = capsys.readouterr().out
    summary = json.loads(out)
    assert code == 0
    assert set(summary) == {"partitions", "proxy_size", "test_size"}
    assert (summary["proxy_size"], summary["test_size"]) == (1000, 1000)
    assert [p["id"] for p in summary["partitions"]] == [0, 1, 2, 3]
    assert sum(p["size"] for p in summary["partitions"]) == 3000
    assert all(sum(p["label_counts"]) == p["size"] for p in summary["partitions"])


def test_json_mode_is_the_same_run_to_run(tmp_path, capsys):
    # Prepare
    argv = ["--json", "--partitioner", "dirichlet", "--out", str(tmp_path)]
    _run(argv)
    first = capsys.readouterr().out
    federated._prepare.cache_clear()
    # Execute
    _run(argv)
    second = capsys.readouterr().out
    # Assert
    assert first == second


def test_files_are_written(tmp_path):
    # Execute
    _run(["--json", "--out", str(tmp_path / "parts")])
    # Assert
    report = json.loads((tmp_path / "parts" / "partitions.json").read_text())
    png = (tmp_path / "parts" / "partitions.png").read_bytes()
    assert report["config"]["partitioner"] == "kmeans"
    assert [p["domain"] for p in report["partitions"]] == [0, 1, 2, 3]
    assert sum(report["test_domain_counts"]) == 1000
    assert png.startswith(b"\x89PNG")


def test_table_mode_prints_partitions_and_files(tmp_path, capsys):
    # Execute
    code = _run(["--partitioner", "iid", "--num-partitions", "3", "--out", str(tmp_path)])
    # Assert: 3000 / 3 = 1000 per partition
    out = capsys.readouterr().out
    assert code == 0
    assert "iid partitions (seed 0)" in out
    assert out.count(" 1000 ") >= 3
    assert f"wrote {tmp_path / 'partitions.png'}" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--partitioner", "shards"], "partitioner='shards' is not allowed; choose one of"),
        (["--dataset", "svhn"], "dataset='svhn' is not allowed"),
        (["--num-partitions", "0"], "num-partitions=0 is out of range"),
        (["--dirichlet-alpha", "0"], "dirichlet-alpha=0.0 is out of range"),
        (["--num-partitions", "400"], "400 * 10 = 4000 > 3000"),
    ],
)
def test_bad_settings_exit_2_with_message_on_stderr(tmp_path, capsys, argv, message):
    # Execute
    code = _run([*argv, "--json", "--out", str(tmp_path)])
    # Assert
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert message in captured.err


def test_missing_torchvision_data_exits_2(tmp_path, capsys):
    # Execute
    code = _run(["--dataset", "mnist", "--data-root", str(tmp_path), "--out", str(tmp_path)])
    # Assert
    assert code == 2
    assert "--set download=true" in capsys.readouterr().err


def test_unwritable_out_exits_2(tmp_path, capsys):
    # Prepare: --out names an existing file, not a folder
    blocker = tmp_path / "file"
    blocker.write_text("")
    # Execute
    code = _run(["--json", "--out", str(blocker)])
    # Assert
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert "cannot write to --out" in captured.err
