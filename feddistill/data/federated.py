"""Everything the server and the clients need about the data of one run, from its spec."""

from __future__ import annotations

import dataclasses
import functools
import logging

from feddistill.data.datasets import load_dataset
from feddistill.data.domains import fit_domains
from feddistill.data.federated_data import FederatedData, majority_domains
from feddistill.data.partitioners import partition_train
from feddistill.data.spec import DataSpec, uses_domain_path
from feddistill.data.splits import split_dataset
from feddistill.data.target_domains import prepare_domain_data

logger = logging.getLogger(__name__)

MAX_IMPLICIT_DOMAINS = 4  # iid / dirichlet runs: min(num_partitions, 4) input domains

__all__ = ["FederatedData", "prepare_federated_data", "uses_domain_path"]


@functools.lru_cache(maxsize=4)
def _prepare(spec: DataSpec) -> FederatedData:
    ds = load_dataset(spec.dataset, data_root=spec.data_root, download=spec.download)
    splits = split_dataset(ds, spec.proxy_fraction, spec.test_fraction, spec.seed)
    partitions, model = partition_train(
        splits.train_x,
        splits.train_y,
        spec.partitioner,
        spec.num_partitions,
        spec.seed,
        min_partition_size=spec.min_partition_size,
        dirichlet_alpha=spec.dirichlet_alpha,
    )
    if model is None:
        model = fit_domains(
            splits.train_x, min(spec.num_partitions, MAX_IMPLICIT_DOMAINS), spec.seed
        )
        partition_domains = majority_domains(
            model.predict(splits.train_x), partitions, model.n_domains
        )
    else:
        partition_domains = list(range(spec.num_partitions))
    test_domains = model.predict(splits.test_x)
    return FederatedData(
        splits=splits,
        partitions=partitions,
        test_domains=test_domains,
        partition_domains=partition_domains,
        num_domains=model.n_domains,
        domain_model=model,
    )


@functools.lru_cache(maxsize=4)
def _prepare_domains(spec: DataSpec) -> FederatedData:
    return prepare_domain_data(spec)


def prepare_federated_data(spec: DataSpec) -> FederatedData:
    """Load, split and partition the run's dataset and fit its input domains.

    Steps: :func:`load_dataset` -> :func:`split_dataset` (proxy / test / train by
    ``spec.seed``) -> :func:`partition_train` on the train part. With
    ``partitioner = kmeans`` the domains are the partitioner's clusters (partition ``k``
    is domain ``k``); otherwise they are ``fit_domains(train_x, min(num_partitions, 4),
    seed)``. Named domains, target domains or a domain partitioner take the path of
    :func:`feddistill.data.target_domains.prepare_domain_data`. Deterministic: the same
    spec gives the same result in every process. Results are cached per process on the
    spec (up to 4 specs per path).

    Args:
        spec: the run's data settings (``RunConfig.data_spec()`` for a run).

    Returns:
        The run's data; its tensors are shared with other callers (do not modify them
        in place), its numpy arrays and lists are this caller's own copies.

    Raises:
        ValueError: an unknown dataset, bad fractions, or partitions that cannot be
            formed (see :func:`partition_train`).
        FileNotFoundError: a torchvision dataset missing from ``data_root`` while
            ``download`` is off.
        RuntimeError: a download that failed.

    References:
        Label skew by Dirichlet proportions: Hsu et al., arXiv:1909.06335.
    """
    data = _prepare_domains(spec) if uses_domain_path(spec) else _prepare(spec)
    logger.info(
        "federated data: %s, %d partitions %s, %d domains",
        spec.dataset,
        len(data.partitions),
        [len(p) for p in data.partitions],
        data.num_domains,
    )
    return dataclasses.replace(
        data,
        partitions=[p.copy() for p in data.partitions],
        test_domains=data.test_domains.copy(),
        partition_domains=list(data.partition_domains),
    )
