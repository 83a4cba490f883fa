"""--seeds parsing and mean ± std."""

from __future__ import annotations

import pytest

from feddistill.seeds import format_mean_std, mean_std, parse_seeds


def test_parse_seeds_reads_a_comma_list():
    # Execute / Assert
    assert parse_seeds("0, 1,2") == [0, 1, 2]


@pytest.mark.parametrize("text", ["", "a", "-1", "1,1"])
def test_parse_seeds_rejects_bad_lists(text):
    # Execute / Assert
    with pytest.raises(ValueError, match="--seeds must be a"):
        parse_seeds(text)


def test_mean_std_uses_the_sample_deviation():
    # Prepare: mean 2, squared deviations 1 + 0 + 1 = 2, / (3 - 1) = 1 -> std 1
    # Execute / Assert
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)


def test_format_mean_std_in_percent():
    # Execute / Assert
    assert format_mean_std([0.9, 0.92]) == "91.0 ± 1.4"


def test_mean_std_of_nothing_is_an_error():
    # Execute / Assert
    with pytest.raises(ValueError, match="mean_std needs at least one value"):
        mean_std([])
