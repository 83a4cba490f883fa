"""Server-side maths on decoded client updates: validation and FedAvg. No Flower here."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

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

    def norm_at_most(key: str, name: str, got: Tensor) -> None:
        if got.is_floating_point():
            norm = float(got.double().norm())
            if norm > max_norm:
                raise RejectedUpdate(f"{name} has L2 norm {norm:.3g} > max {max_norm:.3g}")

    _check_like(update, template, "update", lambda key: f"update[{key!r}]", norm_at_most)


def validate_buffers(buffers: Mapping[str, Tensor], template: Mapping[str, Tensor]) -> None:
    """Check a client's buffer values (BatchNorm statistics) against the global model's.

    Args:
        buffers: name -> value, as decoded from the client's buffers payload.
        template: the global model's buffers (names, shapes and dtypes expected).

    Raises:
        RejectedUpdate: on missing or unexpected names, a shape or dtype mismatch, a
            non-finite value, or a negative variance (a key ending in ``running_var``)
            or a negative ``num_batches_tracked``; the message names the key.
    """

    def not_negative(key: str, name: str, got: Tensor) -> None:
        if key.endswith(("running_var", "num_batches_tracked")) and bool((got < 0).any()):
            raise RejectedUpdate(
                f"{name} has a negative entry ({float(got.min()):.3g}); must be >= 0"
            )

    _check_like(buffers, template, "buffer", lambda key: f"buffer {key!r}", not_negative)


def _check_like(
    values: Mapping[str, Tensor],
    template: Mapping[str, Tensor],
    kind: str,
    label: Callable[[str], str],
    check: Callable[[str, str, Tensor], None],
) -> None:
    """Names, shapes, dtypes and finiteness of `values` against `template`, then `check`.

    Args:
        values: name -> tensor sent by a client.
        template: name -> tensor of the global model (what is expected).
        kind: what `values` are, for the key-set message ("update", "buffer").
        label: a key -> how messages name it.
        check: further test of one tensor (its key, label and value), in template order.

    Raises:
        RejectedUpdate: on the first fault found; the message names the key.
    """
    missing = sorted(set(template) - set(values))
    extra = sorted(set(values) - set(template))
    if missing or extra:
        raise RejectedUpdate(
            f"{kind} keys differ from the model: missing {missing}, unexpected {extra}"
        )
    for key, expected in template.items():
        got, name = values[key], label(key)
        if tuple(got.shape) != tuple(expected.shape):
            raise RejectedUpdate(
                f"{name} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
            )
        if got.is_floating_point() != expected.is_floating_point():
            raise RejectedUpdate(f"{name} has dtype {got.dtype}, expected {expected.dtype}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise RejectedUpdate(f"{name} contains NaN or Inf")
        check(key, name, got)


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
        ValueError: if `updates` is empty, a count is negative, all counts are 0, or
            an update's keys or shapes differ from the first one's (named).

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
    reference = updates[0][1]
    for i, (_, upd) in enumerate(updates[1:], start=1):
        missing, extra = sorted(set(reference) - set(upd)), sorted(set(upd) - set(reference))
        if missing or extra:
            raise ValueError(
                f"update {i} has other keys than update 0: missing {missing}, unexpected {extra}"
            )
        for key, first in reference.items():
            if tuple(upd[key].shape) != tuple(first.shape):
                raise ValueError(
                    f"update {i}[{key!r}] has shape {tuple(upd[key].shape)}, "
                    f"update 0 has {tuple(first.shape)}"
                )
    out: dict[str, Tensor] = {}
    for key, first in reference.items():
        acc = torch.zeros(first.shape, dtype=torch.float64)
        for n, upd in updates:
            acc += upd[key].to(torch.float64) * (n / total)
        out[key] = acc.float() if first.is_floating_point() else acc.round().to(first.dtype)
    return out


def apply_update(
    state: Mapping[str, Tensor],
    update: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The next global state: buffers take their (averaged) values, parameters add the update.

    Args:
        state: the global state_dict the update was computed against.
        update: averaged parameter deltas (floating) and, for older senders, integer
            values; keys of ``state`` not in ``buffers``.
        buffers: averaged buffer values (BatchNorm statistics); None for none.

    Returns:
        A new state_dict with the dtypes of ``state``; a key in neither ``update`` nor
        ``buffers`` keeps its value (``logits-only``: no client sends buffers).
    """
    buffers = buffers or {}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in buffers:
            out[key] = buffers[key].to(value.dtype)
        elif key not in update:
            out[key] = value.clone()
        elif value.is_floating_point():
            out[key] = value + update[key].to(value.dtype)
        else:
            out[key] = update[key].to(value.dtype)
    return out
