"""Train / proxy / test split: sizes, disjointness, determinism, bad fractions."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from feddistill.data import ArrayDataset, DataSplits, split_dataset
from feddistill.data.splits import split_sizes


def _indexed_dataset(num_samples: int) -> ArrayDataset:
    """Image i is filled with the value i, label i % 10, so splits can be traced back."""
    x = torch.arange(num_samples, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    y = torch.arange(num_samples, dtype=torch.int64) % 10
    return ArrayDataset(x=x.contiguous(), y=y, num_classes=10, name="indexed")


def _ids(x: torch.Tensor) -> list[int]:
    return x[:, 0, 0, 0].long().tolist()


def test_sizes_are_rounded_shares_and_train_gets_the_rest():
    # 5000 * 0.2 = 1000 proxy, 5000 * 0.2 = 1000 test, 3000 train
    assert split_sizes(5000, 0.2, 0.2) == (3000, 1000, 1000)
    # 1797 * 0.1 = 179.7 -> 180; 1797 * 0.25 = 449.25 -> 449; 1797 - 629 = 1168
    assert split_sizes(1797, 0.1, 0.25) == (1168, 180, 449)


def test_parts_are_disjoint_and_cover_the_dataset():
    # Prepare
    ds = _indexed_dataset(100)
    # Execute
    splits = split_dataset(ds, proxy_fraction=0.2, test_fraction=0.3, seed=0)
    # Assert
    train, proxy, test = _ids(splits.train_x), _ids(splits.proxy_x), _ids(splits.test_x)
    assert (len(train), len(proxy), len(test)) == (50, 20, 30)
    assert sorted(train + proxy + test) == list(range(100))


def test_labels_follow_their_images():
    # Prepare
    ds = _indexed_dataset(100)
    # Execute
    splits = split_dataset(ds, 0.2, 0.3, seed=0)
    # Assert
    assert splits.train_y.tolist() == [i % 10 for i in _ids(splits.train_x)]
    assert splits.test_y.tolist() == [i % 10 for i in _ids(splits.test_x)]


def test_proxy_labels_are_not_kept():
    # Execute
    names = {f.name for f in dataclasses.fields(DataSplits)}
    # Assert
    assert names == {"train_x", "train_y", "proxy_x", "test_x", "test_y", "num_classes", "name"}


def test_same_seed_same_split():
    # Prepare
    ds = _indexed_dataset(100)
    # Execute
    first = split_dataset(ds, 0.2, 0.2, seed=3)
    second = split_dataset(ds, 0.2, 0.2, seed=3)
    # Assert
    assert _ids(first.train_x) == _ids(second.train_x)
    assert _ids(first.proxy_x) == _ids(second.proxy_x)


def test_other_seed_other_split():
    # Prepare
    ds = _indexed_dataset(100)
    # Execute
    first = split_dataset(ds, 0.2, 0.2, seed=0)
    second = split_dataset(ds, 0.2, 0.2, seed=1)
    # Assert
    assert _ids(first.proxy_x) != _ids(second.proxy_x)


def test_parts_keep_dataset_order():
    # Execute
    splits = split_dataset(_indexed_dataset(100), 0.2, 0.2, seed=0)
    # Assert
    assert _ids(splits.train_x) == sorted(_ids(splits.train_x))


def test_splits_report_shape_and_classes():
    # Execute
    splits = split_dataset(_indexed_dataset(100), 0.2, 0.2, seed=0)
    # Assert
    assert splits.in_shape == (1, 2, 2)
    assert splits.num_classes == 10
    assert splits.name == "indexed"


@pytest.mark.parametrize(
    ("proxy", "test", "message"),
    [
        (0.0, 0.2, r"proxy-fraction=0.0 is out of range; allowed: \(0.0, 1.0\)"),
        (0.2, 1.0, r"test-fraction=1.0 is out of range; allowed: \(0.0, 1.0\)"),
        (-0.1, 0.2, r"proxy-fraction=-0.1 is out of range"),
    ],
)
def test_fraction_outside_open_unit_interval_is_rejected(proxy, test, message):
    # Execute / Assert
    with pytest.raises(ValueError, match=message):
        split_dataset(_indexed_dataset(100), proxy, test, seed=0)


def test_fractions_summing_to_one_are_rejected():
    # Execute / Assert
    with pytest.raises(ValueError, match=r"must be < 1 \(the rest is train\), got 0.5 \+ 0.5"):
        split_dataset(_indexed_dataset(100), 0.5, 0.5, seed=0)


def test_split_leaving_an_empty_part_is_rejected():
    # 3 samples at 0.1: round(0.3) = 0 proxy samples
    with pytest.raises(ValueError, match=r"leaves an empty part \(train=3, proxy=0, test=0\)"):
        split_dataset(_indexed_dataset(3), 0.1, 0.1, seed=0)
