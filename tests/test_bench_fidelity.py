"""feddistill/benchmarks/fidelity.py: the table on hand-made rows, its options, one quick run."""

from __future__ import annotations

import csv
import importlib

import pytest


def _bench():
    return importlib.import_module("feddistill.benchmarks.fidelity")


def _rows(values: dict[str, tuple[float, float]]) -> list[dict]:
    return [
        {"setting": s, "seed": seed, "accuracy": acc, "uplink_bytes": 0, "wall_seconds": 1.0}
        for s, accs in values.items()
        for seed, acc in zip((0, 1), accs, strict=True)
    ]


# fedavg mean 0.91; top-k 0.41: drop 0.50 > half of 0.91 - 0.10 = 0.405 (held); top-k +
# EF 0.91: drop 0 <= 0.01 (held); 4-bit 0.88: drop 0.03 > 0.005 (not held); distilled 0.85
# > alone 0.80 (held)
FAKE = _rows(
    {
        "fedavg": (0.90, 0.92),
        "topk-5%": (0.40, 0.42),
        "topk-5%+ef": (0.905, 0.915),
        "4-bit": (0.88, 0.88),
        "kd-teacher": (0.95, 0.95),
        "kd-student-alone": (0.80, 0.80),
        "kd-student-distilled": (0.85, 0.85),
    }
)


def _line(table: str, number: int) -> str:
    return next(x for x in table.splitlines() if x.startswith(f"| {number} |"))


def test_table_puts_published_beside_mean_std_and_says_if_the_shape_held():
    # Prepare
    bench = _bench()
    # Execute
    table = bench.markdown(FAKE, "## t")
    # Assert
    assert _line(table, 2) == (
        "| 2 | top-k 5% without error feedback loses most of FedAvg's accuracy (FedLab "
        "MNIST) | 11.35% vs FedAvg 93.14% | topk-5% 41.0 ± 1.4 vs fedavg 91.0 ± 1.4 | yes |"
    )
    assert _line(table, 3).endswith("| topk-5%+ef 91.0 ± 0.7 vs fedavg 91.0 ± 1.4 | yes |")
    assert _line(table, 4).endswith("| 4-bit 88.0 ± 0.0 vs fedavg 91.0 ± 1.4 | NO |")
    assert _line(table, 5).endswith(
        "| kd-student-distilled 85.0 ± 0.0 vs kd-student-alone 80.0 ± 0.0 vs "
        "kd-teacher 95.0 ± 0.0 | yes |"
    )


def test_table_explains_a_shape_that_did_not_hold_and_only_that_one():
    # Prepare
    bench = _bench()
    # Execute
    table = bench.markdown(FAKE, "## t")
    # Assert: row 4 missed: its disagreement note is there; row 2 held: its note is not
    notes = table.split("Notes:")[1]
    assert "4. our quantizer is not QSGD" in notes
    assert "not reproduced: 4-bit codes" in notes
    assert not any(line.startswith("2. ") for line in notes.splitlines())


def test_table_leaves_out_a_claim_whose_settings_did_not_run():
    # Prepare: only the reference ran
    bench = _bench()
    # Execute
    table = bench.markdown(_rows({"fedavg": (0.9, 0.9)}), "## t")
    # Assert
    assert [x[:5] for x in table.splitlines() if x.startswith("| ") and x[2].isdigit()] == ["| 1 |"]


def test_csv_has_one_row_per_setting_and_seed(tmp_path):
    # Prepare
    bench = _bench()
    # Execute
    bench.write_csv(FAKE, tmp_path / "r.csv")
    # Assert
    with (tmp_path / "r.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 14
    assert rows[0] == {
        "setting": "fedavg",
        "seed": "0",
        "accuracy": "0.9",
        "uplink_bytes": "0",
        "wall_seconds": "1.0",
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rounds", "0"], "--rounds must be an integer >= 1, got 0"),
        (["--labels", "5"], "--labels must be an integer >= 10"),
        (["--labels", "100000"], "--labels must be at most the 3000 training samples of mnist5k"),
        (["--seeds", "0,0"], "--seeds must be a non-empty comma list"),
    ],
)
def test_bad_options_exit_2_naming_the_value(argv, message, capsys):
    # Prepare
    bench = _bench()
    # Execute
    with pytest.raises(SystemExit) as exc:
        bench.main(argv)
    # Assert
    assert exc.value.code == 2
    assert message in " ".join(capsys.readouterr().err.split())


@pytest.mark.slow
def test_quick_run_writes_every_setting_and_the_table(tmp_path, capsys):
    # Prepare
    bench = _bench()
    # Execute
    code = bench.main(["--quick", "--seeds", "0", "--out", str(tmp_path)])
    # Assert
    assert code == 0
    with (tmp_path / "results.csv").open() as fh:
        settings = [r["setting"] for r in csv.DictReader(fh)]
    assert settings == [*bench.FED_SETTINGS, *bench.KD_SETTINGS]
    table = (tmp_path / "results.md").read_text()
    assert [n for n in range(1, 6) if f"\n| {n} | " in table] == [1, 2, 3, 4, 5]
    assert table in capsys.readouterr().out


def test_cost_line_gives_wall_and_cpu_minutes():
    # Prepare: 90 s wall, 30 CPU-s
    bench = _bench()
    # Execute
    line = bench.cost_line(90.0, 30.0)
    # Assert
    assert line.strip() == (
        "Time: 1.5 min wall, 0.5 CPU-min (user + system, this process and its children)."
    )
