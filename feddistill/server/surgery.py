"""Channel pruning of the global student between rounds (structured, Torch-Pruning).

At the start of round ``channel-pruning-round`` the server removes
``channel-pruning-ratio`` of every conv / hidden linear layer's output channels, ranked
by L1 / L2 filter norm or by first-order Taylor importance (``channel-pruning-importance``;
the server has no client labels, so the gradient is that of the KD loss of the global
student to the last consensus soft labels on the proxy set, the loss clients distill
with; see :func:`consensus_kd_gradients`) (the dependency graph shrinks the following layers and batch norms with
them; the classifier keeps its outputs). The new shapes travel in the global state
itself: a client rebuilds its student from ``student-model`` and resizes it to the
received shapes (:func:`feddistill.compression.pruning.resize_to_state`). The
strategy's template is replaced, so a reply shaped for the old architecture is
rejected by the decoder, naming the key and both shapes.

References:
    DepGraph, Fang et al., arXiv:2301.12900.
    Li et al., Pruning Filters for Efficient ConvNets, arXiv:1608.08710 (filter norms).
    Molchanov et al., Importance Estimation for Neural Network Pruning, arXiv:1906.10771.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from feddistill.compression.pruning import prune_channels
from feddistill.config import RunConfig
from feddistill.distill import kd_loss
from feddistill.distill.kd3a import kept_samples
from feddistill.distill.subset import proxy_subset, subset_rows
from feddistill.server.strategy import FedDistill


def channel_pruning_due(cfg: RunConfig, server_round: int) -> bool:
    """True in the round whose start removes channels (never when the ratio is 0)."""
    return cfg.channel_pruning_ratio > 0.0 and server_round == cfg.channel_pruning_round


def consensus_kd_gradients(
    proxy_x: Tensor, soft_labels: Tensor, temperature: float, batch_size: int = 256
) -> Callable[[nn.Module], None]:
    """The gradient source of Taylor importance on the server: KD to the consensus.

    The returned function accumulates into ``model``'s ``.grad`` the gradient of the
    mean KD loss (:func:`feddistill.distill.kd_loss`, KL at T times T^2) of ``model``
    to ``soft_labels`` over the proxy rows, in batches of ``batch_size`` (each batch's
    loss weighted by its share of rows, so the sum is the full-set mean). Rows a KD3A
    mode dropped (all-zero soft labels) are left out.

    Args:
        proxy_x: proxy inputs of the consensus rows, shape (B, C, H, W).
        soft_labels: the consensus on those rows, shape (B, K); rows sum to 1 or are 0.
        temperature: softmax temperature T > 0.
        batch_size: rows per forward / backward pass, >= 1.

    Returns:
        ``fill(model)``, to pass as ``gradient_fn`` to
        :func:`feddistill.compression.pruning.prune_channels`.

    Raises:
        ValueError: if ``proxy_x`` and ``soft_labels`` have different row counts or no
            row is kept.

    References:
        Molchanov et al., arXiv:1906.10771; Hinton et al., arXiv:1503.02531.
    """
    if proxy_x.shape[0] != soft_labels.shape[0]:
        raise ValueError(
            f"proxy_x has {proxy_x.shape[0]} rows but soft_labels has {soft_labels.shape[0]}"
        )
    keep = kept_samples(soft_labels)  # (B,)
    if not bool(keep.any()):
        raise ValueError("no consensus row is kept: Taylor importance has no gradient")
    inputs, targets = proxy_x[keep], soft_labels[keep]
    total = inputs.shape[0]

    def fill(model: nn.Module) -> None:
        device = next(model.parameters()).device
        for i in range(0, total, batch_size):
            xb, qb = inputs[i : i + batch_size].to(device), targets[i : i + batch_size]
            loss = kd_loss(model(xb), qb.to(device), temperature)
            (loss * (xb.shape[0] / total)).backward()

    return fill


def prune_global_channels(
    student: nn.Module,
    example_inputs: Tensor,
    ratio: float,
    norm: int = 2,
    gradient_fn: Callable[[nn.Module], None] | None = None,
) -> int:
    """Remove ``ratio`` of the student's channels in place; return parameters removed.

    Args:
        student: the global student (train or eval mode; ranked in eval mode).
        example_inputs: one batch (B, C, H, W) to trace the dependency graph.
        ratio: fraction of channels removed per prunable layer, in [0, 1).
        norm: 1 or 2, the filter norm that ranks channels without ``gradient_fn``.
        gradient_fn: if given, channels are ranked by first-order Taylor importance
            with the gradients it fills (e.g. :func:`consensus_kd_gradients`).

    Returns:
        Number of parameters removed.

    Raises:
        ValueError: if ``ratio`` is outside [0, 1).
    """
    before = sum(p.numel() for p in student.parameters())
    was_training = student.training
    importance = "magnitude" if gradient_fn is None else "taylor"
    with torch.enable_grad():
        prune_channels(student.eval(), example_inputs, ratio, norm, importance, gradient_fn)
    student.train(was_training)
    return before - sum(p.numel() for p in student.parameters())


def importance_gradients(
    cfg: RunConfig, proxy_x: Tensor, consensus: Tensor | None, server_round: int
) -> Callable[[nn.Module], None] | None:
    """``gradient_fn`` for the configured channel importance (None: filter norm).

    The consensus sent at the start of ``server_round`` was built in round
    ``server_round - 1`` on that round's proxy rows (``logits-subset``), recomputed
    here from the seed, so a resumed run ranks channels as an uninterrupted one does.

    Args:
        cfg: the run config (``channel-pruning-importance``, ``temperature``, ...).
        proxy_x: the whole proxy set, shape (P, C, H, W).
        consensus: last round's soft labels (B, K), or None.
        server_round: the round whose start prunes, >= 2 with a consensus.

    Returns:
        None for ``"magnitude"``, else :func:`consensus_kd_gradients` on those rows.

    Raises:
        RuntimeError: if Taylor importance is configured and there is no consensus
            (the config refuses such runs; this guards other callers).
    """
    if cfg.channel_pruning_importance != "taylor":
        return None
    if consensus is None:
        raise RuntimeError("channel-pruning-importance='taylor' needs last round's consensus")
    rows = proxy_subset(len(proxy_x), cfg.logits_subset, cfg.seed, max(1, server_round - 1))
    return consensus_kd_gradients(subset_rows(proxy_x, rows), consensus, cfg.temperature)


def retarget(strategy: FedDistill, state: dict[str, Tensor], buffer_keys: Iterable[str]) -> None:
    """Point the strategy's templates (names, shapes the replies must have) at ``state``."""
    buffers = frozenset(buffer_keys)
    strategy.template = state
    strategy.param_template = {k: v for k, v in state.items() if k not in buffers}
    strategy.buffer_template = {k: v for k, v in state.items() if k in buffers}
