"""Uniform affine quantization to `bit_width` in {1, 2, 4, 8} bits, per tensor or per channel.

A float tensor ``x`` becomes unsigned codes ``q`` in ``[quant_min, quant_max] = [0, 2**b - 1]``
and, per channel, an fp32 ``scale``, an integer ``zero_point`` in ``[0, quant_max]`` and an
fp32 ``offset``::

    q     = clamp(round((x - offset) / scale) + zero_point, 0, quant_max)
    x_hat = (q - zero_point) * scale + offset

A channel whose range contains 0 is quantized as in ``torch.ao.quantization.observer``:
``offset = 0`` and the range ``[min(x, 0), max(x, 0)]``, so 0.0 is exactly representable
(pruned weights and padded rows stay exactly zero). A channel of one sign uses its own
range ``[min(x), max(x)]`` (``offset = min(x)``, ``zero_point = 0``): values in [100, 101]
get steps of 1/255, not 101/255. Unlike the observers, the scale is widened just enough
that no value of ``x`` falls outside the grid once the zero point is rounded to an
integer; hence every value is rounded, never clipped, and stochastic rounding is
unbiased. The one exception is ``bit_width=1`` on a channel with both signs: two levels
cannot hold a negative value, zero and a positive value, so the smaller side is clipped
(error feedback carries the clipped part).

Edge case (``min == max == 0``, e.g. a conv weight pruned to zero): ``scale = 1.0``,
``zero_point = 0``, every code is 0 and ``x_hat`` is exactly 0.0.

References:
    QSGD (stochastic rounding), Alistarh et al., arXiv:1610.02132.
    Jacob et al., integer-arithmetic-only inference, arXiv:1712.05877.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from feddistill.compression.names import BIT_WIDTHS, INT_BIT_WIDTHS


def check_bit_width(bit_width: int, allowed: tuple[int, ...] = BIT_WIDTHS) -> None:
    """Raise ``ValueError`` unless ``bit_width`` is in ``allowed``.

    Raises:
        ValueError: naming the value and the allowed set.
    """
    if isinstance(bit_width, bool) or not isinstance(bit_width, int) or bit_width not in allowed:
        allowed_set = "{" + ", ".join(str(b) for b in allowed) + "}"
        raise ValueError(f"bit_width must be one of {allowed_set}, got {bit_width!r}")


def channel_view(x: Tensor, per_channel: bool, ch_axis: int, key: str = "tensor") -> Tensor:
    """View ``x`` as rows: (C, numel / C), channels along ``ch_axis`` first.

    Tensors with fewer than 2 dimensions (biases, scalars) always use one row: a scale
    per element would cost more than the values.

    Args:
        x: any shape.
        per_channel: one row per index of ``ch_axis`` if True, else a single row.
        ch_axis: channel axis, in ``[-x.ndim, x.ndim)``.
        key: the tensor's name, for error messages.

    Returns:
        A contiguous (C, M) tensor (a copy when ``ch_axis`` is not 0).

    Raises:
        ValueError: if ``ch_axis`` is out of range for a tensor of 2 or more dimensions.
    """
    if not per_channel or x.ndim < 2:
        return x.reshape(1, -1)
    if not -x.ndim <= ch_axis < x.ndim:
        raise ValueError(
            f"ch_axis={ch_axis} out of range for {key!r} of shape {tuple(x.shape)}; "
            f"allowed: {list(range(-x.ndim, x.ndim))}"
        )
    return x.movedim(ch_axis, 0).reshape(x.shape[ch_axis], -1).contiguous()


def channel_unview(rows: Tensor, shape: tuple[int, ...], per_channel: bool, ch_axis: int) -> Tensor:
    """Inverse of :func:`channel_view`: (C, M) rows back to ``shape``."""
    if not per_channel or len(shape) < 2:
        return rows.reshape(shape)
    axis = ch_axis % len(shape)
    moved = (shape[axis],) + tuple(s for i, s in enumerate(shape) if i != axis)
    return rows.reshape(moved).movedim(0, axis).contiguous()


@dataclass(frozen=True)
class QParams:
    """Per-row quantization parameters: ``x_hat = (q - zero_point) * scale + offset``.

    Attributes:
        scale: fp32, shape (C,), every entry finite and > 0.
        zero_point: int64, shape (C,), in ``[0, 2**bit_width - 1]``.
        bit_width: one of {1, 2, 4, 8}.
        offset: fp32, shape (C,), or None for all zeros. 0 for a row whose range
            contains 0 (0.0 stays exact); the row's minimum for a row of one sign
            (the grid spans the data, not ``[0, max]``).
    """

    scale: Tensor
    zero_point: Tensor
    bit_width: int
    offset: Tensor | None = None


# Rows are clipped to +-LIMIT before quantization, so that every code decodes to a
# finite float32: the grid spans at most ~2 * 2**126 < float32 max (3.4e38).
LIMIT = float(2**125)
_F32_MAX = float(np.finfo(np.float32).max)


def _round_up_f32(x: np.ndarray) -> np.ndarray:
    """float64 -> the smallest float32 >= x (a scale never shrinks when stored)."""
    out = x.astype(np.float32)
    return np.where(out.astype(np.float64) < x, np.nextafter(out, np.float32(np.inf)), out)


def affine_qparams(lo: Tensor, hi: Tensor, bit_width: int) -> QParams:
    """Scale, zero point and offset covering each row's range ``[lo, hi]``.

    A row whose range contains 0 gets ``offset = 0`` and an integer zero point, so
    0.0 is exactly representable (pruned weights stay exactly zero). A row of one
    sign (``lo > 0`` or ``hi < 0``) uses its own range: ``zero_point = 0``,
    ``offset = lo``, ``scale = (hi - lo) / quant_max``, so the error is at most half
    a step of the data's range (values in [100, 101] at 8 bits: 1/510).

    Args:
        lo: per-row minimum, shape (C,), float32, finite, ``|lo| <= LIMIT``.
        hi: per-row maximum, shape (C,), float32, ``hi >= lo``, ``|hi| <= LIMIT``.
        bit_width: one of {1, 2, 4, 8}.

    Returns:
        :class:`QParams` with scales of shape (C,). A row with ``lo == hi == 0``, or
        with a range too small for a normal float32 step (denormals), gets
        ``scale = 1.0, zero_point = 0`` and decodes to exactly 0; a constant row of
        one sign decodes to exactly its value.

    Raises:
        ValueError: if ``bit_width`` is not in {1, 2, 4, 8}.
    """
    check_bit_width(bit_width, INT_BIT_WIDTHS)
    # numpy float64 on (C,)-sized vectors: torch's per-op overhead would dominate, and
    # float64 cannot overflow on spans of up to 2 * float32 max.
    qmax = float(2**bit_width - 1)
    lo64 = lo.detach().cpu().numpy().astype(np.float64)
    hi64 = hi.detach().cpu().numpy().astype(np.float64)
    one_sign = (lo64 > 0) | (hi64 < 0)
    low = np.where(one_sign, 0.0, np.minimum(lo64, 0.0))
    high = np.where(one_sign, 0.0, np.maximum(hi64, 0.0))
    # A span whose step would not be a normal float32 (e.g. denormal weights around
    # 1e-45) counts as zero-range: 1/scale must stay finite. Such rows decode to 0.
    tiny = float(np.finfo(np.float32).tiny) * qmax
    flush = (high - low) < tiny
    low = np.where(flush, 0.0, low)
    high = np.where(flush, 0.0, high)
    span = high - low
    scale0 = np.where(span > 0, span / qmax, 1.0)
    zp = np.round(-low / scale0)
    # Keep a code on each side of zero where a side is non-empty (needs qmax >= 2).
    zp = np.where((low < 0) & (zp < 1), 1.0, zp)
    zp = np.where((high > 0) & (zp > qmax - 1), qmax - 1, zp)
    if qmax == 1:  # two levels: keep the larger side of a mixed-sign row
        zp = np.where((low < 0) & (-low > high), 1.0, zp)
    zp = np.clip(zp, 0, qmax)
    # Widen the scale so that both ends fit on the integer grid (no clipping).
    need_hi = np.where(zp < qmax, high / np.maximum(qmax - zp, 1.0), 0.0)
    need_lo = np.where(zp > 0, -low / np.maximum(zp, 1.0), 0.0)
    scale = np.maximum(need_hi, need_lo)  # > 0 whenever span > 0
    scale = np.where(scale > 0, scale, 1.0)
    # Rows of one sign: the grid starts at the row's minimum.
    data_span = hi64 - lo64
    data_scale = np.where(data_span >= tiny, data_span / qmax, 1.0)
    scale = np.where(one_sign, data_scale, scale)
    zp = np.where(one_sign, 0.0, zp)
    offset = np.where(one_sign, lo64, 0.0).astype(np.float32)
    scale32 = np.minimum(_round_up_f32(scale), np.float32(_F32_MAX))
    return QParams(
        scale=torch.from_numpy(scale32.astype(np.float32)),
        zero_point=torch.from_numpy(zp.astype(np.int64)),
        bit_width=bit_width,
        offset=torch.from_numpy(offset) if bool(one_sign.any()) else None,
    )


def quantize_rows(
    rows: Tensor,
    qparams: QParams,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Quantize rows with per-row parameters.

    Args:
        rows: float32, shape (C, M).
        qparams: scales and zero points of shape (C,).
        stochastic: round up with probability equal to the fractional part (unbiased:
            ``E[x_hat] = x`` for every value inside the grid) instead of to nearest.
        generator: random source for stochastic rounding; fixes the draw when seeded.

    Returns:
        uint8 codes, shape (C, M), in ``[0, 2**bit_width - 1]``.

    References:
        QSGD, arXiv:1610.02132.
    """
    qmax = 2**qparams.bit_width - 1
    # In-place after the first op: each pass over a 40 MB tensor costs ~3 ms, a fresh
    # allocation ~15 ms.
    if qparams.offset is not None:
        v = rows.sub(qparams.offset[:, None]).mul_(1.0 / qparams.scale[:, None])
    else:
        v = rows.mul(1.0 / qparams.scale[:, None])
    v.add_(qparams.zero_point[:, None].to(rows.dtype))
    if stochastic:
        v.add_(torch.rand(v.shape, generator=generator, dtype=v.dtype, device=v.device))
        v.floor_()
    else:
        v.round_()
    return v.clamp_(0, qmax).to(torch.uint8)


def dequantize_rows(codes: Tensor, qparams: QParams) -> Tensor:
    """Codes (C, M) back to float32 (C, M): ``(q - zero_point) * scale + offset``."""
    zp = qparams.zero_point[:, None].to(torch.float32)
    out = codes.to(torch.float32).sub_(zp).mul_(qparams.scale[:, None])
    return out if qparams.offset is None else out.add_(qparams.offset[:, None])


def all_finite(x: Tensor) -> bool:
    """True if ``x`` holds no NaN and no Inf (one min/max pass: NaN propagates)."""
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x.detach().reshape(-1))
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def row_minmax(rows: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row (min, max) of a (C, M) tensor; rows of length 0 give (0, 0)."""
    if rows.shape[1] == 0:
        zeros = torch.zeros(rows.shape[0], dtype=torch.float32)
        return zeros, zeros
    # Two reductions: on torch 2.14 CPU, aminmax(dim=1) is 10-20x slower than amin + amax.
    return torch.amin(rows, dim=1).float(), torch.amax(rows, dim=1).float()
