"""Named domain datasets: shapes, domain sizes, preprocessing, determinism, torchvision files."""

from __future__ import annotations

import bz2
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from feddistill.data.datasets import MNIST_MEAN, MNIST_STD, load_dataset
from feddistill.data.domain_datasets import (
    digits_to_mnist_layout,
    load_domain_dataset,
    load_mnist_usps,
    rotation_domains,
)

ZERO = -MNIST_MEAN[0] / MNIST_STD[0]  # a 0 pixel after normalization: -0.42421


def _write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist_and_usps(root: Path) -> None:
    """MNIST: 3 train + 2 test images; USPS: 2 train + 1 test 16x16 images (all -1 = black,
    train image 0 all +1 = white), in torchvision's file layouts."""
    raw = root / "MNIST" / "raw"
    _write_idx(raw / "train-images-idx3-ubyte", 2051, np.zeros((3, 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte", 2049, np.array([7, 1, 3]))
    _write_idx(raw / "t10k-images-idx3-ubyte", 2051, np.zeros((2, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", 2049, np.array([0, 9]))

    def line(label: int, value: float) -> str:
        return f"{label} " + " ".join(f"{i + 1}:{value}" for i in range(256)) + "\n"

    with bz2.open(root / "usps.bz2", "wt") as fh:
        fh.write(line(3, 1.0) + line(10, -1.0))  # USPS labels are 1..10 -> 0..9
    with bz2.open(root / "usps.t.bz2", "wt") as fh:
        fh.write(line(1, -1.0))


@pytest.fixture(scope="module")
def digits_mix():
    """`digits-mix`, built once (~6 s on 2 cores) for the module's read-only checks."""
    return load_domain_dataset("digits-mix")


@pytest.fixture(scope="module")
def mnist5k_rotated():
    """`mnist5k-rotated`, built once (~6 s on 2 cores) for the module's read-only checks."""
    return load_domain_dataset("mnist5k-rotated")


def test_digits_mix_shape_domains_and_labels(digits_mix):
    # Prepare
    ds = digits_mix
    # Assert: 5,000 mnist5k images, then 1,797 digits, all 1x28x28
    assert ds.x.shape == (6797, 1, 28, 28) and ds.x.dtype == torch.float32
    assert np.bincount(ds.domains).tolist() == [5000, 1797]
    assert ds.domain_names == ("mnist5k", "digits")
    assert torch.equal(ds.y[5000:], load_dataset("digits").y)


def test_digits_mix_digits_sit_in_a_20x20_box_padded_to_28(digits_mix):
    # Prepare
    digits = digits_mix.x[5000:]
    # Assert: the 4-pixel border is exactly 0 (normalized), the box is not empty
    border = torch.ones(28, 28, dtype=torch.bool)
    border[4:24, 4:24] = False
    assert (digits[:, 0][:, border] - ZERO).abs().max().item() < 1e-6
    assert digits[:, :, 4:24, 4:24].max().item() > 0


def test_digits_to_mnist_layout_keeps_a_constant_image_constant():
    # Prepare: a uniform 0.5 image resizes to 0.5 everywhere inside the box
    x = torch.full((1, 1, 8, 8), 0.5)
    # Execute
    out = digits_to_mnist_layout(x)
    # Assert
    assert out.shape == (1, 1, 28, 28)
    torch.testing.assert_close(out[0, 0, 4:24, 4:24], torch.full((20, 20), 0.5))
    assert out[0, 0, :4].abs().sum().item() == 0.0


def test_digits_to_mnist_layout_rejects_other_shapes():
    # Execute / Assert
    with pytest.raises(
        ValueError, match=r"digits must have shape \(N, 1, 8, 8\), got \(2, 1, 28, 28\)"
    ):
        digits_to_mnist_layout(torch.zeros(2, 1, 28, 28))


def test_mnist5k_rotated_has_six_disjoint_domains_of_833_or_834(mnist5k_rotated):
    # Prepare
    ds = mnist5k_rotated
    # Assert: 5000 = 2 * 834 + 4 * 833, every image in exactly one domain
    assert ds.x.shape == (5000, 1, 28, 28)
    assert np.bincount(ds.domains).tolist() == [834, 834, 833, 833, 833, 833]
    assert ds.domain_names == ("0deg", "15deg", "30deg", "45deg", "60deg", "75deg")


def test_mnist5k_rotated_domain_0_is_unrotated_and_others_differ(mnist5k_rotated):
    # Prepare
    plain = load_dataset("mnist5k").x
    ds = mnist5k_rotated
    # Assert
    zero = torch.from_numpy(ds.domains == 0)
    torch.testing.assert_close(ds.x[zero], plain[zero], atol=1e-4, rtol=0)
    far = torch.from_numpy(ds.domains == 5)
    assert (ds.x[far] - plain[far]).abs().mean().item() > 0.3


def test_domain_datasets_are_deterministic(mnist5k_rotated):
    # Execute: a second build, compared with the module's first one
    a, b = mnist5k_rotated, load_domain_dataset("mnist5k-rotated")
    # Assert
    assert torch.equal(a.x, b.x) and np.array_equal(a.domains, b.domains)


def test_rotation_domains_do_not_follow_the_split_permutation():
    # Regression: the same seed for both put whole domains into the test split.
    # Prepare
    from feddistill.data.splits import split_indices

    domains = rotation_domains(5000, 6)
    # Execute
    _, _, test = split_indices(5000, 0.2, 0.2, seed=0)
    # Assert: every domain has test samples
    assert np.bincount(domains[test], minlength=6).min() > 100


def test_rotation_domains_reject_too_few_images():
    # Execute / Assert
    with pytest.raises(ValueError, match="cannot cut 3 images into num_domains=6"):
        rotation_domains(3, 6)


def test_mnist_usps_reads_torchvision_files_and_resizes_usps(tmp_path):
    # Prepare
    _fake_mnist_and_usps(tmp_path)
    # Execute
    ds = load_mnist_usps(str(tmp_path))
    # Assert: MNIST 3 + 2, USPS 2 + 1, all 28x28; USPS labels shifted to 0..9
    assert ds.x.shape == (8, 1, 28, 28)
    assert ds.domains.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert ds.y.tolist() == [7, 1, 3, 0, 9, 2, 9, 0]
    # a white USPS image (value +1 -> 255) stays white after resizing: (1 - mean) / std
    assert ds.x[5].min().item() == pytest.approx((1 - MNIST_MEAN[0]) / MNIST_STD[0], abs=1e-5)
    assert ds.x[6].max().item() == pytest.approx(ZERO, abs=1e-5)


def test_mnist_usps_missing_files_name_the_root_and_download_key(tmp_path):
    # Execute / Assert
    with pytest.raises(
        FileNotFoundError, match=r"domain 'mnist' \(train split\) was not found .*download=true"
    ):
        load_mnist_usps(str(tmp_path))


def test_unknown_domain_dataset_lists_valid_names():
    # Execute / Assert
    with pytest.raises(
        ValueError, match="domain dataset 'svhn' is unknown; choose one of: digits-mix"
    ):
        load_domain_dataset("svhn")
