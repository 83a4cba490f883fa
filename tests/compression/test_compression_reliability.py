"""Issue 8: no Inf from a finite input, data-range quantization, lossless zeros,
size claims checked before allocation."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from feddistill.compression import CodecError, CompressionSpec, compress_update, decode_tensors
from feddistill.compression.codec import pack_payload
from feddistill.compression.packing import PackingError, unpack_rice
from feddistill.compression.quantize import (
    QParams,
    affine_qparams,
    channel_unview,
    channel_view,
    dequantize_rows,
    quantize_rows,
    row_minmax,
)
from feddistill.models import build_model


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


def _float_record(shape: tuple[int, ...], meta: tuple, tail: bytes) -> bytes:
    head = struct.pack("<H", 1) + b"w" + struct.pack(f"<BB{len(shape)}IB", 0, len(shape), *shape, 1)
    return head + struct.pack("<BBBbQBI", *meta) + tail


# --------------------------------------------------------------------- 3. never Inf


def test_fp16_update_of_7e4_saturates_and_keeps_the_excess_in_the_residual() -> None:
    # Prepare: 7e4 is above fp16's largest finite value 65504.
    update = {"w": torch.tensor([7e4, -7e4, 1.0])}

    # Execute
    payload, residual = compress_update(update, CompressionSpec(bit_width=16))
    decoded = decode_tensors(payload)["w"]

    # Assert: 65504 sent, 7e4 - 65504 = 4496 kept for the next round.
    assert decoded.tolist() == [65504.0, -65504.0, 1.0]
    assert residual["w"].tolist() == [4496.0, -4496.0, 0.0]


@pytest.mark.parametrize("bit_width", [1, 2, 4, 8, 16, 32])
def test_finite_input_never_decodes_to_non_finite(bit_width: int) -> None:
    # Prepare: float32's extremes, fp16's overflow and ordinary values, dense and sparse.
    x = torch.tensor([3.4e38, -3.4e38, 7e4, -7e4, 1.0, 0.0, 1e-30, -2.5])
    for density in (1.0, 0.5):
        spec = CompressionSpec(density=density, bit_width=bit_width)

        # Execute
        payload, residual = compress_update({"w": x}, spec)
        decoded = decode_tensors(payload)["w"]

        # Assert: decoded and residual finite; decoded + residual is the input.
        assert bool(torch.isfinite(decoded).all()), (density, decoded)
        assert bool(torch.isfinite(residual["w"]).all())
        assert torch.allclose(decoded + residual["w"], x, rtol=1e-6)


# ------------------------------------------------------- 6. data range, lossless zeros


def test_values_in_100_101_at_8_bits_use_the_data_range() -> None:
    # Prepare: uniform in [100, 101]; the range excludes 0.
    x = 100.0 + torch.rand(10_000, generator=torch.Generator().manual_seed(0))

    # Execute
    codes, qp = quantize(x, bit_width=8, per_channel=False)
    x_hat = dequantize(codes, qp, (10_000,), per_channel=False, ch_axis=0)
    payload, _ = compress_update({"w": x}, CompressionSpec(bit_width=8, error_feedback=False))

    # Assert: half a step of a 1-wide range over 255 steps (was 101/510 = 0.198).
    assert (x_hat - x).abs().max().item() <= 1 / (2 * 255) + 1e-6
    assert (decode_tensors(payload)["w"] - x).abs().max().item() <= 1 / (2 * 255) + 1e-6


def test_negative_range_uses_the_data_range_too() -> None:
    # Prepare: [-101, -100] at 4 bits: step 1/15.
    x = -101.0 + torch.rand(1000, generator=torch.Generator().manual_seed(1))

    # Execute
    codes, qp = quantize(x, bit_width=4, per_channel=False)
    x_hat = dequantize(codes, qp, (1000,), per_channel=False, ch_axis=0)

    # Assert
    assert (x_hat - x).abs().max().item() <= 1 / (2 * 15) + 1e-5


def test_constant_positive_row_decodes_exactly() -> None:
    # Prepare: a row of one value > 0 has a zero range.
    x = torch.full((5,), 3.25)

    # Execute
    codes, qp = quantize(x, bit_width=2, per_channel=False)

    # Assert
    assert torch.equal(dequantize(codes, qp, (5,), False, 0), x)


def test_zero_stays_exact_when_the_range_contains_it() -> None:
    # Prepare
    x = torch.tensor([0.0, 100.5, 101.0, 0.0])

    # Execute
    codes, qp = quantize(x, bit_width=8, per_channel=False)
    x_hat = dequantize(codes, qp, (4,), False, 0)

    # Assert
    assert qp.offset is None
    assert x_hat[0] == 0.0 and x_hat[3] == 0.0


def test_pruned_cnn_small_lossless_takes_under_20_percent_of_fp32() -> None:
    # Prepare: cnn-small with 90% of every float tensor's entries set to exact zero.
    state = build_model("cnn-small", (1, 28, 28), 10, seed=0).state_dict()
    for value in state.values():
        if value.is_floating_point() and value.numel() > 1:
            cut = value.abs().flatten().kthvalue(int(0.9 * value.numel())).values
            value[value.abs() <= cut] = 0.0
    fp32_bytes = sum(v.numel() * 4 for v in state.values() if v.is_floating_point())
    spec = CompressionSpec(bit_width=32, error_feedback=False)

    # Execute
    payload, _ = compress_update(state, spec)
    decoded = decode_tensors(payload)

    # Assert: values 10% x 4 B + bitmap 1/8 B per entry ~ 0.13 of 4 B; exact round trip.
    assert len(payload) < 0.2 * fp32_bytes
    assert all(torch.equal(decoded[k].to(v.dtype), v) for k, v in state.items())


# ------------------------------------------------- 4. sizes checked before allocation


def test_sparse_claim_of_2_pow_31_entries_is_rejected_before_allocation() -> None:
    # Prepare: 57-ish bytes claiming a (2**31,) float tensor, Rice layout, k = 0, valid crc.
    record = _float_record((2**31,), (32, 2, 0, 0, 0, 0, 1), struct.pack("<Q", 0))
    payload = pack_payload([record])

    # Execute / Assert: with the server's shapes, and without them.
    with pytest.raises(CodecError, match=r"claims shape \(2147483648,\), expected \(8,\)"):
        decode_tensors(payload, expected={"w": (8,)})
    with pytest.raises(CodecError, match="sparse claim of 2147483648 entries"):
        decode_tensors(payload)


def test_sparse_claim_of_2_pow_28_entries_without_shapes_is_rejected() -> None:
    # Prepare
    payload = pack_payload([_float_record((2**28,), (32, 2, 0, 0, 0, 0, 1), bytes(8))])

    # Execute / Assert
    with pytest.raises(CodecError, match="sparse claim of 268435456 entries exceeds"):
        decode_tensors(payload)


def test_unexpected_tensor_name_is_rejected() -> None:
    # Prepare
    payload, _ = compress_update({"v": torch.ones(2)}, CompressionSpec())

    # Execute / Assert
    with pytest.raises(CodecError, match=r"unexpected tensor 'v'; expected one of \['w'\]"):
        decode_tensors(payload, expected={"w": (2,)})


def test_expected_shapes_accept_the_right_payload() -> None:
    # Prepare
    x = torch.arange(6.0).reshape(2, 3)
    payload, _ = compress_update({"w": x}, CompressionSpec(density=0.5, bit_width=32))

    # Execute
    out = decode_tensors(payload, expected={"w": (2, 3)})

    # Assert: the top 3 of 0..5 are 3, 4, 5.
    assert out["w"].tolist() == [[0.0, 0.0, 0.0], [3.0, 4.0, 5.0]]


def test_scale_that_would_decode_to_inf_is_rejected() -> None:
    # Prepare: 8-bit codes with scale 3e38: code 255 - 0 would overflow.
    tail = struct.pack("<f", 3e38) + b"\x00" + struct.pack("<f", 0.0)
    payload = pack_payload([_float_record((2,), (8, 0, 0, 0, 2, 0, 1), tail + bytes(10))])

    # Execute / Assert
    with pytest.raises(CodecError, match="would decode to Inf"):
        decode_tensors(payload)


def test_non_finite_offset_is_rejected() -> None:
    # Prepare
    tail = struct.pack("<f", 1.0) + b"\x00" + struct.pack("<f", float("nan"))
    payload = pack_payload([_float_record((2,), (8, 0, 0, 0, 2, 0, 1), tail + bytes(10))])

    # Execute / Assert
    with pytest.raises(CodecError, match="would decode to Inf"):
        decode_tensors(payload)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((b"", 63, 0, 10), r"Rice parameter 63 outside \[0, 62\]"),
        ((b"", 0, 11, 10), "11 indices cannot fit in numel 10"),
        # r = 0, one unary code with 200 zeros before its terminator: gap 200 >= 10.
        ((bytes(25) + b"\x01", 0, 1, 10), "gap >= numel 10"),
        # r = 8, remainder 255, quotient 0: gap 255 >= numel 100 (quotients pass).
        ((b"\xff\x01", 8, 1, 100), "gap >= numel 100"),
    ],
)
def test_hostile_rice_streams_raise(args: tuple, match: str) -> None:
    # Execute / Assert
    with pytest.raises(PackingError, match=match):
        unpack_rice(*args)


def test_rice_stream_of_huge_quotients_does_not_overflow() -> None:
    # Prepare: r = 62 and a quotient of 8 would overflow int64 when shifted.
    stream = np.packbits(np.ones(62, dtype=np.uint8), bitorder="little").tobytes() + b"\x00\x01"

    # Execute / Assert
    with pytest.raises(PackingError, match="gap >= numel"):
        unpack_rice(stream, 62, 1, 2**31)
