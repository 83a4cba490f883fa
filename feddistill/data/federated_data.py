"""What the server and the clients know about the data of one run (a plain container)."""

from __future__ import annotations

import dataclasses

import numpy as np

from feddistill.data.domains import DomainModel
from feddistill.data.splits import DataSplits


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
