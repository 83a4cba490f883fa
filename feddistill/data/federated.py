"""Everything the server and the clients need about the data of one run, from its config."""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np

from feddistill.config import RunConfig
from feddistill.data.datasets import load_dataset
from feddistill.data.domains import DomainModel, fit_domains
from feddistill.data.partitioners import partition_train
from feddistill.data.splits import DataSplits, split_dataset

logger = logging.getLogger(__name__)

MAX_IMPLICIT_DOMAINS = 4  # iid / dirichlet runs: min(num_partitions, 4) input domains


@dataclasses.dataclass(frozen=True)
class FederatedData:
    """The splits, the clients' partitions and the input domains of one run.

    :func:`prepare_federated_data` caches its result per process: every call gets its
    own copies of the numpy arrays, but the tensors in `splits` are shared, so never
    modify them in place.

    Attributes:
        splits: train / proxy / test tensors.
        partitions: per client, sorted int64 indices into ``splits.train_x``;
            ``partitions[k]`` is the data of partition (client) ``k``.
        test_domains: domain id of each test sample, int64, shape (N_test,).
        partition_domains: majority domain of each partition (ties: lower id); for the
            ``kmeans`` partitioner partition ``k`` is domain ``k``.
        num_domains: number of domains D.
        domain_model: the fixed feature space + centroids that define the domains
            (``predict`` gives the domain of any image, e.g. of the proxy set); None
            for datasets with named domains.
        target_domains: domain ids held out of training (``target-domains``); empty
            when every domain is a source.
        domain_names: a name per domain id (empty for KMeans domains of the default path).
    """

    splits: DataSplits
    partitions: list[np.ndarray]
    test_domains: np.ndarray
    partition_domains: list[int]
    num_domains: int
    domain_model: DomainModel | None = None
    target_domains: tuple[int, ...] = ()
    domain_names: tuple[str, ...] = ()

    def partition_label_counts(self) -> np.ndarray:
        """Samples per class in each partition, int64, shape (num_partitions, K)."""
        train_y = self.splits.train_y.numpy()
        return np.stack(
            [np.bincount(train_y[p], minlength=self.splits.num_classes) for p in self.partitions]
        )


def majority_domains(
    train_domains: np.ndarray, partitions: list[np.ndarray], num_domains: int
) -> list[int]:
    """Most frequent domain of each partition; ties go to the lower domain id.

    Args:
        train_domains: domain id of each training sample, shape (N_train,).
        partitions: index arrays into the training set.
        num_domains: number of domains D.

    Returns:
        One domain id in [0, D) per partition.
    """
    return [
        int(np.argmax(np.bincount(train_domains[p], minlength=num_domains))) for p in partitions
    ]


@functools.lru_cache(maxsize=4)
def _prepare(
    dataset: str,
    data_root: str,
    download: bool,
    proxy_fraction: float,
    test_fraction: float,
    partitioner: str,
    num_partitions: int,
    dirichlet_alpha: float,
    min_partition_size: int,
    seed: int,
) -> FederatedData:
    ds = load_dataset(dataset, data_root=data_root, download=download)
    splits = split_dataset(ds, proxy_fraction, test_fraction, seed)
    partitions, model = partition_train(
        splits.train_x,
        splits.train_y,
        partitioner,
        num_partitions,
        seed,
        min_partition_size=min_partition_size,
        dirichlet_alpha=dirichlet_alpha,
    )
    if model is None:
        model = fit_domains(splits.train_x, min(num_partitions, MAX_IMPLICIT_DOMAINS), seed)
        partition_domains = majority_domains(
            model.predict(splits.train_x), partitions, model.n_domains
        )
    else:
        partition_domains = list(range(num_partitions))
    test_domains = model.predict(splits.test_x)
    return FederatedData(
        splits=splits,
        partitions=partitions,
        test_domains=test_domains,
        partition_domains=partition_domains,
        num_domains=model.n_domains,
        domain_model=model,
    )


_DOMAIN_FIELDS = (
    "dataset",
    "data_root",
    "download",
    "proxy_fraction",
    "test_fraction",
    "partitioner",
    "num_partitions",
    "dirichlet_alpha",
    "min_partition_size",
    "seed",
    "target_domains",
    "proxy_set",
    "num_domains",
)


def uses_domain_path(cfg: RunConfig) -> bool:
    """Named domains, target-domains or a domain partitioner: see :mod:`.target_domains`."""
    from feddistill.data.domain_datasets import DOMAIN_DATASET_NAMES

    return (
        cfg.dataset in DOMAIN_DATASET_NAMES
        or bool(cfg.target_domain_ids())
        or cfg.partitioner in ("domain", "domain-dirichlet")
    )


@functools.lru_cache(maxsize=4)
def _prepare_domains(*values: object) -> FederatedData:
    from feddistill.data.target_domains import prepare_domain_data

    fields = dict(zip(_DOMAIN_FIELDS, values, strict=True))
    return prepare_domain_data(RunConfig(**fields))  # type: ignore[arg-type]


def prepare_federated_data(cfg: RunConfig) -> FederatedData:
    """Load, split and partition the run's dataset and fit its input domains.

    Steps: :func:`load_dataset` -> :func:`split_dataset` (proxy / test / train by
    ``cfg.seed``) -> :func:`partition_indices` on the train part. With
    ``partitioner = kmeans`` the domains are the partitioner's clusters (partition ``k``
    is domain ``k``); otherwise they are ``fit_domains(train_x, min(num_partitions, 4),
    seed)``. Deterministic: the same data fields of `cfg` give the same result in every
    process. Results are cached per process on the data fields (up to 4 configs).

    Args:
        cfg: the run config; only its data fields are read (dataset, data_root,
            download, proxy_fraction, test_fraction, partitioner, num_partitions,
            dirichlet_alpha, min_partition_size, seed).

    Returns:
        The run's data; its tensors are shared with other callers (do not modify them
        in place), its numpy arrays and lists are this caller's own copies.

    Raises:
        ValueError: an unknown dataset, bad fractions, or partitions that cannot be
            formed (see :func:`partition_indices`).
        FileNotFoundError: a torchvision dataset missing from ``data_root`` while
            ``download`` is off.
        RuntimeError: a download that failed.

    References:
        Label skew by Dirichlet proportions: Hsu et al., arXiv:1909.06335.
    """
    if uses_domain_path(cfg):
        data = _prepare_domains(*(getattr(cfg, f) for f in _DOMAIN_FIELDS))
    else:
        data = _prepare(
            cfg.dataset,
            cfg.data_root,
            cfg.download,
            cfg.proxy_fraction,
            cfg.test_fraction,
            cfg.partitioner,
            cfg.num_partitions,
            cfg.dirichlet_alpha,
            cfg.min_partition_size,
            cfg.seed,
        )
    logger.info(
        "federated data: %s, %d partitions %s, %d domains",
        cfg.dataset,
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
