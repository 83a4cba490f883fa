"""Tests of feddistill.learn's settings: SGDSpec, KDSpec and resolve_device."""

from __future__ import annotations

import os

import pytest
import torch

from feddistill.learn import KDSpec, SGDSpec, resolve_device


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": 0.0}, "lr must be > 0, got 0.0"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\), got 1.0"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"epochs": -1}, "epochs must be >= 0, got -1"),
        ({"steps": -1}, "steps must be >= 0, got -1"),
        ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'; valid: adam, sgd"),
    ],
)
def test_sgd_spec_rejects_values_out_of_range(changes: dict, message: str) -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match=message):
        SGDSpec(**({"lr": 0.1} | changes))


def test_sgd_spec_builds_sgd_with_its_momentum_and_adam_with_its_lr() -> None:
    # Prepare
    params = [torch.nn.Parameter(torch.zeros(2))]

    # Execute
    sgd = SGDSpec(0.1, momentum=0.5).make_optimizer(params)
    adam = SGDSpec(0.01, optimizer="adam").make_optimizer(params)

    # Assert
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.5
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["lr"] == 0.01


@pytest.mark.parametrize(
    ("alpha", "temperature", "message"),
    [(-0.1, 1.0, "alpha must be >= 0, got -0.1"), (1.0, 0.0, "temperature must be > 0, got 0.0")],
)
def test_kd_spec_rejects_values_out_of_range(
    alpha: float, temperature: float, message: str
) -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match=message):
        KDSpec(alpha, temperature)


def test_cuda_without_a_gpu_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    # Execute / Assert
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="device='cuda' was asked for"):
        resolve_device("cuda")


@pytest.fixture
def restore_determinism(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Put torch's global determinism flags back after the test."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


def test_cuda_device_turns_on_deterministic_kernels(
    monkeypatch: pytest.MonkeyPatch, restore_determinism: None
) -> None:
    # Prepare: a GPU that torch reports (no CUDA call is made by resolve_device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    torch.use_deterministic_algorithms(False)
    # Execute
    device = resolve_device("auto")
    # Assert
    assert device == torch.device("cuda")
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_cpu_device_leaves_torch_determinism_flags_alone(restore_determinism: None) -> None:
    # Prepare
    torch.use_deterministic_algorithms(False)
    # Execute
    resolve_device("cpu")
    # Assert
    assert not torch.are_deterministic_algorithms_enabled()


def test_cuda_with_deterministic_false_keeps_the_fast_kernels(
    monkeypatch: pytest.MonkeyPatch, restore_determinism: None
) -> None:
    # Prepare: config key deterministic=false
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    torch.use_deterministic_algorithms(False)
    # Execute
    device = resolve_device("cuda", deterministic=False)
    # Assert
    assert device == torch.device("cuda")
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
