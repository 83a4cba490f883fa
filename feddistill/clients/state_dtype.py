"""Storage precision of a client's teacher in ``client-state/`` (key ``client-state-dtype``).

A client keeps its teacher between rounds on disk (``client-state/partition-K/``); with
the default ``cnn`` teacher (3.2M parameters) that is 12.8 MB per client in fp32, and
with 1,000 clients most of the run's disk. ``float16`` stores the teacher's floating
tensors in half precision (6.4 MB) and loads them back into the fp32 model
(``load_state_dict`` casts). The student's error-feedback residual and replica stay
fp32: they are small, and the residual's small entries are what it exists to keep.

Round trip bound (IEEE 754 binary16, round to nearest): for a finite fp32 value x with
|x| <= 65504, ``|x - float(half(x))| <= max(|x| * 2**-11, 2**-25)`` (relative half an
ulp for normal numbers, half the subnormal spacing 2**-24 below 2**-14). A tensor with a
value beyond 65504 or a non-finite value is kept in fp32 (never turned into inf).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

STATE_DTYPES = ("float32", "float16")
FP16_MAX = 65504.0  # largest finite binary16 value


def fits_float16(tensor: Tensor) -> bool:
    """True if `tensor` is floating, finite and every |value| <= 65504."""
    if not tensor.is_floating_point():
        return False
    if tensor.numel() == 0:
        return True
    return bool(torch.isfinite(tensor).all()) and float(tensor.abs().max()) <= FP16_MAX


def to_storage(state: Mapping[str, Tensor], dtype: str) -> dict[str, Tensor]:
    """A detached CPU copy of a model state for ``client-state/``, in `dtype`.

    Args:
        state: a ``state_dict`` (name -> tensor, any shapes).
        dtype: "float32" (floating tensors as they are) or "float16" (floating tensors
            that :func:`fits_float16` stored in half precision; integer buffers such as
            BatchNorm's ``num_batches_tracked`` and out-of-range tensors unchanged).

    Returns:
        Name -> CPU tensor, same names and shapes as `state`.

    Raises:
        ValueError: if `dtype` is not one of ``STATE_DTYPES``.
    """
    if dtype not in STATE_DTYPES:
        raise ValueError(
            f"client-state-dtype must be one of {', '.join(STATE_DTYPES)}, got {dtype!r}"
        )
    out = {}
    for name, tensor in state.items():
        value = tensor.detach().cpu()
        if dtype == "float16" and value.dtype == torch.float32 and fits_float16(value):
            value = value.to(torch.float16)
        out[name] = value
    return out
