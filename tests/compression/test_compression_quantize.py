"""Uniform affine quantization: hand-worked grids, edge cases, stochastic rounding."""

from __future__ import annotations

import pytest
import torch

from feddistill.compression import CompressionSpec, compress_update, decode_tensors
from feddistill.compression.quantize import (
    QParams,
    affine_qparams,
    all_finite,
    channel_unview,
    channel_view,
    check_bit_width,
    dequantize_rows,
    quantize_rows,
    row_minmax,
)


def quantize(
    x: torch.Tensor,
    bit_width: int,
    per_channel: bool = True,
    ch_axis: int = 0,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, QParams]:
    """Test helper: the codec's quantization steps on one tensor -> codes (C, M), qparams."""
    rows = channel_view(x.detach().float(), per_channel, ch_axis)
    lo, hi = row_minmax(rows)
    qparams = affine_qparams(lo, hi, bit_width)
    return quantize_rows(rows, qparams, stochastic, generator), qparams


def dequantize(
    codes: torch.Tensor, qparams: QParams, shape: tuple[int, ...], per_channel: bool, ch_axis: int
) -> torch.Tensor:
    """Test helper: codes (C, M) back to a float32 tensor of ``shape``."""
    return channel_unview(dequantize_rows(codes, qparams), shape, per_channel, ch_axis)


def test_int2_grid_worked_by_hand() -> None:
    # Prepare: range [-1, 3], 2 bits -> zero_point round(1 / (4/3)) = 1,
    # scale = max(3 / (3 - 1), 1 / 1) = 1.5; codes: -1 -> 0, 0 -> 1, 3 -> 3.
    x = torch.tensor([-1.0, 0.0, 3.0])

    # Execute
    codes, qp = quantize(x, bit_width=2, per_channel=False)
    x_hat = dequantize(codes, qp, (3,), per_channel=False, ch_axis=0)

    # Assert
    assert qp.scale.tolist() == [1.5]
    assert qp.zero_point.tolist() == [1]
    assert codes.reshape(-1).tolist() == [0, 1, 3]
    assert x_hat.tolist() == [-1.5, 0.0, 3.0]


def test_power_of_two_scale_is_exact() -> None:
    # Prepare: range [-27.5, 100] spans 127.5 = 255 * 0.5 -> scale 0.5, zero_point 55.
    x = torch.tensor([100.0, -27.5, 0.0, 0.5])

    # Execute
    codes, qp = quantize(x, bit_width=8)
    x_hat = dequantize(codes, qp, (4,), per_channel=True, ch_axis=0)

    # Assert
    assert qp.scale.tolist() == [0.5]
    assert qp.zero_point.tolist() == [55]
    assert codes.reshape(-1).tolist() == [255, 0, 55, 56]
    assert torch.equal(x_hat, x)


def test_all_zero_tensor_has_finite_scale_and_decodes_to_exact_zero() -> None:
    # Prepare: a conv weight pruned to zero.
    w = torch.zeros(4, 3, 3, 3)

    # Execute
    codes, qp = quantize(w, bit_width=8, per_channel=True, ch_axis=0)
    w_hat = dequantize(codes, qp, tuple(w.shape), per_channel=True, ch_axis=0)

    # Assert
    assert torch.isfinite(qp.scale).all() and (qp.scale > 0).all()
    assert torch.equal(codes.long(), qp.zero_point[:, None].expand_as(codes))
    assert torch.equal(w_hat, torch.zeros_like(w))


def test_zero_is_exact_in_a_mixed_tensor() -> None:
    # Prepare: pruned zeros between arbitrary values.
    x = torch.tensor([[0.3, 0.0, -1.7, 0.0, 2.2]])

    # Execute
    codes, qp = quantize(x, bit_width=4)
    x_hat = dequantize(codes, qp, (1, 5), per_channel=True, ch_axis=0)

    # Assert
    assert x_hat[0, 1] == 0.0 and x_hat[0, 3] == 0.0


@pytest.mark.parametrize("bit_width", [2, 4, 8])
def test_error_within_half_a_step_per_channel(bit_width: int) -> None:
    # Prepare
    x = (
        torch.randn(16, 50, generator=torch.Generator().manual_seed(1))
        * torch.arange(1, 17)[:, None]
    )

    # Execute
    codes, qp = quantize(x, bit_width, per_channel=True, ch_axis=0)
    x_hat = dequantize(codes, qp, (16, 50), per_channel=True, ch_axis=0)

    # Assert: no clipping, each row within half its own step.
    assert ((x - x_hat).abs() <= qp.scale[:, None] / 2 * 1.001).all()


def test_one_bit_mixed_signs_keeps_the_larger_side() -> None:
    # Prepare: 2 levels cannot hold -1, 0 and 3; the positive side is larger.
    x = torch.tensor([-1.0, 0.0, 3.0])

    # Execute
    codes, qp = quantize(x, bit_width=1, per_channel=False)
    x_hat = dequantize(codes, qp, (3,), per_channel=False, ch_axis=0)

    # Assert
    assert qp.zero_point.tolist() == [0]
    assert x_hat.tolist() == [0.0, 0.0, 3.0]


def test_stochastic_rounding_is_unbiased() -> None:
    # Prepare: 0.37 on a 4-bit grid over [0, 1.5] (scale 0.1) lies between codes; a
    # fixed seed makes the draw deterministic. 20k draws: std of the mean < 4e-4.
    x = torch.full((20_000,), 0.37)
    x[0] = 1.5
    x[1] = 0.0  # the range contains 0: offset 0, zero point 0
    gen = torch.Generator().manual_seed(123)

    # Execute
    codes, qp = quantize(x, 4, per_channel=False, stochastic=True, generator=gen)
    x_hat = dequantize(codes, qp, (20_000,), per_channel=False, ch_axis=0)

    # Assert: only the two neighbours occur, and the mean is 0.37.
    assert x_hat[2:].unique().tolist() == pytest.approx([0.3, 0.4], abs=1e-6)
    assert x_hat[2:].mean().item() == pytest.approx(0.37, abs=2e-3)


def test_channel_view_round_trips_any_axis() -> None:
    # Prepare
    x = torch.arange(24.0).reshape(2, 3, 4)

    # Execute
    rows = channel_view(x, True, 1)
    back = channel_unview(rows, (2, 3, 4), True, 1)

    # Assert
    assert rows.shape == (3, 8)
    assert torch.equal(rows[1], x[:, 1, :].reshape(-1))
    assert torch.equal(back, x)


def test_channel_view_one_dim_uses_one_row() -> None:
    assert channel_view(torch.ones(5), True, 3).shape == (1, 5)


def test_ch_axis_out_of_range_names_value_and_allowed_set() -> None:
    with pytest.raises(ValueError, match=r"ch_axis=2 .*allowed: \[-2, -1, 0, 1\]"):
        channel_view(torch.ones(2, 3), True, 2, key="fc.weight")


@pytest.mark.parametrize("bad", [3, 0, 16, True, 2.0])
def test_bad_integer_bit_width_names_value_and_allowed_set(bad: object) -> None:
    with pytest.raises(ValueError, match=r"bit_width must be one of \{1, 2, 4, 8\}"):
        affine_qparams(torch.zeros(1), torch.ones(1), bad)  # type: ignore[arg-type]


def test_check_bit_width_accepts_16_and_32() -> None:
    check_bit_width(16)
    check_bit_width(32)
    with pytest.raises(ValueError, match="got 3"):
        check_bit_width(3)


def test_all_finite_detects_nan_and_inf() -> None:
    assert all_finite(torch.ones(3)) and all_finite(torch.ones(0))
    assert not all_finite(torch.tensor([1.0, float("nan")]))
    assert not all_finite(torch.tensor([float("-inf"), 1.0]))


@pytest.mark.parametrize("bit_width", [1, 2, 4, 8])
def test_denormal_range_decodes_to_zero_not_garbage(bit_width):
    # Regression (found by hypothesis): x = 1e-45 gave a zero/denormal scale and decoded
    # to -9.2e18. Such a row is treated as zero-range: scale 1, zero point 0, decodes to 0.
    from feddistill.compression.quantize import affine_qparams

    x = torch.tensor([1e-45, -1e-45, 0.0])
    qp = affine_qparams(x.min().reshape(1), x.max().reshape(1), bit_width)
    assert qp.scale.item() == 1.0 and qp.zero_point.item() == 0
    payload, _ = compress_update({"w": x}, CompressionSpec(bit_width=bit_width))
    assert torch.equal(decode_tensors(payload)["w"], torch.zeros(3))
