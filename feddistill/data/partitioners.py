"""Partitioners: split the training set into one partition per client.

``kmeans`` gives clients different input domains (:func:`kmeans_partitions`, this
module, plain numpy and scikit-learn; :class:`~feddistill.data.kmeans_partitioner.KMeansPartitioner`
offers it as a flwr-datasets ``Partitioner``); ``iid`` and ``dirichlet`` (label skew) are
flwr-datasets' :class:`~flwr_datasets.partitioner.IidPartitioner` and
:class:`~flwr_datasets.partitioner.DirichletPartitioner`, which work on a Hugging Face
:class:`datasets.Dataset`: :func:`partition_train` builds a small one holding only
``index`` and ``label`` columns and reads the ``index`` column of each partition back.
flwr-datasets is imported only for those two.

Guarantees of :func:`partition_train`: every training sample is in exactly one
partition; every partition has at least ``min_partition_size`` samples (so none is
empty), or a ``ValueError`` names the sizes; the same arguments give the same
partitions in every process.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

from feddistill.data.domains import DEFAULT_N_COMPONENTS, DomainModel, fit_domains, flatten
from feddistill.data.names import PARTITIONER_NAMES

if TYPE_CHECKING:  # flwr-datasets (and Hugging Face datasets) load only
    # for iid / dirichlet: ~1 CPU-s and 61 MiB per process that a kmeans run does not pay
    import datasets
    from flwr_datasets.partitioner import Partitioner

logger = logging.getLogger(__name__)

DIRICHLET_MAX_DRAWS = 11  # flwr-datasets' DirichletPartitioner: 1 draw + 10 retries


def check_counts(num_partitions: int, min_partition_size: int) -> None:
    """Check that both counts are integers >= 1.

    Raises:
        ValueError: naming the first count that is not an integer >= 1.
    """
    for key, value in (
        ("num-partitions", num_partitions),
        ("min-partition-size", min_partition_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{key}={value!r} is out of range; allowed: integers in [1, inf)")


def check_partition_request(num_samples: int, num_partitions: int, min_partition_size: int) -> None:
    """Check that `num_samples` can fill `num_partitions` partitions of the minimum size.

    Args:
        num_samples: samples to split, N.
        num_partitions: partitions asked for, >= 1.
        min_partition_size: smallest allowed partition, >= 1.

    Raises:
        ValueError: if a count is < 1, or ``N < num_partitions * min_partition_size``
            (the message names the three numbers).
    """
    check_counts(num_partitions, min_partition_size)
    needed = num_partitions * min_partition_size
    if num_samples < needed:
        raise ValueError(
            f"cannot split {num_samples} training samples into num-partitions="
            f"{num_partitions} partitions of at least min-partition-size="
            f"{min_partition_size} samples: that needs {num_partitions} * "
            f"{min_partition_size} = {needed} > {num_samples}; lower num-partitions or "
            "min-partition-size, or use more data"
        )


def kmeans_partitions(
    rows: np.ndarray,
    num_partitions: int,
    min_partition_size: int,
    seed: int,
    n_components: int = DEFAULT_N_COMPONENTS,
) -> tuple[list[np.ndarray], DomainModel]:
    """Cross-domain partitions: PCA + KMeans of the rows, one cluster per partition.

    The rows (flattened pixels, or any per-sample vectors) are projected by PCA and
    clustered by KMeans into `num_partitions` clusters (:func:`fit_domains`); partition
    ``k`` is cluster ``k``, and clusters are numbered by size, largest first, ties by the
    smallest row index they contain. With ``num_partitions=2`` this is the seed
    document's source / target split of MNIST. Plain numpy and scikit-learn:
    :class:`~feddistill.data.kmeans_partitioner.KMeansPartitioner` is the same split
    behind flwr-datasets' ``Partitioner`` interface.

    Args:
        rows: features, shape (N, D).
        num_partitions: number of partitions (= clusters), >= 1.
        min_partition_size: smallest allowed cluster, >= 1.
        seed: random state of PCA and KMeans, >= 0.
        n_components: upper bound on the PCA dimension, >= 1.

    Returns:
        ``(indices, model)``: sorted int64 row indices of each partition, and the fitted
        PCA + KMeans model (its domain ``k`` is partition ``k``).

    Raises:
        ValueError: if there are too few rows for the partitions, fewer distinct rows
            than partitions (both checked before fitting), or a cluster has fewer than
            `min_partition_size` rows (the message lists all sizes).

    References:
        Seed document (KMeans source / target split); label-skew counterpart:
        Hsu et al., arXiv:1909.06335.
    """
    check_partition_request(rows.shape[0], num_partitions, min_partition_size)
    model = fit_domains(rows, num_partitions, seed, n_components)
    labels = model.predict(rows)
    sizes = np.bincount(labels, minlength=num_partitions)
    if sizes.min() < min_partition_size:
        small = int((sizes < min_partition_size).sum())
        raise ValueError(
            f"KMeans gave clusters of sizes {sizes.tolist()} for num-partitions="
            f"{num_partitions}: {small} of them below min-partition-size="
            f"{min_partition_size}. Lower num-partitions or min-partition-size, "
            "or change the seed"
        )
    return [np.flatnonzero(labels == k).astype(np.int64) for k in range(num_partitions)], model


def _index_dataset(train_y: np.ndarray) -> datasets.Dataset:
    """A Hugging Face dataset with only ``index`` (0..N-1) and ``label`` columns."""
    import datasets

    num_samples = int(train_y.shape[0])
    return datasets.Dataset.from_dict(
        {"index": np.arange(num_samples, dtype=np.int64), "label": train_y.astype(np.int64)}
    )


def _read_indices(partitioner: Partitioner) -> list[np.ndarray]:
    return [
        np.sort(np.asarray(partitioner.load_partition(k)["index"], dtype=np.int64))
        for k in range(partitioner.num_partitions)
    ]


def _dirichlet(
    train_y: np.ndarray, num_partitions: int, alpha: float, min_partition_size: int, seed: int
) -> list[np.ndarray]:
    from flwr_datasets.partitioner import DirichletPartitioner

    partitioner = DirichletPartitioner(
        num_partitions=num_partitions,
        partition_by="label",
        alpha=float(alpha),
        min_partition_size=min_partition_size,
        self_balancing=False,
        shuffle=False,
        seed=seed,
    )
    partitioner.dataset = _index_dataset(train_y)
    # flwr-datasets warns on every failed draw and raises after 10 retries.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parts = _read_indices(partitioner)
        except ValueError as err:
            raise ValueError(
                f"dirichlet partitioning of {train_y.shape[0]} samples into "
                f"num-partitions={num_partitions} with dirichlet-alpha={alpha} left a "
                f"partition below min-partition-size={min_partition_size} in all "
                f"{DIRICHLET_MAX_DRAWS} draws; raise dirichlet-alpha, or lower "
                "num-partitions or min-partition-size"
            ) from err
    if caught:
        logger.info("dirichlet partitioner needed %d redraws for min size", len(caught))
    return parts


def partition_train(
    train_x: Tensor | np.ndarray,
    train_y: Tensor | np.ndarray,
    partitioner: str,
    num_partitions: int,
    seed: int,
    min_partition_size: int = 1,
    dirichlet_alpha: float = 0.5,
) -> tuple[list[np.ndarray], DomainModel | None]:
    """Split the training set into `num_partitions` disjoint partitions.

    * ``kmeans``: :func:`kmeans_partitions` on the flattened pixels (input domains).
    * ``iid``: the rows shuffled by `seed`, then flwr-datasets' ``IidPartitioner``
      (contiguous shards; sizes differ by at most 1).
    * ``dirichlet``: flwr-datasets' ``DirichletPartitioner`` on the labels: each class is
      divided among partitions by proportions drawn from Dir(`dirichlet_alpha`);
      redrawn up to 10 times while a partition is below `min_partition_size`.

    Args:
        train_x: training images, shape (N, C, H, W) (only ``kmeans`` reads them).
        train_y: training labels, shape (N,), int.
        partitioner: one of ``kmeans``, ``iid``, ``dirichlet``.
        num_partitions: number of partitions (clients), >= 1.
        seed: seed of the shuffle / Dirichlet draws / KMeans, >= 0.
        min_partition_size: smallest allowed partition, >= 1.
        dirichlet_alpha: Dirichlet concentration, > 0 (small = strong label skew).

    Returns:
        ``(partitions, domain_model)``: one sorted int64 array of row indices into the
        training set per partition (each row is in exactly one partition), and the
        KMeans partitioner's domain model (None unless `partitioner` is ``kmeans``).

    Raises:
        ValueError: if `partitioner` is unknown, a count or `seed` is out of range,
            `dirichlet_alpha` <= 0, the shapes disagree, ``N < num_partitions *
            min_partition_size``, KMeans has fewer distinct rows than partitions (both
            checked before fitting), a KMeans cluster is below `min_partition_size`, or
            no Dirichlet draw met `min_partition_size`.

    References:
        Dirichlet label skew: Hsu et al., "Measuring the Effects of Non-Identical Data
        Distribution for Federated Visual Classification", arXiv:1909.06335;
        Yurochkin et al., arXiv:1905.12022 (flwr-datasets' implementation).
    """
    if partitioner not in PARTITIONER_NAMES:
        raise ValueError(
            f"partitioner={partitioner!r} is unknown; choose one of: {', '.join(PARTITIONER_NAMES)}"
        )
    if seed < 0:
        raise ValueError(f"seed={seed!r} is out of range; allowed: [0, inf)")
    if not dirichlet_alpha > 0:
        raise ValueError(f"dirichlet-alpha={dirichlet_alpha!r} is out of range; allowed: (0, inf)")
    labels = np.asarray(train_y.cpu().numpy() if isinstance(train_y, Tensor) else train_y)
    if labels.ndim != 1 or labels.shape[0] != train_x.shape[0]:
        raise ValueError(
            f"train_y must have shape (N,) with N = len(train_x) = {train_x.shape[0]}, got "
            f"{tuple(labels.shape)}"
        )
    num_samples = int(labels.shape[0])
    check_partition_request(num_samples, num_partitions, min_partition_size)
    model = None
    if partitioner == "kmeans":
        parts, model = kmeans_partitions(flatten(train_x), num_partitions, min_partition_size, seed)
    elif partitioner == "iid":
        from flwr_datasets.partitioner import IidPartitioner

        iid = IidPartitioner(num_partitions)
        iid.dataset = _index_dataset(labels).shuffle(seed=seed)
        parts = _read_indices(iid)
    else:
        parts = _dirichlet(labels, num_partitions, dirichlet_alpha, min_partition_size, seed)
    sizes = [len(p) for p in parts]
    # Internal invariants: a disjoint cover of 0..N-1 with every partition big enough.
    assert sum(sizes) == num_samples, sizes
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(num_samples))
    assert min(sizes) >= min_partition_size, sizes
    logger.info("%s partitions (seed %d): sizes %s", partitioner, seed, sizes)
    return parts, model
