"""Train / proxy / test split of one dataset, fixed by seed.

The proxy set is the unlabeled data every client and the server share for distillation:
its labels are dropped here, so no training code can ever see them.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
from torch import Tensor

from feddistill.data.datasets import ArrayDataset

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DataSplits:
    """Three disjoint parts of one dataset.

    Attributes:
        train_x: client training images, shape (N_train, C, H, W), float32.
        train_y: their labels, shape (N_train,), int64.
        proxy_x: unlabeled proxy images, shape (N_proxy, C, H, W); labels not kept.
        test_x: server-side evaluation images, shape (N_test, C, H, W).
        test_y: their labels, shape (N_test,), int64.
        num_classes: number of classes K.
        name: the dataset's name.
    """

    train_x: Tensor
    train_y: Tensor
    proxy_x: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    name: str

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """Shape of one image, (C, H, W)."""
        _, c, h, w = self.train_x.shape
        return (int(c), int(h), int(w))


def split_sizes(
    num_samples: int, proxy_fraction: float, test_fraction: float
) -> tuple[int, int, int]:
    """Sizes of the train, proxy and test parts.

    ``n_proxy = round(proxy_fraction * num_samples)``, ``n_test = round(test_fraction *
    num_samples)`` and train gets the rest; e.g. 5,000 samples at 0.2 / 0.2 give
    (3000, 1000, 1000).

    Args:
        num_samples: dataset size N.
        proxy_fraction: share of N for the proxy set, in (0, 1).
        test_fraction: share of N for the test set, in (0, 1); the two sum to < 1.

    Returns:
        ``(n_train, n_proxy, n_test)``, summing to N.

    Raises:
        ValueError: if a fraction is outside (0, 1), they sum to >= 1, or a part would be
            empty.
    """
    for key, value in (("proxy-fraction", proxy_fraction), ("test-fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{key}={value!r} is out of range; allowed: (0.0, 1.0)")
    if proxy_fraction + test_fraction >= 1.0:
        raise ValueError(
            "proxy-fraction + test-fraction must be < 1 (the rest is train), got "
            f"{proxy_fraction} + {test_fraction}"
        )
    n_proxy = int(round(proxy_fraction * num_samples))
    n_test = int(round(test_fraction * num_samples))
    n_train = num_samples - n_proxy - n_test
    if min(n_train, n_proxy, n_test) < 1:
        raise ValueError(
            f"splitting {num_samples} samples at proxy-fraction={proxy_fraction}, "
            f"test-fraction={test_fraction} leaves an empty part (train={n_train}, "
            f"proxy={n_proxy}, test={n_test}); every part needs at least 1 sample"
        )
    return n_train, n_proxy, n_test


def split_indices(
    num_samples: int, proxy_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted row indices of the train, proxy and test parts (see :func:`split_dataset`).

    Args:
        num_samples: dataset size N.
        proxy_fraction: share of N for the proxy set, in (0, 1).
        test_fraction: share of N for the test set, in (0, 1); the two sum to < 1.
        seed: seed of the permutation, >= 0.

    Returns:
        ``(train_idx, proxy_idx, test_idx)``: disjoint sorted int64 arrays covering 0..N-1.

    Raises:
        ValueError: see :func:`split_sizes`.
    """
    _, n_proxy, n_test = split_sizes(num_samples, proxy_fraction, test_fraction)
    perm = np.random.default_rng(seed).permutation(num_samples)
    return (
        np.sort(perm[n_proxy + n_test :]),
        np.sort(perm[:n_proxy]),
        np.sort(perm[n_proxy : n_proxy + n_test]),
    )


def split_dataset(
    ds: ArrayDataset, proxy_fraction: float, test_fraction: float, seed: int
) -> DataSplits:
    """Split a dataset into train, proxy (unlabeled) and test parts by a seeded permutation.

    A random permutation of the N indices (``numpy.random.default_rng(seed)``) gives the
    proxy set its first ``n_proxy`` entries, the test set the next ``n_test`` and train
    the rest (sizes from :func:`split_sizes`); inside each part the samples keep their
    order in `ds`. The same seed gives the same split in every process.

    Args:
        ds: the whole dataset, x of shape (N, C, H, W).
        proxy_fraction: share of N for the proxy set, in (0, 1).
        test_fraction: share of N for the test set, in (0, 1); the two sum to < 1.
        seed: seed of the permutation, >= 0.

    Returns:
        The disjoint splits; the proxy labels are dropped.

    Raises:
        ValueError: see :func:`split_sizes`.
    """
    num_samples = len(ds)
    train_np, proxy_np, test_np = split_indices(num_samples, proxy_fraction, test_fraction, seed)
    train_idx, proxy_idx, test_idx = (torch.from_numpy(i) for i in (train_np, proxy_np, test_np))
    logger.info(
        "split %s (seed %d): train %d, proxy %d, test %d",
        ds.name,
        seed,
        len(train_idx),
        len(proxy_idx),
        len(test_idx),
    )
    return DataSplits(
        train_x=ds.x[train_idx],
        train_y=ds.y[train_idx],
        proxy_x=ds.x[proxy_idx],
        test_x=ds.x[test_idx],
        test_y=ds.y[test_idx],
        num_classes=ds.num_classes,
        name=ds.name,
    )
