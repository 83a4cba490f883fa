"""flwr-datasets' ``Partitioner`` interface to the KMeans (cross-domain) split.

The split itself is :func:`feddistill.data.partitioners.kmeans_partitions` (numpy and
scikit-learn); runs call that directly, so a ``kmeans`` run does not import
flwr-datasets. This class is for code that works with flwr-datasets partitioners.
"""

from __future__ import annotations

import datasets
import numpy as np
from flwr_datasets.partitioner import Partitioner
from torch import Tensor

from feddistill.data.domains import DEFAULT_N_COMPONENTS, DomainModel, flatten
from feddistill.data.partitioners import check_counts, kmeans_partitions


class KMeansPartitioner(Partitioner):
    """Cross-domain partitions: KMeans on the input features, one cluster per partition.

    The features (flattened pixels, or any per-sample vectors) are projected by PCA and
    clustered by KMeans into ``num_partitions`` clusters (:func:`fit_domains`); partition
    ``k`` is cluster ``k``, and clusters are numbered by size, largest first, ties by
    the smallest row index they contain. With ``num_partitions=2`` this is the seed
    document's source / target split of MNIST. Partitioning happens once, on the first
    :meth:`load_partition` (or :attr:`partition_indices`) call.

    Args:
        num_partitions: number of partitions (= clusters), >= 1.
        features: per-row features aligned with the dataset, shape (N, ...); if None,
            they are read from the dataset's `feature_column`.
        feature_column: the dataset column holding the features when `features` is None.
        min_partition_size: smallest allowed cluster, >= 1.
        n_components: upper bound on the PCA dimension, >= 1.
        seed: random state of PCA and KMeans, >= 0.

    Raises:
        ValueError: if `num_partitions` or `min_partition_size` is < 1.

    References:
        Seed document (KMeans source / target split); label-skew counterpart:
        Hsu et al., arXiv:1909.06335.
    """

    def __init__(
        self,
        num_partitions: int,
        features: Tensor | np.ndarray | None = None,
        feature_column: str = "features",
        min_partition_size: int = 1,
        n_components: int = DEFAULT_N_COMPONENTS,
        seed: int = 42,
    ) -> None:
        super().__init__()
        check_counts(num_partitions, min_partition_size)
        self._num_partitions = num_partitions
        self._features = None if features is None else flatten(features)
        self._feature_column = feature_column
        self._min_partition_size = min_partition_size
        self._n_components = n_components
        self._seed = seed
        self._indices: list[np.ndarray] | None = None
        self._domain_model: DomainModel | None = None

    @property
    def num_partitions(self) -> int:
        """Total number of partitions."""
        return self._num_partitions

    @property
    def partition_indices(self) -> list[np.ndarray]:
        """Sorted int64 row indices of each partition (partitions the data if needed)."""
        self._determine_partition_indices_if_needed()
        assert self._indices is not None
        return self._indices

    @property
    def domain_model(self) -> DomainModel:
        """The fitted PCA + KMeans model; its domain ``k`` is partition ``k``."""
        self._determine_partition_indices_if_needed()
        assert self._domain_model is not None
        return self._domain_model

    def load_partition(self, partition_id: int) -> datasets.Dataset:
        """Rows of one partition.

        Args:
            partition_id: in [0, num_partitions).

        Returns:
            The partition as a :class:`datasets.Dataset`, rows in dataset order.

        Raises:
            ValueError: if `partition_id` is out of range, or partitioning fails (see
                :meth:`_determine_partition_indices_if_needed`).
        """
        if not 0 <= partition_id < self._num_partitions:
            raise ValueError(
                f"partition_id={partition_id!r} is out of range; allowed: "
                f"[0, {self._num_partitions - 1}]"
            )
        return self.dataset.select(self.partition_indices[partition_id])

    def _determine_partition_indices_if_needed(self) -> None:
        """Fit the clusters once and check their sizes.

        Raises:
            ValueError: if the features do not match the dataset's length, there are too
                few samples for the partitions (checked before fitting), fewer distinct
                rows than partitions (checked before fitting), or a cluster has fewer
                than ``min_partition_size`` samples (the message lists all sizes).
        """
        if self._indices is not None:
            return
        num_rows = self.dataset.num_rows
        if self._features is None:
            rows = flatten(self.dataset.with_format("numpy")[self._feature_column])
        else:
            rows = self._features
        if rows.shape[0] != num_rows:
            raise ValueError(
                f"features have {rows.shape[0]} rows but the dataset has {num_rows}; pass "
                "one feature row per dataset row"
            )
        self._indices, self._domain_model = kmeans_partitions(
            rows, self._num_partitions, self._min_partition_size, self._seed, self._n_components
        )
