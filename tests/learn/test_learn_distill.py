"""Tests of feddistill.learn.distill_on_proxy (FedDF server distillation)."""

import pytest
import torch
from torch import nn

from feddistill.distill import kd_loss, soft_labels
from feddistill.learn import SGDSpec, distill_on_proxy


def _sgd(**changes: object) -> SGDSpec:
    """FedDF's server settings (Adam, lr 0.01, batch 64, seed 0) with ``changes``."""
    settings: dict = {"lr": 0.01, "batch_size": 64, "seed": 0, "optimizer": "adam"}
    return SGDSpec(**(settings | changes))


def _setup(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3)
    )
    proxy_x = torch.randn(40, 1, 2, 2, generator=gen)
    targets = soft_labels(torch.randn(40, 3, generator=gen) * 3, 2.0)
    return model, proxy_x, targets


def test_distill_on_proxy_reduces_kd_loss() -> None:
    # Prepare
    model, proxy_x, targets = _setup()
    before = distill_on_proxy(model, proxy_x, targets, 2.0, _sgd(epochs=0))

    # Execute
    distill_on_proxy(model, proxy_x, targets, 2.0, _sgd(epochs=30, lr=0.01, batch_size=8))
    after = distill_on_proxy(model, proxy_x, targets, 2.0, _sgd(epochs=0))

    # Assert
    assert after < 0.8 * before


def test_distill_on_proxy_is_deterministic_for_a_seed() -> None:
    # Prepare: equal models and data; dropout and shuffling both draw randomness
    model_a, proxy_x, targets = _setup()
    model_b, _, _ = _setup()

    # Execute
    loss_a = distill_on_proxy(model_a, proxy_x, targets, 2.0, _sgd(epochs=3, batch_size=8, seed=5))
    torch.rand(10)  # moving the global RNG in between must not matter
    loss_b = distill_on_proxy(model_b, proxy_x, targets, 2.0, _sgd(epochs=3, batch_size=8, seed=5))

    # Assert
    assert loss_a == loss_b
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_distill_on_proxy_leaves_caller_rng_untouched() -> None:
    # Prepare
    model, proxy_x, targets = _setup()
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)

    # Execute
    distill_on_proxy(model, proxy_x, targets, 2.0, _sgd(epochs=1, batch_size=8))

    # Assert
    assert torch.equal(torch.rand(3), expected)


def test_distill_on_proxy_returns_last_epoch_mean_loss_and_eval_mode() -> None:
    # Prepare: lr tiny -> the last epoch's mean loss is the loss of the (almost) unchanged
    # model on every sample; dropout p=0.1 adds train-mode noise, hence the tolerance
    model, proxy_x, targets = _setup()
    with torch.no_grad():
        model.eval()
        expected = kd_loss(model(proxy_x), targets, 2.0).item()

    # Execute
    loss = distill_on_proxy(model, proxy_x, targets, 2.0, _sgd(epochs=1, lr=1e-9, batch_size=40))

    # Assert
    assert loss == pytest.approx(expected, rel=0.2)
    assert not model.training


def test_distill_on_proxy_sgd_and_zero_epochs_keep_weights() -> None:
    # Prepare
    model, proxy_x, targets = _setup()
    before = [p.detach().clone() for p in model.parameters()]

    # Execute
    loss = distill_on_proxy(
        model, proxy_x, targets, 2.0, _sgd(epochs=0, optimizer="sgd", momentum=0.9)
    )

    # Assert
    assert loss > 0
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)


def test_distill_on_proxy_sgd_trains() -> None:
    # Prepare
    model, proxy_x, targets = _setup()
    before = distill_on_proxy(model, proxy_x, targets, 2.0, _sgd(epochs=0))

    # Execute
    distill_on_proxy(
        model, proxy_x, targets, 2.0, _sgd(epochs=10, lr=0.05, optimizer="sgd", momentum=0.9)
    )
    after = distill_on_proxy(model, proxy_x, targets, 2.0, _sgd(epochs=0))

    # Assert
    assert after < before


@pytest.mark.parametrize(
    ("proxy_shape", "target_shape", "temperature", "message"),
    [
        ((0, 1, 2, 2), (0, 3), 2.0, "non-empty"),
        ((40, 1, 2, 2), (39, 3), 2.0, "soft_labels must be"),
        ((40, 1, 2, 2), (40,), 2.0, "soft_labels must be"),
        ((40, 1, 2, 2), (40, 3), 0.0, "temperature must be > 0, got 0.0"),
    ],
)
def test_distill_on_proxy_rejects_bad_input(
    proxy_shape: tuple[int, ...], target_shape: tuple[int, ...], temperature: float, message: str
) -> None:
    # Prepare
    model, _, _ = _setup()
    proxy_x, targets = torch.zeros(proxy_shape), torch.full(target_shape, 1 / 3)

    # Execute / Assert
    with pytest.raises(ValueError, match=message):
        distill_on_proxy(model, proxy_x, targets, temperature, _sgd(epochs=1))
