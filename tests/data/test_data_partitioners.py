"""Partitioners: coverage, sizes, determinism (also across processes), bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch

from feddistill.data import KMeansPartitioner, load_dataset, partition_train, split_dataset
from feddistill.data.partitioners import check_counts

PARTITIONERS = ("kmeans", "iid", "dirichlet")


def parts_of(*args, **kwargs) -> list[np.ndarray]:
    """The partitions of :func:`partition_train` (without its domain model)."""
    return partition_train(*args, **kwargs)[0]


# Partitions of mnist5k's train split (seed 0) in a fresh process with one BLAS thread,
# as Ray workers run, printed as JSON lists.
_SUBPROCESS_SCRIPT = """
import json
from feddistill.data import load_dataset, partition_train, split_dataset
s = split_dataset(load_dataset("mnist5k"), 0.2, 0.2, seed=0)
out = {
    name: [p.tolist() for p in partition_train(s.train_x, s.train_y, name, 4, seed=0)[0]]
    for name in ("kmeans", "iid", "dirichlet")
}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def train():
    """mnist5k's train split at seed 0: x (3000, 1, 28, 28), y (3000,)."""
    splits = split_dataset(load_dataset("mnist5k"), 0.2, 0.2, seed=0)
    return splits.train_x, splits.train_y


def _blob_images(sizes: list[int]) -> torch.Tensor:
    """Blob k: images of 1x2x2 pixels near the value 100 * k, blob after blob."""
    gen = torch.Generator().manual_seed(0)
    parts = [100.0 * k + torch.randn(n, 1, 2, 2, generator=gen) for k, n in enumerate(sizes)]
    return torch.cat(parts)


def _no_fit(*args, **kwargs):
    raise AssertionError("fitting must not start")


@pytest.mark.parametrize("name", PARTITIONERS)
def test_every_sample_is_in_exactly_one_partition(train, name):
    # Execute
    parts = parts_of(*train, name, num_partitions=4, seed=0)
    # Assert
    assert len(parts) == 4
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(3000))
    assert all(p.dtype == np.int64 and np.array_equal(p, np.sort(p)) for p in parts)


@pytest.mark.parametrize("name", PARTITIONERS)
def test_min_partition_size_holds(train, name):
    # Execute
    parts = parts_of(*train, name, num_partitions=10, seed=0, min_partition_size=50)
    # Assert
    assert min(len(p) for p in parts) >= 50


@pytest.mark.parametrize("name", PARTITIONERS)
def test_same_seed_gives_same_partitions(train, name):
    # Execute
    first = parts_of(*train, name, num_partitions=4, seed=1)
    second = parts_of(*train, name, num_partitions=4, seed=1)
    # Assert
    assert [p.tolist() for p in first] == [p.tolist() for p in second]


@pytest.mark.parametrize("name", ["iid", "dirichlet"])
def test_other_seed_gives_other_partitions(train, name):
    # Execute
    first = parts_of(*train, name, num_partitions=4, seed=0)
    second = parts_of(*train, name, num_partitions=4, seed=1)
    # Assert
    assert [p.tolist() for p in first] != [p.tolist() for p in second]


def test_same_seed_gives_same_partitions_in_another_process(train):
    # Prepare
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    # Execute
    result = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    other = json.loads(result.stdout)
    # Assert
    for name in PARTITIONERS:
        here = [p.tolist() for p in parts_of(*train, name, 4, seed=0)]
        assert other[name] == here, name


def test_iid_partitions_have_equal_sizes_and_all_labels(train):
    # Execute: 3000 / 4 = 750 each
    parts = parts_of(*train, "iid", num_partitions=4, seed=0)
    # Assert
    assert [len(p) for p in parts] == [750, 750, 750, 750]
    assert all(len(np.unique(train[1].numpy()[p])) == 10 for p in parts)


def test_iid_sizes_differ_by_at_most_one(train):
    # Execute: 3000 = 7 * 428 + 4 -> four partitions of 429, three of 428
    parts = parts_of(*train, "iid", num_partitions=7, seed=0)
    # Assert
    assert sorted(len(p) for p in parts) == [428] * 3 + [429] * 4


def test_kmeans_recovers_separated_domains_largest_first():
    # Prepare: blobs of 6, 9 and 4 images
    x = _blob_images([6, 9, 4])
    y = torch.zeros(19, dtype=torch.int64)
    # Execute
    parts = parts_of(x, y, "kmeans", num_partitions=3, seed=0)
    # Assert: partition 0 = the 9-image blob (rows 6..14), 1 = rows 0..5, 2 = rows 15..18
    assert [p.tolist() for p in parts] == [list(range(6, 15)), list(range(6)), [15, 16, 17, 18]]


def test_kmeans_with_two_partitions_is_a_source_target_split(train):
    # Execute
    parts = parts_of(*train, "kmeans", num_partitions=2, seed=0)
    # Assert
    assert len(parts) == 2
    assert len(parts[0]) >= len(parts[1]) > 0


def test_kmeans_partitioner_follows_the_flower_interface():
    # Prepare
    x = _blob_images([6, 9, 4])
    partitioner = KMeansPartitioner(num_partitions=3, features=x, seed=0)
    partitioner.dataset = datasets.Dataset.from_dict({"row": list(range(19))})
    # Execute
    partition = partitioner.load_partition(2)
    # Assert
    assert partitioner.num_partitions == 3
    assert partition["row"] == [15, 16, 17, 18]
    assert partitioner.domain_model.n_domains == 3


def test_kmeans_partitioner_reads_a_feature_column():
    # Prepare
    x = _blob_images([6, 9, 4]).reshape(19, 4)
    dataset = datasets.Dataset.from_dict({"features": x.tolist()})
    partitioner = KMeansPartitioner(num_partitions=3, seed=0)
    partitioner.dataset = dataset
    # Execute
    partition = partitioner.load_partition(1)
    # Assert: the 6-image blob (rows 0..5)
    assert len(partition) == 6
    assert partition["features"] == x[:6].tolist()


def test_kmeans_partition_id_out_of_range_is_rejected():
    # Prepare
    partitioner = KMeansPartitioner(num_partitions=3, features=_blob_images([6, 9, 4]))
    partitioner.dataset = datasets.Dataset.from_dict({"row": list(range(19))})
    # Execute / Assert
    with pytest.raises(ValueError, match=r"partition_id=3 is out of range; allowed: \[0, 2\]"):
        partitioner.load_partition(3)


def test_kmeans_features_of_wrong_length_are_rejected():
    # Prepare
    partitioner = KMeansPartitioner(num_partitions=2, features=np.zeros((5, 2)))
    partitioner.dataset = datasets.Dataset.from_dict({"row": list(range(6))})
    # Execute / Assert
    with pytest.raises(ValueError, match=r"features have 5 rows but the dataset has 6"):
        partitioner.load_partition(0)


def test_kmeans_on_duplicates_fails_before_fitting(monkeypatch):
    # Prepare: 17 rows of which 9 are distinct (0..8, then 0..7 again); 10 partitions
    x = torch.cat([torch.arange(9.0), torch.arange(8.0)]).view(17, 1, 1, 1)
    y = torch.zeros(17, dtype=torch.int64)
    monkeypatch.setattr("sklearn.cluster.KMeans.fit", _no_fit)
    # Execute / Assert
    with pytest.raises(ValueError, match=r"the 17 samples have only 9 distinct feature rows"):
        parts_of(x, y, "kmeans", num_partitions=10, seed=0)


def test_kmeans_cluster_below_min_size_names_the_sizes():
    # Prepare: blobs of 6, 9 and 4 images; every partition must hold 5
    x = _blob_images([6, 9, 4])
    y = torch.zeros(19, dtype=torch.int64)
    # Execute / Assert
    with pytest.raises(
        ValueError,
        match=r"sizes \[9, 6, 4\] for num-partitions=3: 1 of them below min-partition-size=5",
    ):
        parts_of(x, y, "kmeans", num_partitions=3, seed=0, min_partition_size=5)


@pytest.mark.parametrize("name", PARTITIONERS)
def test_too_many_partitions_fail_before_fitting(monkeypatch, name):
    # Prepare: 60,000 samples, 1,000 partitions of at least 100 -> needs 100,000
    x = torch.zeros(60000, 1, 1, 1)
    y = torch.zeros(60000, dtype=torch.int64)
    monkeypatch.setattr("feddistill.data.partitioners.fit_domains", _no_fit)
    monkeypatch.setattr("feddistill.data.partitioners._index_dataset", _no_fit)
    # Execute / Assert
    with pytest.raises(ValueError, match=r"1000 \* 100 = 100000 > 60000"):
        parts_of(x, y, name, 1000, seed=0, min_partition_size=100)


def test_dirichlet_that_cannot_meet_min_size_fails_after_bounded_draws(train):
    # Execute / Assert: alpha 0.1 over 100 partitions of 3000 samples leaves tiny ones
    with pytest.raises(ValueError, match=r"below min-partition-size=10 in all 11 draws"):
        parts_of(*train, "dirichlet", 100, seed=0, min_partition_size=10, dirichlet_alpha=0.1)


def test_dirichlet_with_strong_skew_still_fills_every_partition(train):
    # Execute
    parts = parts_of(*train, "dirichlet", 100, seed=0, dirichlet_alpha=0.1)
    # Assert
    assert len(parts) == 100
    assert min(len(p) for p in parts) >= 1


def test_dirichlet_small_alpha_skews_labels_more_than_iid(train):
    # Execute: classes per partition holding at least 10% of it
    def main_classes(parts):
        y = train[1].numpy()
        return np.mean([(np.bincount(y[p], minlength=10) >= 0.1 * len(p)).sum() for p in parts])

    skewed = main_classes(parts_of(*train, "dirichlet", 4, seed=0, dirichlet_alpha=0.1))
    iid = main_classes(parts_of(*train, "iid", 4, seed=0))
    # Assert
    assert skewed < iid


def test_unknown_partitioner_lists_valid_names(train):
    with pytest.raises(ValueError, match=r"partitioner='shards' is unknown; choose one of: kmeans"):
        parts_of(*train, "shards", 4, seed=0)


@pytest.mark.parametrize(
    ("num_partitions", "min_size", "message"),
    [
        (0, 1, r"num-partitions=0 is out of range; allowed: integers in \[1, inf\)"),
        (-3, 1, r"num-partitions=-3 is out of range"),
        (4, 0, r"min-partition-size=0 is out of range"),
    ],
)
def test_non_positive_counts_are_rejected(train, num_partitions, min_size, message):
    with pytest.raises(ValueError, match=message):
        parts_of(*train, "iid", num_partitions, seed=0, min_partition_size=min_size)


@pytest.mark.parametrize("value", [2.5, True])
def test_non_integer_counts_are_rejected(value):
    with pytest.raises(ValueError, match=r"num-partitions=.* is out of range"):
        check_counts(value, 1)


def test_negative_seed_is_rejected(train):
    with pytest.raises(ValueError, match=r"seed=-1 is out of range; allowed: \[0, inf\)"):
        parts_of(*train, "iid", 4, seed=-1)


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_non_positive_dirichlet_alpha_is_rejected(train, alpha):
    with pytest.raises(ValueError, match=rf"dirichlet-alpha={alpha} is out of range; allowed: \(0"):
        parts_of(*train, "dirichlet", 4, seed=0, dirichlet_alpha=alpha)


def test_labels_of_another_length_are_rejected(train):
    with pytest.raises(
        ValueError, match=r"train_y must have shape \(N,\) with N = len\(train_x\) = 3000"
    ):
        parts_of(train[0], train[1][:10], "iid", 4, seed=0)


def test_kmeans_partitioner_rejects_non_positive_partitions():
    with pytest.raises(ValueError, match=r"num-partitions=0 is out of range"):
        KMeansPartitioner(num_partitions=0)
