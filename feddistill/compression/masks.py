"""A server-owned global sparsity mask: schedule, global magnitude masks, bitmap codec.

The server grows one mask over the global student's conv / linear weights on a
gradual schedule (Zhu & Gupta); clients train the masked student and send only the
coordinates the mask keeps, so no index is spent on a pruned weight (both sides know
the mask). The mask travels down as a bitmap, one bit per maskable weight.

References:
    Zhu & Gupta, To prune, or not to prune, arXiv:1710.01878 (gradual schedule).
    PruneFL, Jiang et al., arXiv:1909.12326 (server-decided masks in FL).
    FedDST, Bibikar et al., arXiv:2112.09824 (sparse training in FL).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from feddistill.compression.pruning import prunable_layers

MASK_MAGIC = b"FDM1"
_HEADER = struct.Struct("<4sq")  # magic, mask version (the round it last changed)


def sparsity_at(server_round: int, target: float, start_round: int, end_round: int) -> float:
    """Scheduled sparsity of round ``server_round``: cubic ramp from 0 to ``target``.

    ``s_t = target * (1 - (1 - f)^3)`` with ``f = (t - start + 1) / (end - start + 1)``
    for ``start <= t <= end``; 0 before ``start``, ``target`` after ``end``. The first
    pruning step comes in ``start_round``, ``target`` is reached in ``end_round``.

    Args:
        server_round: the round, from 1.
        target: final sparsity, in [0, 1).
        start_round: first round with a mask, >= 1.
        end_round: round the target is reached, >= start_round.

    Returns:
        Fraction of maskable weights pruned, in [0, target].

    Raises:
        ValueError: if target is outside [0, 1) or the rounds are out of order.

    References:
        Zhu & Gupta, arXiv:1710.01878, eq. (1).
    """
    if not 0.0 <= float(target) < 1.0:
        raise ValueError(f"target-sparsity must be in [0, 1), got {target!r}")
    if start_round < 1 or end_round < start_round:
        raise ValueError(
            "need 1 <= sparsity-start-round <= sparsity-end-round, got "
            f"{start_round} and {end_round}"
        )
    if server_round < start_round:
        return 0.0
    if server_round >= end_round:
        return float(target)
    f = (server_round - start_round + 1) / (end_round - start_round + 1)
    return float(target) * (1.0 - (1.0 - f) ** 3)


def maskable_keys(model: nn.Module) -> list[str]:
    """State-dict keys of the conv / linear weights a mask covers, in model order."""
    return [f"{name}.weight" for name, _ in prunable_layers(model)]


def global_magnitude_mask(
    weights: Mapping[str, Tensor],
    sparsity: float,
    previous: Mapping[str, Tensor] | None = None,
    min_density_per_layer: float = 0.01,
) -> dict[str, Tensor]:
    """Keep-mask of the largest ``|w|`` over all tensors together, grown from ``previous``.

    Weights already pruned by ``previous`` stay pruned (the mask only grows); each
    tensor keeps at least ``ceil(min_density_per_layer * numel)`` weights, so the
    achieved sparsity can fall below ``sparsity``.

    Args:
        weights: key -> weight tensor (any shape).
        sparsity: fraction of all entries to prune, in [0, 1).
        previous: key -> bool keep-mask of the same shapes, or None.
        min_density_per_layer: per-tensor floor of kept entries, in (0, 1].

    Returns:
        key -> bool tensor, True = kept.

    Raises:
        ValueError: if ``sparsity`` is outside [0, 1).
    """
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    keys = list(weights)
    prev = {k: previous[k] for k in keys} if previous is not None else {}
    scores = []
    for k in keys:
        s = weights[k].detach().abs().float().reshape(-1)
        if k in prev:
            s = torch.where(prev[k].reshape(-1), s, torch.full_like(s, -1.0))
        scores.append(s)
    flat = torch.cat(scores)
    sizes = [s.numel() for s in scores]
    order = torch.argsort(flat, stable=True)
    pruned = torch.zeros(flat.numel(), dtype=torch.bool)
    pruned[order[: round(float(sparsity) * flat.numel())]] = True
    pruned |= flat < 0  # the previous mask's pruned entries stay pruned
    masks: dict[str, Tensor] = {}
    offset = 0
    for k, s, n in zip(keys, scores, sizes, strict=True):
        keep = ~pruned[offset : offset + n]
        floor = math.ceil(min_density_per_layer * n)
        if int(keep.sum()) < floor:  # restore the largest pruned ones (not previously pruned)
            candidates = torch.argsort(s, descending=True, stable=True)[:floor]
            keep[candidates[s[candidates] >= 0]] = True
        masks[k] = keep.reshape(weights[k].shape)
        offset += n
    return masks


def mask_sparsity(masks: Mapping[str, Tensor]) -> float:
    """Fraction of masked-out entries over all tensors (0.0 for no tensors)."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / total if total else 0.0


def encode_mask(masks: Mapping[str, Tensor], version: int) -> bytes:
    """Bitmap of the masks, in the mapping's key order, after an 12-byte header.

    Size: ``12 + ceil(total_entries / 8)`` bytes; the receiver knows keys and shapes.

    Args:
        masks: key -> bool tensor (True = kept).
        version: the round the mask last changed, >= 0.

    Returns:
        The payload.
    """
    bits = np.concatenate([m.reshape(-1).numpy().astype(bool) for m in masks.values()])
    return _HEADER.pack(MASK_MAGIC, int(version)) + np.packbits(bits).tobytes()


def decode_mask(
    blob: bytes, shapes: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, Tensor], int]:
    """Inverse of :func:`encode_mask` for the keys and shapes the receiver knows.

    Args:
        blob: the payload.
        shapes: key -> shape, in the encoder's key order.

    Returns:
        (key -> bool tensor, version).

    Raises:
        ValueError: if the magic or the length does not fit ``shapes`` (both named).
    """
    total = sum(math.prod(s) for s in shapes.values())
    expected = _HEADER.size + math.ceil(total / 8)
    if len(blob) != expected or blob[:4] != MASK_MAGIC:
        raise ValueError(
            f"mask payload of {len(blob)} bytes (magic {blob[:4]!r}) does not fit "
            f"{total} maskable weights: expected {expected} bytes with magic {MASK_MAGIC!r}"
        )
    _, version = _HEADER.unpack_from(blob)
    bits = np.unpackbits(np.frombuffer(blob, dtype=np.uint8, offset=_HEADER.size))[:total]
    masks: dict[str, Tensor] = {}
    offset = 0
    for k, shape in shapes.items():
        n = math.prod(shape)
        masks[k] = torch.from_numpy(bits[offset : offset + n].astype(bool)).reshape(shape)
        offset += n
    return masks, int(version)


def pack_unmasked(tensors: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Each masked tensor reduced to its kept entries (1-D, row-major); others as they are."""
    return {k: (v[masks[k]] if k in masks else v) for k, v in tensors.items()}


def unpack_unmasked(
    tensors: Mapping[str, Tensor], masks: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Inverse of :func:`pack_unmasked`: zeros at masked-out entries.

    Raises:
        ValueError: if a packed tensor's length is not its mask's kept count (named).
    """
    out: dict[str, Tensor] = {}
    for k, v in tensors.items():
        if k not in masks:
            out[k] = v
            continue
        m = masks[k]
        if v.shape != (int(m.sum()),):
            raise ValueError(
                f"packed {k!r} has shape {tuple(v.shape)}, its mask keeps {int(m.sum())} entries"
            )
        dense = torch.zeros(m.shape, dtype=v.dtype)
        dense[m] = v
        out[k] = dense
    return out


def packed_shapes(
    shapes: Mapping[str, tuple[int, ...]], masks: Mapping[str, Tensor]
) -> dict[str, tuple[int, ...]]:
    """Shapes of :func:`pack_unmasked`'s output."""
    return {k: ((int(masks[k].sum()),) if k in masks else s) for k, s in shapes.items()}


def apply_masks(state: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with masked-out entries set to exactly 0.0."""
    return {k: (v * masks[k] if k in masks else v) for k, v in state.items()}


def attach_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Reparametrize ``weight = weight_orig * mask`` (torch.nn.utils.prune), in place.

    Gradients of masked-out entries are zero and their effective weight stays 0;
    :func:`detach_masks` makes it permanent and restores the plain keys.
    """
    modules = dict(model.named_modules())
    for key, m in masks.items():
        prune.custom_from_mask(modules[key.removesuffix(".weight")], "weight", m)


def detach_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Undo :func:`attach_masks`: ``weight`` becomes a plain parameter with zeros."""
    modules = dict(model.named_modules())
    for key in masks:
        prune.remove(modules[key.removesuffix(".weight")], "weight")
