"""`feddistill compare`: table, groups over seeds, plots, and its errors."""

from __future__ import annotations

import json

import pytest

from feddistill.cli import main
from feddistill.compare import compare, group_runs, load_run, markdown


def make_run(path, strategy, seed, accuracies, uplink=1000, status="completed", **config):
    """A finished run folder written by hand: summary.json and metrics.jsonl."""
    path.mkdir(parents=True)
    rows = [
        {
            "round": i + 1,
            "accuracy": acc,
            "worst_domain_accuracy": acc - 0.1,
            "cumulative_uplink_bytes": uplink * (i + 1),
            "cumulative_downlink_bytes": 2 * uplink * (i + 1),
        }
        for i, acc in enumerate(accuracies)
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {
        "status": status,
        "strategy": strategy,
        "rounds": len(rows),
        "final_accuracy": accuracies[-1],
        "best_accuracy": max(accuracies),
        "uplink_bytes": uplink * len(rows),
        "downlink_bytes": 2 * uplink * len(rows),
        "wall_seconds": 10.0,
        "config": {"strategy": strategy, "seed": seed, "out-dir": str(path), **config},
    }
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_seeds_of_one_config_get_a_mean_and_sample_std_row(tmp_path):
    # Prepare: final accuracy 0.80 and 0.90 -> mean 85.00 %, sample std 7.07 %
    a = make_run(tmp_path / "a", "feddistill", 0, [0.5, 0.8])
    b = make_run(tmp_path / "b", "feddistill", 1, [0.6, 0.9])
    # Execute
    table = markdown(group_runs([load_run(a), load_run(b)]))
    # Assert
    last = table.splitlines()[-1]
    assert last.startswith("| feddistill | mean +- std (n=2) |  | 85.00 +- 7.07 | 85.00 +- 7.07 |")


def test_groups_are_labelled_by_the_keys_that_differ(tmp_path):
    # Prepare: two bit widths, two seeds of the 4-bit run
    runs = [
        load_run(make_run(tmp_path / "a", "feddistill", 0, [0.8], **{"update-bit-width": 4})),
        load_run(make_run(tmp_path / "b", "feddistill", 1, [0.9], **{"update-bit-width": 4})),
        load_run(make_run(tmp_path / "c", "feddistill", 0, [0.7], **{"update-bit-width": 8})),
    ]
    # Execute
    groups = group_runs(runs)
    # Assert
    assert [(g.label, len(g.runs)) for g in groups] == [
        ("feddistill update-bit-width=4", 2),
        ("feddistill update-bit-width=8", 1),
    ]


def test_compare_writes_table_json_and_both_plots(tmp_path):
    # Prepare
    a = make_run(tmp_path / "a", "feddistill", 0, [0.5, 0.8])
    b = make_run(tmp_path / "b", "fedavg", 0, [0.4, 0.6], uplink=40_000)
    c = make_run(tmp_path / "c", "centralized", 0, [0.9, 0.95], uplink=0)
    # Execute
    _, files = compare([a, b, c], tmp_path / "cmp")
    # Assert
    assert [f.name for f in files] == [
        "compare.md",
        "compare.json",
        "compare_accuracy_vs_round.png",
        "compare_accuracy_vs_bytes.png",
    ]
    assert all(f.stat().st_size > 0 for f in files)
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [g["label"] for g in data] == ["feddistill", "fedavg", "centralized"]


def test_folder_without_a_run_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no finished feddistill run"):
        load_run(tmp_path / "empty")


def test_failed_run_is_refused(tmp_path):
    path = make_run(tmp_path / "a", "fedavg", 0, [0.5], status="failed")
    with pytest.raises(ValueError, match="the run's status is 'failed'; only completed runs"):
        load_run(path)


def test_same_folder_twice_is_refused(tmp_path):
    path = make_run(tmp_path / "a", "fedavg", 0, [0.5])
    with pytest.raises(ValueError, match="a run folder is given more than once"):
        compare([path, path], tmp_path / "cmp")


def test_compare_command_prints_the_table_and_the_files(tmp_path, capsys):
    # Prepare
    a = make_run(tmp_path / "a", "feddistill", 0, [0.5, 0.8])
    # Execute
    code = main(["compare", str(a), "--out", str(tmp_path / "cmp")])
    # Assert
    out = capsys.readouterr().out
    assert code == 0 and "80.00" in out
    assert f"written: {tmp_path / 'cmp' / 'compare.md'}," in out


def test_compare_out_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    # Prepare
    from feddistill.cli import main

    target = tmp_path / "afile"
    target.write_text("mine")
    # Execute
    code = main(["compare", str(tmp_path), "--out", str(target)])
    # Assert
    assert code == 2
    assert f"--out '{target}' is a file" in capsys.readouterr().err
    assert target.read_text() == "mine"
