"""Server-side maths on decoded client updates: validation and FedAvg. No Flower here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


class RejectedUpdate(ValueError):
    """A client's update failed validation; the client counts as failed this round."""


def validate_update(
    update: Mapping[str, Tensor], template: Mapping[str, Tensor], max_norm: float = 1e4
) -> None:
    """Check a decoded update against the global model's state_dict.

    Args:
        update: name -> tensor, as decoded from the client's payload.
        template: the global state_dict (names, shapes and dtypes expected).
        max_norm: largest allowed L2 norm of any floating tensor of the update.

    Raises:
        RejectedUpdate: on missing or unexpected names, a shape or dtype mismatch, a
            non-finite value, or a norm above `max_norm` (the message names the key).
    """
    missing = sorted(set(template) - set(update))
    extra = sorted(set(update) - set(template))
    if missing or extra:
        raise RejectedUpdate(
            f"update keys differ from the model: missing {missing}, unexpected {extra}"
        )
    for key, expected in template.items():
        got = update[key]
        if tuple(got.shape) != tuple(expected.shape):
            raise RejectedUpdate(
                f"update[{key!r}] has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
            )
        if got.is_floating_point() != expected.is_floating_point():
            raise RejectedUpdate(
                f"update[{key!r}] has dtype {got.dtype}, expected {expected.dtype}"
            )
        if got.is_floating_point():
            if not bool(torch.isfinite(got).all()):
                raise RejectedUpdate(f"update[{key!r}] contains NaN or Inf")
            norm = float(got.double().norm())
            if norm > max_norm:
                raise RejectedUpdate(f"update[{key!r}] has L2 norm {norm:.3g} > max {max_norm:.3g}")


def fedavg(updates: Sequence[tuple[int, Mapping[str, Tensor]]]) -> dict[str, Tensor]:
    """Average updates weighted by their number of examples, in the order given.

    Sums run in float64 in the order of `updates` (callers sort by partition id), so
    the result does not depend on the order replies arrived in. Floating tensors come
    back as float32; integer and bool buffers are averaged, rounded and cast back to
    their own dtype.

    Args:
        updates: (num_examples, update) pairs; num_examples >= 0.

    Returns:
        The weighted mean update, same names as the inputs.

    Raises:
        ValueError: if `updates` is empty, a count is negative, or all counts are 0.

    References:
        McMahan et al., FedAvg, arXiv:1602.05629.
    """
    if not updates:
        raise ValueError("fedavg needs at least one update, got none")
    counts = [int(n) for n, _ in updates]
    if any(n < 0 for n in counts):
        raise ValueError(f"num-examples must be >= 0, got {counts}")
    total = sum(counts)
    if total == 0:
        raise ValueError(f"all {len(counts)} clients reported 0 examples; nothing to average")
    out: dict[str, Tensor] = {}
    for key, first in updates[0][1].items():
        acc = torch.zeros(first.shape, dtype=torch.float64)
        for n, upd in updates:
            acc += upd[key].to(torch.float64) * (n / total)
        out[key] = acc.float() if first.is_floating_point() else acc.round().to(first.dtype)
    return out


def apply_update(state: Mapping[str, Tensor], update: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """global + update for floating tensors; integer buffers take the averaged value."""
    return {
        key: (value + update[key].to(value.dtype))
        if value.is_floating_point()
        else update[key].to(value.dtype)
        for key, value in state.items()
    }
