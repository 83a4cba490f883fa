"""Wire format for (sparsified, quantized) tensors: exact bytes, versioned, checksummed.

Layout, all integers little-endian::

    header   magic b"FDCU" | version u8 (=2) | flags u8 (=0) | total_len u64 | count u32
    record   name_len u16 | name utf-8 | dtype u8 | ndim u8 | shape u32 * ndim | kind u8
      kind RAW (integer / bool tensors, lossless):   nbytes u64 | raw bytes
      kind FLOAT (decoded as float32):
               value_bits u8 | layout u8 | per_channel u8 | ch_axis i8 | k u64 | rice_r u8
               | rows u32 | [scales f32 * rows | zero_points u8 * rows
               | offsets f32 * rows]  (value_bits <= 8)
               | index_nbytes u64 | index | values (ceil(n * value_bits / 8) bytes,
               n = numel for DENSE, else k)
    trailer  crc32 u32 of everything before it

``layout`` says how the positions of the k kept entries are coded, whichever is smallest
for that tensor: DENSE (every entry coded, unsent ones as exact zeros), BITMAP (numel
bits) or RICE (gaps between sorted positions, Golomb-Rice coded). Values are packed to
``value_bits`` bits (1, 2, 4, 8 affine codes; 16 fp16; 32 fp32). At 16 and 32 bits a
dense tensor that holds exact zeros is sent as its non-zero entries when that is
smaller (lossless: a 90%-sparse tensor costs ~13% of its fp32 bytes).

Encoding never turns a finite input into a non-finite value: fp16 saturates at
+-65504 and affine codes clip rows at +-``LIMIT`` (2**125); the caller's error
feedback keeps the excess.

A decoder checks the length, then the checksum, then every size against the bytes
present (dense layouts) or against the shapes the receiver expects (``expected``,
which bounds sparse layouts), before it allocates anything; truncated, corrupted or
hostile bytes raise :class:`CodecError` and never decode to garbage (the decoder lives in
:mod:`feddistill.compression.decode`).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from feddistill.compression.packing import (
    pack_bitmap,
    pack_codes,
    pack_rice,
    packed_nbytes,
    rice_parameter,
)
from feddistill.compression.quantize import (
    LIMIT,
    QParams,
    affine_qparams,
    channel_unview,
    channel_view,
    dequantize_rows,
    quantize_rows,
    row_minmax,
)
from feddistill.compression.sparsify import num_kept, topk_indices
from feddistill.compression.spec import CompressionSpec

MAGIC = b"FDCU"
MAX_NUMEL = 2**31  # entries per decoded tensor (8 GiB of float32); larger is rejected
# Entries of a sparse tensor decoded without ``expected`` shapes (64 MiB of float32):
# its size is not backed by bytes present, so it is bounded here.
MAX_UNCHECKED_SPARSE_NUMEL = 2**24
VERSION = 2
FP16_MAX = 65504.0
_F32_MAX = float(np.finfo(np.float32).max)
_HEADER = struct.Struct("<4sBBQI")
_FLOAT_META = struct.Struct("<BBBbQBI")
_CRC = struct.Struct("<I")
RAW, FLOAT = 0, 1
DENSE, BITMAP, RICE = 0, 1, 2

_DTYPES: tuple[torch.dtype, ...] = (
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
)
_DTYPE_CODE = {dt: i for i, dt in enumerate(_DTYPES)}


class CodecError(ValueError):
    """A payload is truncated, corrupted, or not a payload of this codec."""


def _tensor_head(name: str, shape: tuple[int, ...], dtype: torch.dtype, kind: int) -> bytes:
    name_bytes = name.encode("utf-8")
    if len(name_bytes) >= 2**16 or len(shape) >= 2**8 or any(s >= 2**32 for s in shape):
        raise ValueError(f"tensor {name!r}: name, ndim or shape {shape} too large")
    if dtype not in _DTYPE_CODE:
        raise ValueError(f"tensor {name!r}: dtype {dtype} not in {set(_DTYPES)}")
    head = struct.pack(f"<BB{len(shape)}IB", _DTYPE_CODE[dtype], len(shape), *shape, kind)
    return struct.pack("<H", len(name_bytes)) + name_bytes + head


def encode_raw(name: str, t: Tensor) -> bytes:
    """One RAW record: the tensor's bytes, dtype kept (integer and bool tensors)."""
    data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return _tensor_head(name, tuple(t.shape), t.dtype, RAW) + struct.pack("<Q", len(data)) + data


def _quantize_values(
    rows: Tensor, enc: CompressionSpec, generator: torch.Generator | None, recon: bool
) -> tuple[Tensor, QParams | None, Tensor | None]:
    """(C, M) float32 rows -> (codes or cast values, qparams, reconstruction (C, M)).

    fp16 saturates at +-65504 and affine codes clip at +-LIMIT, so a finite input never
    decodes to Inf; the reconstruction shows the clipping to the caller's residual.
    """
    if enc.bit_width == 32:
        return rows, None, rows
    if enc.bit_width == 16:
        half = rows.clamp(-FP16_MAX, FP16_MAX).half()
        return half, None, half.float() if recon else None
    lo, hi = row_minmax(rows)
    if rows.numel() and (float(lo.min()) < -LIMIT or float(hi.max()) > LIMIT):
        rows = rows.clamp(-LIMIT, LIMIT)
        lo, hi = lo.clamp(-LIMIT, LIMIT), hi.clamp(-LIMIT, LIMIT)
    qparams = affine_qparams(lo, hi, enc.bit_width)
    codes = quantize_rows(rows, qparams, enc.stochastic, generator)
    return codes, qparams, dequantize_rows(codes, qparams) if recon else None


def _values_bytes(values: Tensor, bit_width: int) -> bytes:
    if bit_width > 8:
        return values.contiguous().numpy().tobytes()
    return pack_codes(values.numpy().ravel(), bit_width)


def encode_float(
    name: str,
    acc: Tensor,
    enc: CompressionSpec,
    generator: torch.Generator | None = None,
    reconstruct: bool = True,
) -> tuple[bytes, Tensor | None]:
    """One FLOAT record for a finite float tensor, and what the receiver will decode.

    Args:
        name: the tensor's key.
        acc: float tensor (update + residual), any shape; must be finite.
        enc: sparsification and quantization settings (``error_feedback`` is the
            caller's business and not read here).
        generator: random source for stochastic rounding.
        reconstruct: also return what the receiver will decode (for error feedback).

    Returns:
        (record bytes, reconstruction): the reconstruction is float32 with ``acc``'s
        shape and equals ``decode`` of the record exactly; None if not ``reconstruct``.

    Raises:
        ValueError: if ``ch_axis`` is out of range for this tensor.
    """
    dtype = acc.dtype
    acc = acc.detach().cpu().float().contiguous()
    n = acc.numel()
    kept = num_kept(n, enc.density, enc.k)
    idx: Tensor | None = None
    if kept == n and enc.bit_width >= 16:
        # Lossless widths: exact zeros need not be sent (an already-pruned tensor).
        nonzero = torch.count_nonzero(acc)
        if int(nonzero) < n:
            idx = torch.nonzero(acc.reshape(-1)).reshape(-1)  # sorted ascending
            kept = idx.numel()
    if kept == n:
        per_channel = enc.per_channel and acc.ndim >= 2
        rows = channel_view(acc, per_channel, enc.ch_axis, name)  # (C, numel / C)
        values, qparams, recon_rows = _quantize_values(rows, enc, generator, reconstruct)
        recon = None
        if recon_rows is not None:
            recon = channel_unview(recon_rows, tuple(acc.shape), per_channel, enc.ch_axis)
        index, layout, rice_r = b"", DENSE, 0
        values_bytes = _values_bytes(values, enc.bit_width)
    else:
        idx = topk_indices(acc, kept) if idx is None else idx
        sparse_rows = acc.reshape(-1)[idx].reshape(1, -1)  # (1, k)
        values, qparams, recon_rows = _quantize_values(sparse_rows, enc, generator, True)
        assert recon_rows is not None  # always reconstructed on the sparse path
        recon = torch.zeros(n, dtype=torch.float32)
        recon[idx] = recon_rows.reshape(-1)
        recon = recon.reshape(acc.shape) if reconstruct else None
        per_channel = False
        layout, index, values_bytes, rice_r = _smallest_layout(idx, values, qparams, n, enc)
    meta = _FLOAT_META.pack(
        enc.bit_width,
        layout,
        int(per_channel),
        enc.ch_axis % max(acc.ndim, 1) if per_channel else 0,
        kept,
        rice_r,
        1 if qparams is None else qparams.scale.numel(),
    )
    scales = b""
    if qparams is not None:
        scales = qparams.scale.numpy().astype("<f4").tobytes()
        scales += qparams.zero_point.numpy().astype(np.uint8).tobytes()
        offset = qparams.offset
        offsets = np.zeros(qparams.scale.numel(), "<f4") if offset is None else offset.numpy()
        scales += offsets.astype("<f4").tobytes()
    record = b"".join(
        [
            _tensor_head(name, tuple(acc.shape), dtype, FLOAT),
            meta,
            scales,
            struct.pack("<Q", len(index)),
            index,
            values_bytes,
        ]
    )
    return record, recon


def _smallest_layout(
    idx: Tensor, values: Tensor, qparams: QParams | None, n: int, enc: CompressionSpec
) -> tuple[int, bytes, bytes, int]:
    """Pick DENSE, BITMAP or RICE for k kept entries, whichever is fewest bytes."""
    k = idx.numel()
    idx_np = idx.numpy()
    bits = enc.bit_width
    rice_r, rice_bytes = rice_parameter(idx_np)
    costs = {
        BITMAP: packed_nbytes(n, 1) + packed_nbytes(k, bits),
        RICE: rice_bytes + packed_nbytes(k, bits),
    }
    if qparams is None or qparams.offset is None:  # unsent entries need an exact 0 code
        costs[DENSE] = packed_nbytes(n, bits)
    layout = min(costs, key=lambda key: (costs[key], key))
    if layout == DENSE:
        if qparams is None:
            full = torch.zeros(n, dtype=values.dtype)
        else:
            full = torch.full((n,), int(qparams.zero_point[0]), dtype=torch.uint8)
        full[idx] = values.reshape(-1)
        return DENSE, b"", _values_bytes(full, bits), 0
    index = pack_bitmap(idx_np, n) if layout == BITMAP else pack_rice(idx_np, rice_r)
    return layout, index, _values_bytes(values.reshape(-1), bits), rice_r


def pack_payload(records: Iterable[bytes]) -> bytes:
    """Header + records + crc32 trailer."""
    records = list(records)
    body_len = sum(len(r) for r in records)
    total = _HEADER.size + body_len + _CRC.size
    head = _HEADER.pack(MAGIC, VERSION, 0, total, len(records))
    out = b"".join([head, *records])
    return out + _CRC.pack(zlib.crc32(out))
