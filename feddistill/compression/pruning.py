"""Model pruning: unstructured magnitude (torch.nn.utils.prune) and structural channels.

*What to cut* is the magnitude (L1 of a weight, L2 of a channel group); *how* is
masking made permanent (unstructured) or physical removal (Torch-Pruning); *when* is
up to the caller (e.g. once before export, or every round).

A channel-pruned model has different shapes from the dense one. It is saved as a
plain ``state_dict`` (loadable with ``weights_only=True``, no pickled code) and loaded
back by :func:`load_pruned`, which resizes a freshly built dense model of the same
architecture to the saved shapes before a strict ``load_state_dict``.

References:
    Han et al., Learning both weights and connections, arXiv:1506.02626.
    Fang et al., DepGraph: Towards Any Structural Pruning, arXiv:2301.12900.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.nn.utils import prune

from feddistill.compression.names import IMPORTANCES  # what ranks channels

PRUNABLE: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
SCOPES: tuple[str, ...] = ("global", "layer")


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every conv / linear layer whose ``weight`` gets pruned."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE)]


def _make_permanent(model: nn.Module) -> None:
    for _, module in model.named_modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)


def prune_unstructured(
    model: nn.Module,
    sparsity: float,
    scope: str = "global",
    min_density_per_layer: float = 0.01,
) -> nn.Module:
    """Zero the smallest-magnitude weights of every conv / linear layer, in place.

    ``scope="global"`` ranks ``|w|`` over all layers together (one threshold), so
    layers with small weights lose more; ``"layer"`` prunes each layer to ``sparsity``.
    Either way a layer keeps at least ``ceil(min_density_per_layer * numel)`` weights,
    so a global threshold cannot wipe out a whole layer; the achieved sparsity can then
    be below ``sparsity``. Biases and normalization parameters are not pruned. Masks
    are made permanent (``prune.remove``), so ``model.state_dict()`` has exactly the
    dense model's keys and zeros in place of pruned weights.

    Args:
        model: the network; modified in place (existing prune masks made permanent too).
        sparsity: fraction of weights set to zero, in [0, 1).
        scope: ``"global"`` or ``"layer"``.
        min_density_per_layer: fraction of each layer's weights kept at least, (0, 1].

    Returns:
        ``model`` itself.

    Raises:
        ValueError: if ``sparsity``, ``scope`` or ``min_density_per_layer`` is out of
            range (named with the allowed values).

    References:
        Han et al., arXiv:1506.02626.
    """
    if isinstance(sparsity, bool) or not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {set(SCOPES)}, got {scope!r}")
    if not 0.0 < float(min_density_per_layer) <= 1.0:
        raise ValueError(f"min_density_per_layer must be in (0, 1], got {min_density_per_layer!r}")
    _make_permanent(model)
    layers = prunable_layers(model)
    if not layers or sparsity == 0.0:
        return model
    weights: list[Tensor] = [m.weight for _, m in layers]  # type: ignore[misc]
    sizes = [w.numel() for w in weights]
    if scope == "layer":
        amounts = [round(sparsity * n) for n in sizes]
    else:
        scores = torch.cat([w.detach().abs().reshape(-1) for w in weights])
        layer_of = torch.repeat_interleave(torch.arange(len(layers)), torch.tensor(sizes))
        lowest = torch.argsort(scores, stable=True)[: round(sparsity * scores.numel())]
        amounts = torch.bincount(layer_of[lowest], minlength=len(layers)).tolist()
    for (_, module), n, amount in zip(layers, sizes, amounts, strict=True):
        floor = math.ceil(min_density_per_layer * n)
        amount = min(int(amount), n - floor)
        if amount > 0:
            prune.l1_unstructured(module, "weight", amount=amount)
            prune.remove(module, "weight")
    return model


def _classifier(model: nn.Module) -> nn.Module:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("prune_channels needs a final nn.Linear classifier to keep")
    return linears[-1]


def prune_channels(
    model: nn.Module,
    example_inputs: Tensor,
    pruning_ratio: float,
    norm: int = 2,
    importance: str = "magnitude",
    gradient_fn: Callable[[nn.Module], None] | None = None,
) -> nn.Module:
    """Remove a fraction of channels / hidden units, physically, in place.

    *What to cut*: ``importance="magnitude"`` ranks channels by their L1 / L2 filter
    norm (Li et al.); ``"taylor"`` by the first-order Taylor estimate of the loss change
    when a channel is removed, ``sum |w * dL/dw|`` over the channel's weights in every
    coupled layer (Torch-Pruning's ``TaylorImportance``: summed per layer, averaged over
    the coupled layers of the group). The gradient comes from ``gradient_fn``, which
    must accumulate ``dL/dw`` into the parameters' ``.grad`` (e.g. a KD loss on the
    proxy set and ``loss.backward()``); gradients are zeroed before and after.
    *How*: dependent layers (the next conv's input channels, the flattened linear's
    inputs, batch norms) shrink with them, found by Torch-Pruning's dependency graph;
    the last ``nn.Linear`` (the classifier) keeps its outputs. Parameters and MACs
    really drop. Save with :func:`save_pruned`, load with :func:`load_pruned`.

    Args:
        model: the network, in eval mode or not; modified in place.
        example_inputs: one batch, shape (B, C, H, W), to trace the graph.
        pruning_ratio: fraction of channels removed from each prunable layer, [0, 1).
        norm: 1 or 2, the filter norm of ``importance="magnitude"``.
        importance: one of :data:`IMPORTANCES`.
        gradient_fn: with ``"taylor"``, called once with ``model`` to fill ``.grad``.

    Returns:
        ``model`` itself, with fewer channels.

    Raises:
        ValueError: if ``pruning_ratio`` is outside [0, 1), ``norm`` is not 1 or 2,
            ``importance`` is unknown, ``"taylor"`` comes without ``gradient_fn``, or
            there is no classifier.

    References:
        DepGraph, Fang et al., arXiv:2301.12900.
        Li et al., Pruning Filters for Efficient ConvNets, arXiv:1608.08710.
        Molchanov et al., Importance Estimation for Neural Network Pruning,
        arXiv:1906.10771.
    """
    if isinstance(pruning_ratio, bool) or not 0.0 <= float(pruning_ratio) < 1.0:
        raise ValueError(f"pruning_ratio must be in [0, 1), got {pruning_ratio!r}")
    if norm not in (1, 2):
        raise ValueError(f"norm must be 1 or 2, got {norm!r}")
    if importance not in IMPORTANCES:
        raise ValueError(f"importance must be one of {', '.join(IMPORTANCES)}, got {importance!r}")
    if importance == "taylor" and gradient_fn is None:
        raise ValueError("importance='taylor' needs a gradient_fn that fills the gradients")
    classifier = _classifier(model)
    if pruning_ratio == 0.0:
        return model
    scorer: tp.importance.Importance = tp.importance.MagnitudeImportance(p=norm)
    if importance == "taylor":
        assert gradient_fn is not None
        scorer = tp.importance.TaylorImportance()
        model.zero_grad(set_to_none=False)
        gradient_fn(model)
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs,
        importance=scorer,
        pruning_ratio=float(pruning_ratio),
        ignored_layers=[classifier],
    )
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model


_SIZE_ATTRS: dict[type[nn.Module], tuple[tuple[str, str, int], ...]] = {
    # module type -> (attribute, parameter, dimension of that parameter)
    nn.Linear: (("out_features", "weight", 0), ("in_features", "weight", 1)),
    nn.Conv1d: (("out_channels", "weight", 0),),
    nn.Conv2d: (("out_channels", "weight", 0),),
    nn.Conv3d: (("out_channels", "weight", 0),),
    nn.BatchNorm1d: (("num_features", "weight", 0),),
    nn.BatchNorm2d: (("num_features", "weight", 0),),
    nn.BatchNorm3d: (("num_features", "weight", 0),),
}


def save_pruned(model: nn.Module, path: str | Path) -> None:
    """Save a (channel-)pruned model's ``state_dict`` with ``torch.save``.

    Shapes are recorded by the tensors themselves; :func:`load_pruned` restores them.
    """
    torch.save(model.state_dict(), Path(path))


def load_pruned(dense_model: nn.Module, path: str | Path) -> nn.Module:
    """Load :func:`save_pruned` output into a fresh dense model of the same architecture.

    Every conv / linear / batch-norm whose saved weight is smaller is resized first
    (its parameters and buffers replaced by empty tensors of the saved shapes and its
    size attributes updated), then ``load_state_dict(strict=True)`` fills them.

    Args:
        dense_model: freshly built model of the architecture that was pruned; modified.
        path: file written by :func:`save_pruned`.

    Returns:
        ``dense_model``, now with the pruned shapes and weights.

    Raises:
        RuntimeError: if the state_dict does not fit the architecture (strict load).
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    resize_to_state(dense_model, state)
    dense_model.load_state_dict(state, strict=True)
    return dense_model


def resize_to_state(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """Give ``model``'s layers the shapes of ``state`` (a channel-pruned state_dict), in place.

    Every conv / linear / batch-norm whose tensor in ``state`` has another shape gets
    empty tensors of that shape and updated size attributes; the values are left to a
    following ``load_state_dict``. Keys missing from ``state`` are left alone.

    Returns:
        ``model`` itself.
    """
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        for local, tensor in list(module.named_parameters(recurse=False)) + list(
            module.named_buffers(recurse=False)
        ):
            saved = state.get(prefix + local)
            if saved is not None and saved.shape != tensor.shape:
                new = torch.empty_like(saved, dtype=tensor.dtype)
                if isinstance(tensor, nn.Parameter):
                    setattr(module, local, nn.Parameter(new, requires_grad=tensor.requires_grad))
                else:
                    setattr(module, local, new)
        for attr, param, dim in _SIZE_ATTRS.get(type(module), ()):
            if getattr(module, param, None) is not None:  # affine=False batch norm: no weight
                setattr(module, attr, getattr(module, param).shape[dim])
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            module.in_channels = module.weight.shape[1] * module.groups
    return model
