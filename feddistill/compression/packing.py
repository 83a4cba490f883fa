"""Bit-level packing with numpy: quantization codes, index bitmaps, Golomb-Rice gaps.

Every function is vectorised (loops run over bit positions, at most 64, never over
elements). Bit order is little-endian within a byte: element ``i`` of a 4-bit stream
sits in bits ``4 * (i % 2) ...`` of byte ``i // 2``.
"""

from __future__ import annotations

import numpy as np


class PackingError(ValueError):
    """A packed stream is inconsistent with the sizes it was declared with."""


def packed_nbytes(n: int, bit_width: int) -> int:
    """Bytes taken by ``n`` values of ``bit_width`` bits: ``ceil(n * bit_width / 8)``."""
    return (n * bit_width + 7) // 8


def pack_codes(codes: np.ndarray, bit_width: int) -> bytes:
    """Pack uint8 codes of ``bit_width`` in {1, 2, 4, 8} bits, ``8 // bit_width`` per byte.

    Args:
        codes: uint8, shape (n,), each ``< 2**bit_width``.
        bit_width: one of {1, 2, 4, 8}.

    Returns:
        ``packed_nbytes(n, bit_width)`` bytes; the last byte is zero-padded.
    """
    codes = np.ascontiguousarray(codes, dtype=np.uint8).ravel()
    if bit_width == 8:
        return codes.tobytes()
    if bit_width == 1:
        return np.packbits(codes, bitorder="little").tobytes()
    per_byte = 8 // bit_width
    pad = (-codes.size) % per_byte
    if pad:
        codes = np.concatenate([codes, np.zeros(pad, dtype=np.uint8)])
    grid = codes.reshape(-1, per_byte)  # (n / per_byte, per_byte)
    out = grid[:, 0].copy()
    for j in range(1, per_byte):
        out |= grid[:, j] << np.uint8(bit_width * j)
    return out.tobytes()


def unpack_codes(buf: bytes | memoryview, bit_width: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`.

    Returns:
        uint8 codes, shape (n,), writable.

    Raises:
        PackingError: if ``buf`` is not exactly ``packed_nbytes(n, bit_width)`` long.
    """
    if len(buf) != packed_nbytes(n, bit_width):
        raise PackingError(
            f"{bit_width}-bit stream of {n} values needs {packed_nbytes(n, bit_width)} bytes, "
            f"got {len(buf)}"
        )
    raw = np.frombuffer(buf, dtype=np.uint8)
    if bit_width == 8:
        return raw.copy()
    if bit_width == 1:
        return np.unpackbits(raw, count=n, bitorder="little")
    per_byte = 8 // bit_width
    mask = np.uint8(2**bit_width - 1)
    out = np.empty((raw.size, per_byte), dtype=np.uint8)  # (bytes, per_byte)
    for j in range(per_byte):
        out[:, j] = (raw >> np.uint8(bit_width * j)) & mask
    return out.ravel()[:n]


def pack_bitmap(indices: np.ndarray, n: int) -> bytes:
    """Positions of ``indices`` (int64, in ``[0, n)``) as an n-bit bitmap."""
    mask = np.zeros(n, dtype=np.uint8)
    mask[indices] = 1
    return np.packbits(mask, bitorder="little").tobytes()


def unpack_bitmap(buf: bytes | memoryview, n: int, k: int) -> np.ndarray:
    """Inverse of :func:`pack_bitmap`: sorted int64 indices, shape (k,).

    Raises:
        PackingError: if the length is not ``ceil(n / 8)`` or the bitmap holds != k ones.
    """
    if len(buf) != packed_nbytes(n, 1):
        raise PackingError(f"bitmap of {n} bits needs {packed_nbytes(n, 1)} bytes, got {len(buf)}")
    bits = np.unpackbits(np.frombuffer(buf, dtype=np.uint8), count=n, bitorder="little")
    indices = np.flatnonzero(bits)
    if indices.size != k:
        raise PackingError(f"bitmap holds {indices.size} set bits, header says {k}")
    return indices.astype(np.int64)


def _gaps(indices: np.ndarray) -> np.ndarray:
    """Sorted, distinct indices -> non-negative gaps ``idx[i] - idx[i-1] - 1`` (idx[-1] = -1)."""
    return np.diff(indices, prepend=-1) - 1


def rice_parameter(indices: np.ndarray) -> tuple[int, int]:
    """Best Golomb-Rice parameter ``r`` for the gaps of sorted indices, and its cost.

    Cost in bits of gap ``d`` is ``r + 1 + (d >> r)``; candidates around
    ``log2(mean gap)`` are tried exactly.

    Returns:
        (r, total bytes of :func:`pack_rice`).
    """
    gaps = _gaps(indices)
    k = gaps.size
    if k == 0:
        return 0, 0
    guess = int(np.log2(max(float(gaps.mean()), 1.0)))
    best: tuple[int, int] | None = None
    for r in range(max(0, guess - 2), guess + 3):
        nbytes = packed_nbytes(k * r, 1) + packed_nbytes(int((gaps >> r).sum()) + k, 1)
        if best is None or nbytes < best[1]:
            best = (r, nbytes)
    assert best is not None
    return best


def pack_rice(indices: np.ndarray, r: int) -> bytes:
    """Delta-code sorted distinct indices with Golomb-Rice parameter ``r``.

    Layout: the ``k`` remainders ``gap & (2**r - 1)`` as r-bit fields (little-endian
    bits), then the quotients ``gap >> r`` in unary (q zeros then a one), each stream
    padded to a byte. Keeping the streams apart makes decoding vectorisable: the unary
    terminators are just the set bits of the second stream.

    Args:
        indices: sorted distinct int64 indices, shape (k,).
        r: Rice parameter, 0 <= r < 63.

    Returns:
        The two streams, concatenated.
    """
    gaps = _gaps(indices.astype(np.int64))
    k = gaps.size
    rem_bits = ((gaps[:, None] >> np.arange(r, dtype=np.int64)) & 1).astype(np.uint8)  # (k, r)
    remainders = np.packbits(rem_bits.ravel(), bitorder="little").tobytes()
    quotients = gaps >> r
    ends = np.cumsum(quotients + 1) - 1  # position of each unary terminator
    unary = np.zeros(int(ends[-1]) + 1 if k else 0, dtype=np.uint8)
    unary[ends] = 1
    return remainders + np.packbits(unary, bitorder="little").tobytes()


def unpack_rice(buf: bytes | memoryview, r: int, k: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_rice`: sorted int64 indices, shape (k,), all in ``[0, n)``.

    Raises:
        PackingError: if the streams hold fewer than k terminators, trailing bits, or an
            index >= n.
    """
    if not 0 <= r <= 62:
        raise PackingError(f"Rice parameter {r} outside [0, 62]")
    if k > n:
        raise PackingError(f"Rice stream of {k} indices cannot fit in numel {n}")
    rem_nbytes = packed_nbytes(k * r, 1)
    if len(buf) < rem_nbytes:
        raise PackingError(f"Rice stream needs at least {rem_nbytes} bytes, got {len(buf)}")
    raw = np.frombuffer(buf, dtype=np.uint8)
    rem_bits = np.unpackbits(raw[:rem_nbytes], count=k * r, bitorder="little")
    weights = np.int64(1) << np.arange(r, dtype=np.int64)
    remainders = rem_bits.reshape(k, r).astype(np.int64) @ weights if r else np.zeros(k, np.int64)
    ends = np.flatnonzero(np.unpackbits(raw[rem_nbytes:], bitorder="little"))
    if ends.size != k or (k and packed_nbytes(int(ends[-1]) + 1, 1) != raw.size - rem_nbytes):
        raise PackingError(f"Rice stream holds {ends.size} codes / trailing bytes, header says {k}")
    quotients = np.diff(ends, prepend=-1) - 1
    # A gap is < n; checking the quotients first keeps every sum below 2**63.
    if k and int(quotients.max()) > (n >> r):
        raise PackingError(f"Rice stream decodes a gap >= numel {n}")
    gaps = (quotients << r) + remainders
    if k and int(gaps.max()) >= n:
        raise PackingError(f"Rice stream decodes a gap >= numel {n}")
    indices = np.cumsum(gaps + 1) - 1
    if k and indices[-1] >= n:
        raise PackingError(f"Rice stream decodes index {int(indices[-1])} >= numel {n}")
    return indices.astype(np.int64)
