"""Decoder of the wire format of :mod:`feddistill.compression.codec`.

Every size is checked before anything is allocated: the length and checksum first,
then dense layouts and raw records against the bytes present, sparse layouts against
the shapes the receiver expects (or :data:`MAX_UNCHECKED_SPARSE_NUMEL` without them).
Truncated, corrupted or hostile bytes raise :class:`CodecError`.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from feddistill.compression.codec import (
    _CRC,
    _DTYPES,
    _F32_MAX,
    _FLOAT_META,
    _HEADER,
    BITMAP,
    DENSE,
    FLOAT,
    MAGIC,
    MAX_NUMEL,
    MAX_UNCHECKED_SPARSE_NUMEL,
    RAW,
    RICE,
    VERSION,
    CodecError,
)
from feddistill.compression.packing import (
    PackingError,
    packed_nbytes,
    unpack_bitmap,
    unpack_codes,
    unpack_rice,
)
from feddistill.compression.quantize import QParams, channel_unview, dequantize_rows


class _Reader:
    """Bounds-checked cursor over a payload; every overrun is a CodecError."""

    def __init__(self, buf: memoryview, end: int) -> None:
        self.buf, self.pos, self.end = buf, 0, end

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > self.end:
            raise CodecError(f"payload ends inside {what} (needs {n} bytes at offset {self.pos})")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str | struct.Struct, what: str) -> tuple:
        s = fmt if isinstance(fmt, struct.Struct) else struct.Struct(fmt)
        return s.unpack(self.take(s.size, what))


def decode_payload(
    payload: bytes, expected: Mapping[str, tuple[int, ...]] | None = None
) -> dict[str, Tensor]:
    """Decode a payload of :func:`pack_payload` into dense tensors, in stored order.

    Every size is checked before anything is allocated: dense layouts and raw records
    against the bytes present, sparse layouts against ``expected`` (or, without it,
    against :data:`MAX_UNCHECKED_SPARSE_NUMEL`). The largest allocation is therefore
    a small multiple of ``len(payload)`` plus the expected tensors.

    Args:
        payload: the bytes received.
        expected: name -> shape the receiver knows (e.g. the global model's
            state_dict). When given, a tensor with another name or shape is rejected
            before it is decoded. Names that are absent are not an error here.

    Returns:
        name -> tensor: float records as float32, raw records with their dtype.

    Raises:
        CodecError: on a wrong magic/version, a length that disagrees with the header
            (truncation), a checksum mismatch (corruption), a name or shape other than
            ``expected``, or any inconsistent field.
    """
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise CodecError(f"payload must be bytes, got {type(payload).__name__}")
    buf = memoryview(payload).cast("B")
    if len(buf) < _HEADER.size + _CRC.size:
        raise CodecError(f"payload of {len(buf)} bytes is shorter than a header")
    magic, version, _flags, total, count = _HEADER.unpack(buf[: _HEADER.size])
    if magic != MAGIC:
        raise CodecError(f"not a feddistill payload: magic {bytes(magic)!r} != {MAGIC!r}")
    if version != VERSION:
        raise CodecError(f"payload version {version} unsupported; this decoder reads {VERSION}")
    if total != len(buf):
        raise CodecError(f"payload truncated or padded: header says {total} bytes, got {len(buf)}")
    (crc,) = _CRC.unpack(buf[-_CRC.size :])
    if zlib.crc32(buf[: -_CRC.size]) != crc:
        raise CodecError("payload corrupted: crc32 mismatch")
    reader = _Reader(buf, len(buf) - _CRC.size)
    reader.pos = _HEADER.size
    out: dict[str, Tensor] = {}
    for _ in range(count):
        name, tensor = _decode_record(reader, expected)
        if name in out:
            raise CodecError(f"payload repeats tensor {name!r}")
        out[name] = tensor
    if reader.pos != reader.end:
        raise CodecError(f"{reader.end - reader.pos} unexpected bytes after the last record")
    return out


def _decode_record(
    reader: _Reader, expected: Mapping[str, tuple[int, ...]] | None
) -> tuple[str, Tensor]:
    (name_len,) = reader.unpack("<H", "name length")
    try:
        name = bytes(reader.take(name_len, "name")).decode("utf-8")
    except UnicodeDecodeError as err:
        raise CodecError("tensor name is not utf-8") from err
    dtype_code, ndim = reader.unpack("<BB", f"{name!r} dtype")
    if dtype_code >= len(_DTYPES):
        raise CodecError(f"tensor {name!r}: unknown dtype code {dtype_code}")
    shape = tuple(reader.unpack(f"<{ndim}I", f"{name!r} shape"))
    if expected is not None:
        if name not in expected:
            raise CodecError(f"unexpected tensor {name!r}; expected one of {sorted(expected)}")
        if tuple(expected[name]) != shape:
            raise CodecError(
                f"tensor {name!r} claims shape {shape}, expected {tuple(expected[name])}"
            )
    numel = math.prod(shape)
    if numel > MAX_NUMEL:
        raise CodecError(f"tensor {name!r}: {numel} entries exceed the decoder limit {MAX_NUMEL}")
    (kind,) = reader.unpack("<B", f"{name!r} kind")
    try:
        if kind == RAW:
            return name, _decode_raw(reader, name, _DTYPES[dtype_code], shape, numel)
        if kind == FLOAT:
            return name, _decode_float(reader, name, shape, numel, expected is not None)
    except PackingError as err:
        raise CodecError(f"tensor {name!r}: {err}") from err
    raise CodecError(f"tensor {name!r}: unknown record kind {kind}")


def _decode_raw(
    reader: _Reader, name: str, dtype: torch.dtype, shape: tuple[int, ...], numel: int
) -> Tensor:
    (nbytes,) = reader.unpack("<Q", f"{name!r} size")
    itemsize = torch.empty((), dtype=dtype).element_size()
    if nbytes != numel * itemsize:
        raise CodecError(f"tensor {name!r}: {nbytes} bytes for {numel} x {dtype}")
    data = bytearray(reader.take(nbytes, f"{name!r} data"))
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(data, dtype=dtype).reshape(shape)


def _decode_float(
    reader: _Reader, name: str, shape: tuple[int, ...], numel: int, shape_checked: bool
) -> Tensor:
    bits, layout, per_channel, ch_axis, k, rice_r, rows = reader.unpack(_FLOAT_META, name)
    if bits not in (1, 2, 4, 8, 16, 32) or layout not in (DENSE, BITMAP, RICE) or k > numel:
        raise CodecError(f"tensor {name!r}: bad bit_width {bits}, layout {layout} or k {k}")
    if layout == RICE and not shape_checked and numel > MAX_UNCHECKED_SPARSE_NUMEL:
        raise CodecError(
            f"tensor {name!r}: sparse claim of {numel} entries exceeds "
            f"{MAX_UNCHECKED_SPARSE_NUMEL} without expected shapes"
        )
    if per_channel and (k != numel or len(shape) < 2 or not 0 <= ch_axis < len(shape)):
        raise CodecError(f"tensor {name!r}: per-channel scales on a sparse or 1-D tensor")
    expected_rows = shape[ch_axis] if per_channel else 1
    if bits <= 8 and rows != expected_rows:
        raise CodecError(f"tensor {name!r}: {rows} scale rows, expected {expected_rows}")
    qparams = None
    if bits <= 8:
        scale = np.frombuffer(reader.take(4 * rows, f"{name!r} scales"), dtype="<f4")
        zp = np.frombuffer(reader.take(rows, f"{name!r} zero points"), dtype=np.uint8)
        offset = np.frombuffer(reader.take(4 * rows, f"{name!r} offsets"), dtype="<f4")
        if not np.all(np.isfinite(scale) & (scale > 0)) or np.any(zp >= 2**bits):
            raise CodecError(f"tensor {name!r}: non-finite scale or zero point out of range")
        # Every code must decode to a finite float32: |q - zp| * scale + |offset| < max.
        reach = scale.astype(np.float64) * (2**bits - 1) + np.abs(offset.astype(np.float64))
        if not np.all(np.isfinite(offset)) or np.any(reach > _F32_MAX * (1 - 2**-20)):
            raise CodecError(f"tensor {name!r}: offsets or scales would decode to Inf")
        has_offset = bool(np.any(offset != 0))
        qparams = QParams(
            torch.from_numpy(scale.astype(np.float32)),
            torch.from_numpy(zp.astype(np.int64)),
            bits,
            torch.from_numpy(offset.astype(np.float32)) if has_offset else None,
        )
    (index_nbytes,) = reader.unpack("<Q", f"{name!r} index size")
    index = reader.take(index_nbytes, f"{name!r} index")
    n_values = numel if layout == DENSE else k
    values_buf = reader.take(packed_nbytes(n_values, bits), f"{name!r} values")
    values = _decode_values(values_buf, bits, n_values)
    if qparams is not None:
        if per_channel:
            flat = dequantize_rows(values.reshape(rows, -1), qparams)  # (C, numel / C)
            return channel_unview(flat, shape, True, ch_axis)
        values = dequantize_rows(values.reshape(1, -1), qparams).reshape(-1)
    if layout == DENSE:
        if index_nbytes:
            raise CodecError(f"tensor {name!r}: dense layout with an index")
        return values.reshape(shape)
    if layout == BITMAP:
        idx = unpack_bitmap(index, numel, k)
    else:
        idx = unpack_rice(index, rice_r, k, numel)
    dense = torch.zeros(numel, dtype=torch.float32)
    dense[torch.from_numpy(idx)] = values
    return dense.reshape(shape)


def _decode_values(buf: memoryview, bits: int, n: int) -> Tensor:
    """``packed_nbytes(n, bits)`` bytes (length checked by the reader) -> n codes / floats."""
    if bits <= 8:
        return torch.from_numpy(unpack_codes(buf, bits, n))
    dtype = np.float16 if bits == 16 else np.float32
    return torch.from_numpy(np.frombuffer(buf, dtype=dtype).astype(np.float32))
