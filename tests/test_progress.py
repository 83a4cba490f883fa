"""Round lines, ratio phrasing and the phases file that `feddistill run` follows."""

import pytest

from feddistill.progress import (
    ROUND_LINE_MAX,
    format_bytes,
    format_round_line,
    ratio_phrase,
    read_new_phases,
    record_phase,
)


@pytest.mark.parametrize(
    ("ratio", "phrase"),
    [
        (4.0, "4.0x smaller"),
        (36.43, "36.4x smaller"),
        (1.5, "1.50x smaller"),
        (0.8, "1.25x larger"),  # 1 / 0.8
        (0.25, "4.0x larger"),
        (1.002, "same size"),
    ],
)
def test_ratio_phrase_reads_right_both_ways(ratio, phrase):
    # Execute / Assert
    assert ratio_phrase(ratio) == phrase


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [(512, "512 B"), (89_291, "89.3 kB"), (1_234_000, "1.23 MB"), (999_999_000, "1.00 GB")],
)
def test_bytes_get_a_unit_and_three_significant_digits(num_bytes, text):
    assert format_bytes(num_bytes) == text


@pytest.mark.parametrize("ratio", [0.0, -2.0, float("inf"), float("nan")])
def test_ratio_phrase_rejects_non_positive_or_infinite(ratio):
    with pytest.raises(ValueError, match="ratio must be a positive finite number"):
        ratio_phrase(ratio)


def test_typical_round_line_fits_100_columns():
    # Prepare: round 10 of 10, a few MB, tens of seconds, no failure
    row = {
        "round": 10,
        "accuracy": 0.9,
        "worst_domain_accuracy": 0.8,
        "loss": 0.5,
        "uplink_bytes": 9_870_000,
        "ratio_vs_fedavg_fp32": 36.43,
        "failed": 0,
        "round_seconds": 45.0,
    }
    # Execute
    line = format_round_line(row, 10)
    # Assert
    assert line == (
        "round  10/10 | acc  90.0% worst  80.0% | loss 0.500 | up 9.87 MB (36.4x smaller "
        "than fp32) | 45.0 s"
    )
    assert len(line) <= ROUND_LINE_MAX


def test_round_line_without_compression_says_larger():
    # Prepare: an uncompressed FedAvg round, uplink 25 % above fp32 (ratio 0.8)
    row = {
        "round": 3,
        "accuracy": 0.912,
        "worst_domain_accuracy": 0.85,
        "loss": 0.3124,
        "uplink_bytes": 1_234_000,
        "ratio_vs_fedavg_fp32": 0.8,
        "failed": 0,
        "round_seconds": 12.34,
    }
    # Execute
    line = format_round_line(row, 10)
    # Assert
    assert line == (
        "round   3/10 | acc  91.2% worst  85.0% | loss 0.312 | up 1.23 MB (1.25x larger "
        "than fp32) | 12.3 s"
    )


def test_wide_round_line_with_failures_fits_a_120_column_terminal():
    # Prepare: a wide but plausible round: 3-digit rounds, MB and seconds, 2-digit failures
    row = {
        "round": 100,
        "accuracy": 1.0,
        "worst_domain_accuracy": 1.0,
        "loss": 10.0,
        "uplink_bytes": 999_999_000,
        "ratio_vs_fedavg_fp32": 0.1,
        "failed": 20,
        "round_seconds": 999.94,
    }
    # Execute
    line = format_round_line(row, 100)
    # Assert: the whole line (~122 characters before issue 14 for a small run)
    expected = (
        "round 100/100 | acc 100.0% worst 100.0% | loss 10.000 | up 1.00 GB (10.0x larger "
        "than fp32) | 20 failed | 999.9 s"
    )
    assert line == expected
    assert len(expected) == 113


def test_phases_are_read_once_each_and_a_partial_line_waits(tmp_path):
    # Prepare
    record_phase(tmp_path, "loading data")
    record_phase(tmp_path, "round 1/2", rows_done=0)
    with (tmp_path / "phases.jsonl").open("a") as fh:
        fh.write('{"phase": "round 2')  # being written
    # Execute
    first, seen = read_new_phases(tmp_path, 0)
    with (tmp_path / "phases.jsonl").open("a") as fh:
        fh.write('/2", "rows": 1}\n')
    second, seen = read_new_phases(tmp_path, seen)
    # Assert
    assert first == [("loading data", None), ("round 1/2", 0)]
    assert second == [("round 2/2", 1)] and seen == 3
