"""Channel pruning of the global student between rounds (structured, Torch-Pruning).

At the start of round ``channel-pruning-round`` the server removes
``channel-pruning-ratio`` of every conv / hidden linear layer's output channels by L2
filter norm (the dependency graph shrinks the following layers and batch norms with
them; the classifier keeps its outputs). The new shapes travel in the global state
itself: a client rebuilds its student from ``student-model`` and resizes it to the
received shapes (:func:`feddistill.compression.pruning.resize_to_state`). The
strategy's template is replaced, so a reply shaped for the old architecture is
rejected by the decoder, naming the key and both shapes.

References:
    DepGraph, Fang et al., arXiv:2301.12900.
    Li et al., Pruning Filters for Efficient ConvNets, arXiv:1608.08710 (filter norms).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn

from feddistill.compression.pruning import prune_channels
from feddistill.config import RunConfig
from feddistill.server.strategy import FedDistill


def channel_pruning_due(cfg: RunConfig, server_round: int) -> bool:
    """True in the round whose start removes channels (never when the ratio is 0)."""
    return cfg.channel_pruning_ratio > 0.0 and server_round == cfg.channel_pruning_round


def prune_global_channels(
    student: nn.Module, example_inputs: Tensor, ratio: float, norm: int = 2
) -> int:
    """Remove ``ratio`` of the student's channels in place; return parameters removed.

    Args:
        student: the global student (train or eval mode).
        example_inputs: one batch (B, C, H, W) to trace the dependency graph.
        ratio: fraction of channels removed per prunable layer, in [0, 1).
        norm: 1 or 2, the filter norm that ranks channels.

    Returns:
        Number of parameters removed.

    Raises:
        ValueError: if ``ratio`` is outside [0, 1).
    """
    before = sum(p.numel() for p in student.parameters())
    was_training = student.training
    prune_channels(student.eval(), example_inputs, ratio, norm)
    student.train(was_training)
    return before - sum(p.numel() for p in student.parameters())


def retarget(strategy: FedDistill, state: dict[str, Tensor], buffer_keys: Iterable[str]) -> None:
    """Point the strategy's templates (names, shapes the replies must have) at ``state``."""
    buffers = frozenset(buffer_keys)
    strategy.template = state
    strategy.param_template = {k: v for k, v in state.items() if k not in buffers}
    strategy.buffer_template = {k: v for k, v in state.items() if k in buffers}
