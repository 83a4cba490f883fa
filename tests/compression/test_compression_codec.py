"""Wire codec: exact sizes, round trips (hypothesis), and refusal of bad bytes."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from feddistill.compression import CodecError, CompressionSpec, compress_update, decode_tensors
from feddistill.compression.codec import encode_raw, pack_payload
from feddistill.compression.packing import (
    PackingError,
    pack_bitmap,
    pack_codes,
    pack_rice,
    rice_parameter,
    unpack_bitmap,
    unpack_codes,
    unpack_rice,
)
from feddistill.compression.quantize import affine_qparams, channel_view, row_minmax

HEADER_BYTES, CRC_BYTES = 18, 4

# --------------------------------------------------------------------------- packing


@pytest.mark.parametrize("bit_width", [1, 2, 4, 8])
def test_pack_codes_round_trip_and_size(bit_width: int) -> None:
    # Prepare: 13 codes, not a multiple of any per-byte count.
    codes = (np.arange(13) % 2**bit_width).astype(np.uint8)

    # Execute
    packed = pack_codes(codes, bit_width)

    # Assert
    assert len(packed) == (13 * bit_width + 7) // 8
    assert np.array_equal(unpack_codes(packed, bit_width, 13), codes)


def test_pack_codes_4_bit_layout_by_hand() -> None:
    # 4-bit codes 1, 2, 3 -> bytes 0x21, 0x03 (low nibble first).
    assert pack_codes(np.array([1, 2, 3], dtype=np.uint8), 4) == b"\x21\x03"


def test_bitmap_and_rice_round_trip() -> None:
    # Prepare
    idx = np.array([0, 3, 4, 90, 1000, 1001], dtype=np.int64)

    # Execute
    r, nbytes = rice_parameter(idx)
    rice = pack_rice(idx, r)

    # Assert
    assert len(rice) == nbytes
    assert np.array_equal(unpack_rice(rice, r, 6, 1002), idx)
    assert np.array_equal(unpack_bitmap(pack_bitmap(idx, 1002), 1002, 6), idx)


def test_rice_by_hand() -> None:
    # Index 10 alone, r = 2: gap 10 = 0b10_10 -> remainder 0b10 (1 byte), unary "001".
    assert pack_rice(np.array([10]), 2) == bytes([0b10, 0b100])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: unpack_codes(b"\x00", 4, 3), "needs 2 bytes"),
        (lambda: unpack_bitmap(b"\x00", 16, 0), "needs 2 bytes"),
        (lambda: unpack_bitmap(b"\x03", 8, 1), "holds 2 set bits"),
        (lambda: unpack_rice(b"", 3, 2, 100), "at least 1 bytes"),
        (lambda: unpack_rice(b"\x00\x01", 3, 2, 100), "holds 1 codes"),
        (lambda: unpack_rice(pack_rice(np.array([50]), 2), 2, 1, 10), "gap >= numel 10"),
    ],
)
def test_packing_errors(call, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PackingError, match=match):
        call()


# --------------------------------------------------------------------------- sizes


def test_payload_bytes_worked_by_hand() -> None:
    # Prepare: 64 floats, top-1 at index 10, fp32 values. Layouts: dense 256 B,
    # bitmap 8 + 4 B, Rice (r = 1: 1 B remainder + 1 B unary) 2 + 4 B -> Rice.
    x = torch.zeros(64)
    x[10] = 5.0
    spec = CompressionSpec(k=1, bit_width=32)

    # Execute
    payload, _ = compress_update({"w": x}, spec)

    # Assert: header 18 + record (2 + 1 name + 2 + 4 shape + 1 kind + 17 meta
    # + 8 + 2 index + 4 values) + crc 4.
    assert len(payload) == HEADER_BYTES + 41 + CRC_BYTES
    assert torch.equal(decode_tensors(payload)["w"], x)


def test_sparse_index_costs_less_than_a_bitmap_at_one_percent() -> None:
    # Prepare: 100k entries, 1% kept; a bitmap alone would be 12,500 bytes.
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(0))

    # Execute
    payload, _ = compress_update({"w": x}, CompressionSpec(density=0.01, bit_width=4))

    # Assert: 1000 * 4 bits = 500 B values; Rice gaps (mean 100) cost < 9 bits each.
    assert len(payload) < 500 + 1000 * 9 / 8 + 100
    assert int((decode_tensors(payload)["w"] != 0).sum()) == 1000


def test_dense_layout_when_nearly_everything_is_kept() -> None:
    # Prepare: 95% kept at int8: dense codes (n bytes) beat bitmap (n/8 + 0.95 n).
    x = torch.randn(8000, generator=torch.Generator().manual_seed(0))

    # Execute
    payload, residual = compress_update({"w": x}, CompressionSpec(density=0.95, bit_width=8))
    decoded = decode_tensors(payload)["w"]

    # Assert
    assert len(payload) < 8000 + 200
    assert int((decoded == 0).sum()) >= 400
    assert torch.allclose(decoded + residual["w"], x, atol=1e-6)


# --------------------------------------------------------------------------- round trips

_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12)
_floats = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, _shapes, elements=_floats))
def test_fp32_round_trip_is_exact(x: np.ndarray) -> None:
    t = torch.from_numpy(x.copy())
    payload, _ = compress_update({"w": t}, CompressionSpec(bit_width=32))
    assert torch.equal(decode_tensors(payload)["w"], t)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        st.sampled_from([np.int64, np.int32, np.int8, np.uint8, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=6),
    )
)
def test_integer_and_bool_round_trip_is_exact(x: np.ndarray) -> None:
    t = torch.from_numpy(x.copy())
    payload, residual = compress_update({"n": t}, CompressionSpec(density=0.1, bit_width=1))
    out = decode_tensors(payload)["n"]
    assert out.dtype == t.dtype and torch.equal(out, t) and residual == {}


@settings(max_examples=80, deadline=None)
@given(
    hnp.arrays(np.float32, _shapes, elements=_floats),
    st.sampled_from([2, 4, 8]),
    st.booleans(),
    st.integers(-1, 0),
)
def test_quantized_round_trip_within_half_a_step(
    x: np.ndarray, bit_width: int, per_channel: bool, ch_axis: int
) -> None:
    # Prepare: the step of each row, as the encoder computes it.
    t = torch.from_numpy(x.copy())
    rows = channel_view(t, per_channel, ch_axis)
    scale = affine_qparams(*row_minmax(rows), bit_width).scale
    spec = CompressionSpec(bit_width=bit_width, per_channel=per_channel, ch_axis=ch_axis)

    # Execute
    payload, residual = compress_update({"w": t}, spec)
    out = decode_tensors(payload)["w"]

    # Assert
    err = channel_view(t - out, per_channel, ch_axis).abs()
    assert (err <= scale[:, None] / 2 * 1.001 + 1e-6).all()
    assert torch.allclose(out + residual["w"], t, atol=1e-3)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float32, _shapes, elements=_floats),
    st.floats(0.01, 1.0),
    st.sampled_from([1, 2, 4, 8, 16, 32]),
)
def test_sparse_round_trip_keeps_top_k_and_feeds_back_the_rest(
    x: np.ndarray, density: float, bit_width: int
) -> None:
    # Prepare
    t = torch.from_numpy(x.copy())
    spec = CompressionSpec(density=density, bit_width=bit_width)

    # Execute
    payload, residual = compress_update({"w": t}, spec)
    out = decode_tensors(payload)["w"]

    # Assert: shape, float32, and out + residual == update (nothing is lost).
    assert out.shape == t.shape and out.dtype == torch.float32
    assert torch.allclose(out + residual["w"], t, atol=1e-3, rtol=1e-5)


# --------------------------------------------------------------------------- bad bytes


def _payload() -> bytes:
    tensors = {"conv.weight": torch.randn(4, 3, 3, 3), "bn.num_batches_tracked": torch.tensor(7)}
    payload, _ = compress_update(tensors, CompressionSpec(density=0.3, bit_width=4))
    return payload


def test_truncated_payload_raises() -> None:
    payload = _payload()
    for cut in (0, 5, HEADER_BYTES, len(payload) // 2, len(payload) - 1):
        with pytest.raises(CodecError):
            decode_tensors(payload[:cut])
    with pytest.raises(CodecError, match="truncated"):
        decode_tensors(payload[:-1])


def test_every_single_byte_flip_raises() -> None:
    # Prepare
    payload = bytearray(_payload())

    # Execute / Assert: any corrupted byte is caught (magic, version, length or crc32).
    for pos in range(len(payload)):
        corrupted = bytearray(payload)
        corrupted[pos] ^= 0x5A
        with pytest.raises(CodecError):
            decode_tensors(bytes(corrupted))


def test_wrong_magic_version_and_type_raise() -> None:
    payload = bytearray(_payload())
    with pytest.raises(CodecError, match="magic"):
        decode_tensors(b"XXXX" + bytes(payload[4:]))
    payload[4] = 9
    with pytest.raises(CodecError, match="version 9"):
        decode_tensors(bytes(payload))
    with pytest.raises(CodecError, match="must be bytes"):
        decode_tensors("not bytes")  # type: ignore[arg-type]


def _head(name: bytes, dtype: int, shape: tuple[int, ...], kind: int) -> bytes:
    return (
        struct.pack("<H", len(name))
        + name
        + struct.pack(f"<BB{len(shape)}IB", dtype, len(shape), *shape, kind)
    )


def _float(shape: tuple[int, ...], meta: tuple, tail: bytes, dtype: int = 0) -> bytes:
    return _head(b"w", dtype, shape, 1) + struct.pack("<BBBbQBI", *meta) + tail


_OFFSET = struct.pack("<f", 0.0)
_SCALE = struct.pack("<f", 1.0) + b"\x00" + _OFFSET  # scale 1, zero point 0, offset 0


@pytest.mark.parametrize(
    ("records", "match"),
    [
        ([b"\x05\x00abc"], "ends inside"),
        ([struct.pack("<H", 2) + b"\xff\xfe"], "not utf-8"),
        ([_head(b"w", 99, (2,), 0)], "unknown dtype code 99"),
        ([_head(b"w", 8, (2,), 7)], "unknown record kind 7"),
        ([_head(b"w", 8, (2,), 0) + struct.pack("<Q", 3) + bytes(3)], "3 bytes for 2"),
        ([encode_raw("n", torch.tensor(1)), encode_raw("n", torch.tensor(2))], "repeats"),
        ([_float((4,), (3, 0, 0, 0, 4, 0, 1), b"")], "bad bit_width 3"),
        ([_float((4,), (8, 5, 0, 0, 4, 0, 1), b"")], "layout 5"),
        ([_float((4,), (8, 0, 0, 0, 9, 0, 1), b"")], "k 9"),
        ([_float((4,), (8, 1, 1, 0, 2, 0, 4), b"")], "per-channel scales on a sparse"),
        ([_float((4,), (8, 0, 0, 0, 4, 0, 2), b"")], "2 scale rows, expected 1"),
        ([_float((2, 2), (8, 0, 1, -9, 4, 0, 2), b"")], "per-channel scales on a sparse or 1-D"),
        ([_head(b"w", 0, (2**31, 2), 1)], "exceed the decoder limit"),
        (
            [_float((4,), (8, 0, 0, 0, 4, 0, 1), struct.pack("<f", -1.0) + b"\x00" + _OFFSET)],
            "scale",
        ),
        (
            [_float((4,), (2, 0, 0, 0, 4, 0, 1), struct.pack("<f", 1.0) + b"\x09" + _OFFSET)],
            "zero point",
        ),
        (
            [
                _float(
                    (4,),
                    (8, 0, 0, 0, 4, 0, 1),
                    _SCALE + struct.pack("<Q", 1) + b"\x00" + bytes(4),
                )
            ],
            "dense layout with an index",
        ),
        ([_float((4,), (32, 0, 0, 0, 4, 0, 1), struct.pack("<Q", 0) + bytes(8))], "ends inside"),
        (
            [_float((4,), (8, 0, 0, 0, 4, 0, 1), _SCALE + struct.pack("<Q", 0) + bytes(3))],
            "payload ends inside 'w' values",
        ),
        (
            [
                _float(
                    (4,),
                    (8, 1, 0, 0, 1, 0, 1),
                    _SCALE + struct.pack("<Q", 1) + b"\x03" + b"\x00",
                )
            ],
            "2 set bits",
        ),
        ([encode_raw("n", torch.tensor(1)) + b"\x00"], "unexpected bytes"),
    ],
)
def test_inconsistent_fields_raise_even_with_a_valid_checksum(records: list, match: str) -> None:
    # Prepare: a well-formed frame (length and crc32 right) around a bad record.
    payload = pack_payload(records)
    assert zlib.crc32(payload[:-4]) == struct.unpack("<I", payload[-4:])[0]

    # Execute / Assert
    with pytest.raises(CodecError, match=match):
        decode_tensors(payload)


def test_valid_hand_built_record_decodes() -> None:
    # Prepare: the negative controls above differ from this record in one field.
    payload = pack_payload(
        [_float((4,), (8, 0, 0, 0, 4, 0, 1), _SCALE + struct.pack("<Q", 0) + bytes([0, 1, 2, 3]))]
    )

    # Execute
    out = decode_tensors(payload)

    # Assert: codes 0..3, zero point 0, scale 1.
    assert out["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
