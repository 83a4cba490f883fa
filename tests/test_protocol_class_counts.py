"""Class counts in a reply's metrics (consensus = "coverage"): both directions."""

from __future__ import annotations

import pytest

from feddistill import protocol as P


def test_class_count_metrics_count_every_class_including_absent_ones():
    # Prepare: labels 0, 2, 2 of K = 3 classes
    labels = [0, 2, 2]
    # Execute
    metrics = P.class_count_metrics(labels, 3)
    # Assert
    assert metrics == {"class-count-0": 1.0, "class-count-1": 0.0, "class-count-2": 2.0}


def test_read_class_counts_gives_them_back_in_class_order():
    # Prepare
    metrics = {"class-count-1": 0.0, "class-count-0": 1.0, "class-count-2": 2.0, "x": 7.0}
    # Execute
    counts = P.read_class_counts(metrics, num_classes=3, num_examples=3)
    # Assert
    assert counts == (1, 0, 2)


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"class-count-0": 3.0}, "missing for k in \\[1\\]"),
        ({"class-count-0": 4.0, "class-count-1": -1.0}, "non-negative integers"),
        ({"class-count-0": float("nan"), "class-count-1": 3.0}, "non-negative integers"),
        ({"class-count-0": 2.5, "class-count-1": 0.5}, "non-negative integers"),
        ({"class-count-0": 1.0, "class-count-1": 1.0}, "sum to 2, the reply's num-examples is 3"),
    ],
)
def test_read_class_counts_rejects_bad_counts(metrics, message):
    with pytest.raises(ValueError, match=message):
        P.read_class_counts(metrics, num_classes=2, num_examples=3)


def test_class_counts_bytes_are_each_keys_bytes_plus_a_float64():
    # Prepare: 2 class counts ("class-count-0", "class-count-1": 13 bytes each) and a
    # metric that is not a class count
    metrics = {"class-count-0": 4.0, "class-count-1": 0.0, "num-examples": 4.0}
    # Execute
    size = P.class_counts_bytes(metrics)
    # Assert: 2 * (13 + 8)
    assert size == 42


def test_class_counts_bytes_of_a_reply_without_counts_are_zero():
    # Prepare
    metrics = {"num-examples": 4.0, "partition-id": 1.0}
    # Execute
    size = P.class_counts_bytes(metrics)
    # Assert
    assert size == 0
