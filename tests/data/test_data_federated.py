"""prepare_federated_data: splits + partitions + domains of one run config."""

from __future__ import annotations

import numpy as np
import pytest

from feddistill.config import RunConfig
from feddistill.data import prepare_federated_data
from feddistill.data.federated import FederatedData, majority_domains


@pytest.fixture(scope="module")
def kmeans_data() -> FederatedData:
    """The default job's data: mnist5k, kmeans, 4 partitions, seed 0."""
    return prepare_federated_data(RunConfig().data_spec())


@pytest.fixture(scope="module")
def iid_data() -> FederatedData:
    return prepare_federated_data(RunConfig(partitioner="iid", num_partitions=6).data_spec())


def test_default_job_splits_mnist5k_3000_1000_1000(kmeans_data):
    # Assert: 5000 * 0.2 proxy, 5000 * 0.2 test, the rest train
    splits = kmeans_data.splits
    assert splits.train_x.shape[0] == 3000
    assert splits.proxy_x.shape[0] == 1000
    assert splits.test_x.shape[0] == 1000
    assert sum(len(p) for p in kmeans_data.partitions) == 3000


def test_kmeans_partition_k_is_domain_k(kmeans_data):
    # Prepare
    model = kmeans_data.domain_model
    train_x = kmeans_data.splits.train_x
    # Execute
    domains = [np.unique(model.predict(train_x[p])).tolist() for p in kmeans_data.partitions]
    # Assert
    assert domains == [[0], [1], [2], [3]]
    assert kmeans_data.partition_domains == [0, 1, 2, 3]
    assert kmeans_data.num_domains == 4


def test_kmeans_partitions_are_largest_first(kmeans_data):
    # Execute
    sizes = [len(p) for p in kmeans_data.partitions]
    # Assert
    assert sizes == sorted(sizes, reverse=True)


def test_test_samples_get_a_domain_each(kmeans_data):
    # Execute
    test_domains = kmeans_data.test_domains
    # Assert
    assert test_domains.shape == (1000,)
    assert test_domains.dtype == np.int64
    assert set(test_domains.tolist()) == {0, 1, 2, 3}


def test_iid_run_has_min_of_partitions_and_4_domains(iid_data):
    # Assert: min(6, 4) = 4 domains, one majority domain per partition
    assert iid_data.num_domains == 4
    assert len(iid_data.partition_domains) == 6
    assert all(0 <= d < 4 for d in iid_data.partition_domains)


def test_same_config_reuses_the_cached_tensors(kmeans_data):
    # Execute
    again = prepare_federated_data(RunConfig().data_spec())
    # Assert
    assert again.splits is kmeans_data.splits
    assert [p.tolist() for p in again.partitions] == [p.tolist() for p in kmeans_data.partitions]


def test_callers_get_their_own_index_arrays(kmeans_data):
    # Prepare
    mine = prepare_federated_data(RunConfig().data_spec())
    # Execute
    mine.partitions[0][0] = -1
    mine.test_domains[0] = -1
    # Assert
    assert kmeans_data.partitions[0][0] >= 0
    assert prepare_federated_data(RunConfig().data_spec()).test_domains[0] >= 0


def test_label_counts_per_partition_add_up(kmeans_data):
    # Execute
    counts = kmeans_data.partition_label_counts()
    # Assert
    assert counts.shape == (4, 10)
    assert counts.sum(axis=1).tolist() == [len(p) for p in kmeans_data.partitions]
    assert counts.sum(axis=0).tolist() == np.bincount(kmeans_data.splits.train_y.numpy()).tolist()


def test_majority_domain_ties_go_to_the_lower_id():
    # Prepare: partition 0 holds domains [2, 2, 1]; partition 1 holds [1, 2] (a tie)
    train_domains = np.array([2, 2, 1, 1, 2])
    partitions = [np.array([0, 1, 2]), np.array([3, 4])]
    # Execute / Assert
    assert majority_domains(train_domains, partitions, num_domains=3) == [2, 1]


def test_impossible_partitioning_is_reported():
    # Prepare: 3000 train samples cannot fill 400 partitions of 10
    cfg = RunConfig(partitioner="iid", num_partitions=400)
    # Execute / Assert
    with pytest.raises(ValueError, match=r"400 \* 10 = 4000 > 3000"):
        prepare_federated_data(cfg.data_spec())
