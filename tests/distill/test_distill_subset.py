"""Seeded per-round proxy subsets (logits-subset)."""

from __future__ import annotations

import pytest
import torch

from feddistill.distill.subset import proxy_subset, subset_rows


def test_subset_has_round_of_fraction_times_b_sorted_distinct_rows():
    # Prepare / Execute: 30% of 10 samples
    idx = proxy_subset(10, 0.3, seed=0, server_round=4)
    # Assert
    assert len(idx) == 3 and len(set(idx.tolist())) == 3
    assert idx.tolist() == sorted(idx.tolist()) and 0 <= int(idx.min()) and int(idx.max()) < 10


def test_server_and_client_draw_the_same_subset_from_seed_and_round():
    # Prepare / Execute: two independent draws (server side, client side)
    a = proxy_subset(1000, 0.1, seed=3, server_round=2)
    b = proxy_subset(1000, 0.1, seed=3, server_round=2)
    # Assert
    assert torch.equal(a, b)


def test_full_subset_is_every_row_without_a_copy():
    # Prepare
    proxy = torch.randn(5, 2)
    # Execute
    idx = proxy_subset(5, 1.0, seed=0, server_round=1)
    # Assert
    assert idx.tolist() == [0, 1, 2, 3, 4] and subset_rows(proxy, idx) is proxy


@pytest.mark.parametrize(
    ("num_proxy", "fraction", "match"),
    [
        (10, 0.0, r"logits-subset=0.0 is out of range; allowed: \(0.0, 1.0\]"),
        (10, 1.5, r"logits-subset=1.5 is out of range"),
        (0, 0.5, r"num_proxy must be >= 1, got 0"),
    ],
)
def test_bad_subset_arguments_are_named(num_proxy, fraction, match):
    with pytest.raises(ValueError, match=match):
        proxy_subset(num_proxy, fraction, seed=0, server_round=1)
