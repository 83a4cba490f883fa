"""Issue 13: client-state-dtype (the teacher stored in fp16 in client-state/)."""

from __future__ import annotations

import pytest
import torch

from feddistill.clients.state import fits_float16, to_storage
from feddistill.config import RunConfig


def test_float16_round_trip_stays_within_half_an_ulp() -> None:
    # Prepare: normal values of many magnitudes, subnormal ones and zero
    gen = torch.Generator().manual_seed(0)
    normal = torch.randn(10_000, generator=gen) * torch.logspace(-4, 4, 10_000)
    tiny = torch.tensor([1e-7, -3e-6, 5.9e-5, 0.0])
    state = {"w": torch.cat([normal, tiny])}
    # Execute
    stored = to_storage(state, "float16")
    back = stored["w"].float()
    # Assert: |x - half(x)| <= max(|x| * 2^-11, 2^-25), the bound in the module docstring
    x = state["w"]
    bound = torch.maximum(x.abs() * 2.0**-11, torch.full_like(x, 2.0**-25))
    assert stored["w"].dtype == torch.float16
    assert bool(((x - back).abs() <= bound).all())


def test_float16_keeps_a_tensor_beyond_65504_in_float32() -> None:
    # Prepare: 70000 would become inf in fp16
    state = {"big": torch.tensor([1.0, 70000.0]), "small": torch.tensor([1.0, 2.0])}
    # Execute
    stored = to_storage(state, "float16")
    # Assert
    assert stored["big"].dtype == torch.float32
    assert torch.equal(stored["big"], state["big"])
    assert stored["small"].dtype == torch.float16


def test_float16_leaves_integer_buffers_unchanged() -> None:
    # Prepare: BatchNorm's counter
    state = {"bn.num_batches_tracked": torch.tensor(7, dtype=torch.long)}
    # Execute
    stored = to_storage(state, "float16")
    # Assert
    assert stored["bn.num_batches_tracked"].dtype == torch.long
    assert int(stored["bn.num_batches_tracked"]) == 7


def test_float32_storage_is_an_exact_detached_copy() -> None:
    # Prepare
    weight = torch.nn.Parameter(torch.tensor([0.1, -0.2]))
    # Execute
    stored = to_storage({"w": weight}, "float32")
    # Assert
    assert stored["w"].dtype == torch.float32 and not stored["w"].requires_grad
    assert torch.equal(stored["w"], weight.detach())


def test_non_finite_tensor_does_not_fit_float16() -> None:
    # Execute / Assert
    assert not fits_float16(torch.tensor([1.0, float("nan")]))


def test_unknown_storage_dtype_is_refused() -> None:
    # Execute / Assert
    with pytest.raises(
        ValueError, match="client-state-dtype must be one of float32, float16, got 'bf16'"
    ):
        to_storage({"w": torch.zeros(1)}, "bf16")


def test_config_refuses_an_unknown_client_state_dtype() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="client-state-dtype"):
        RunConfig(client_state_dtype="int8")


def test_float16_teacher_loads_back_into_the_float32_model() -> None:
    # Prepare: a teacher's state stored in fp16, as the next round's client reads it
    teacher = torch.nn.Linear(3, 2)
    stored = to_storage(teacher.state_dict(), "float16")
    fresh = torch.nn.Linear(3, 2)
    # Execute
    fresh.load_state_dict(stored)
    # Assert: parameters stay fp32, each within half an fp16 ulp of the original
    for name, value in fresh.state_dict().items():
        original = teacher.state_dict()[name]
        assert value.dtype == torch.float32
        assert bool(((value - original).abs() <= original.abs() * 2.0**-11 + 2.0**-25).all())
