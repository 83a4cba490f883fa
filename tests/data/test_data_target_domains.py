"""Target domains held out of training; one domain per client."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from feddistill.config import from_mapping
from feddistill.data import DataSpec, prepare_federated_data
from feddistill.data.domain_datasets import load_domain_dataset
from feddistill.data.splits import split_indices
from feddistill.data.target_domains import check_targets, domain_partition, target_train_set

MIX = DataSpec(dataset="digits-mix", partitioner="domain", num_partitions=2)


@pytest.fixture(scope="module")
def digits_mix():
    """`digits-mix`, built once (~6 s on 2 cores): the expected rows are read from it."""
    return load_domain_dataset("digits-mix")


def test_no_target_label_reaches_a_client_and_proxy_is_target_inputs(digits_mix):
    # Prepare: digits (domain 1) is the target; recompute the split independently
    ds = digits_mix
    train, _, test = split_indices(len(ds), 0.2, 0.2, seed=0)
    source_rows = train[ds.domains[train] == 0]
    target_rows = train[ds.domains[train] == 1]
    # Execute
    data = prepare_federated_data(dataclasses.replace(MIX, target_domains=(1,)))
    # Assert: clients' data (train_x/train_y) is exactly the source rows, with labels
    assert torch.equal(data.splits.train_x, ds.x[torch.from_numpy(source_rows)])
    assert torch.equal(data.splits.train_y, ds.y[torch.from_numpy(source_rows)])
    assert sorted(np.concatenate(data.partitions).tolist()) == list(range(len(source_rows)))
    # the proxy set is the target's training inputs (labels are not kept anywhere)
    assert torch.equal(data.splits.proxy_x, ds.x[torch.from_numpy(target_rows)])
    assert data.target_domains == (1,) and data.partition_domains == [0, 0]
    assert np.array_equal(data.test_domains, ds.domains[test])


def test_proxy_set_public_keeps_the_public_proxy_split(digits_mix):
    # Prepare
    ds = digits_mix
    _, proxy, _ = split_indices(len(ds), 0.2, 0.2, seed=0)
    # Execute
    data = prepare_federated_data(dataclasses.replace(MIX, target_domains=(1,), proxy_set="public"))
    # Assert
    assert torch.equal(data.splits.proxy_x, ds.x[torch.from_numpy(proxy)])


def test_plain_dataset_uses_kmeans_domains_for_targets():
    # Execute: the seed's split, 2 KMeans clusters of digits, cluster 1 is the target
    data = prepare_federated_data(
        DataSpec(dataset="digits", partitioner="iid", num_partitions=2, target_domains=(1,))
    )
    # Assert
    assert data.num_domains == 2 and data.target_domains == (1,)
    assert data.splits.train_x.shape[0] + data.splits.proxy_x.shape[0] == 1797 - 359 - 359


def test_domain_partition_gives_each_client_one_domain_round_robin():
    # Prepare: domains 0 (4 rows) and 2 (2 rows); 3 clients -> 0, 2, 0
    domains = np.array([0, 2, 0, 0, 2, 0])
    labels = np.zeros(6, dtype=np.int64)
    # Execute
    parts, owner = domain_partition(domains, labels, 3, seed=0)
    # Assert: clients 0 and 2 split domain 0's rows {0, 2, 3, 5} 2 + 2; client 1 gets {1, 4}
    assert owner == [0, 2, 0]
    assert parts[1].tolist() == [1, 4]
    assert sorted(parts[0].tolist() + parts[2].tolist()) == [0, 2, 3, 5]
    assert len(parts[0]) == len(parts[2]) == 2


def test_domain_dirichlet_partition_covers_each_domain():
    # Prepare: one domain, 2 clients, 10 classes x 20 rows
    labels = np.repeat(np.arange(10), 20)
    domains = np.zeros(200, dtype=np.int64)
    # Execute
    parts, owner = domain_partition(domains, labels, 2, seed=0, dirichlet_alpha=0.5)
    # Assert
    assert owner == [0, 0]
    assert sorted(np.concatenate(parts).tolist()) == list(range(200))


def test_domain_partition_needs_a_client_per_domain():
    # Execute / Assert
    with pytest.raises(
        ValueError, match=r"num-partitions=1 is smaller than the 2 source domains \[0, 1\]"
    ):
        domain_partition(np.array([0, 1, 0, 1]), np.zeros(4, np.int64), 1, seed=0)


def test_domain_partition_min_size_names_the_domain():
    # Execute / Assert
    with pytest.raises(
        ValueError,
        match=r"domain 1 has 1 training samples for 1 clients: partition 1 would get 1 < min-partition-size=2",
    ):
        domain_partition(
            np.array([0, 0, 0, 1]), np.zeros(4, np.int64), 2, seed=0, min_partition_size=2
        )


def test_unknown_target_domain_names_the_allowed_range():
    # Execute / Assert
    with pytest.raises(
        ValueError, match=r"target-domains \[6\] do not exist; this dataset has domains 0..5"
    ):
        check_targets((6,), 6)


def test_holding_out_every_domain_is_refused():
    # Execute / Assert
    with pytest.raises(ValueError, match=r"hold out all 2 domains; leave at least one source"):
        check_targets((0, 1), 2)


def test_target_oracle_set_is_the_target_training_rows(digits_mix):
    # Prepare
    ds = digits_mix
    train, _, _ = split_indices(len(ds), 0.2, 0.2, seed=0)
    rows = train[ds.domains[train] == 1]
    # Execute
    x, y = target_train_set(dataclasses.replace(MIX, target_domains=(1,)))
    # Assert
    assert torch.equal(y, ds.y[torch.from_numpy(rows)]) and x.shape[0] == len(rows)


def test_target_oracle_needs_target_domains():
    # Execute / Assert
    with pytest.raises(ValueError, match="the target oracle needs target-domains; got none"):
        target_train_set(MIX)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"target-domains": "a"}, r"target-domains must be a comma list of integers >= 0, got 'a'"),
        (
            {"target-domains": "-1"},
            r"target-domains must be a comma list of integers >= 0, got '-1'",
        ),
        (
            {"target-domains": "1", "partitioner": "kmeans"},
            r"partitioner='kmeans' cannot be used with target-domains",
        ),
        (
            {"target-domains": "3", "num-domains": 2, "partitioner": "iid"},
            r"target-domains \[3\] must be < num-domains=2",
        ),
        ({"proxy-set": "test"}, r"proxy-set='test' is not allowed; choose one of: target, public"),
        ({"num-domains": -1}, r"num-domains=-1 is out of range"),
    ],
)
def test_bad_domain_keys_name_the_key_and_allowed(values, match):
    # Execute / Assert
    with pytest.raises(ValueError, match=match):
        from_mapping(values)
