"""Server-side distillation of a model to soft labels on the proxy set (FedDF)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from feddistill.distill.losses import kd_loss

OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")


def distill_on_proxy(
    model: nn.Module,
    proxy_x: Tensor,
    soft_labels: Tensor,
    temperature: float,
    epochs: int,
    lr: float = 0.01,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    seed: int = 0,
    optimizer: str = "adam",
) -> float:
    """Distill ``model`` to consensus soft labels on the proxy set, in place.

    Minimises :func:`~feddistill.distill.kd_loss` (KL at temperature T, batch-mean,
    times T^2) over ``epochs`` passes of shuffled mini-batches. Shuffling uses a
    private ``torch.Generator`` seeded with ``seed``; the global RNG (dropout etc.)
    is seeded with ``seed`` inside ``torch.random.fork_rng``, so the caller's RNG
    state is untouched and two calls with equal inputs give equal weights (on CPU).

    Side effects: ``model`` is moved to ``device``, its parameters are updated, and
    it is left in eval mode.

    Args:
        model: maps (b, C, H, W) to logits (b, K).
        proxy_x: proxy inputs, shape (B, C, H, W).
        soft_labels: targets, shape (B, K); each row sums to 1.
        temperature: softmax temperature T > 0.
        epochs: passes over the proxy set, >= 0; 0 only evaluates the loss.
        lr: learning rate > 0.
        batch_size: mini-batch size >= 1.
        device: where to train, e.g. ``"cpu"`` or ``"cuda:0"``.
        seed: seed of shuffling and of the global RNG during training.
        optimizer: ``"adam"`` (FedDF's choice) or ``"sgd"`` (momentum 0.9).

    Returns:
        Mean KD loss over the samples of the last epoch (with ``epochs == 0``, the
        loss of the model as given, in eval mode).

    Raises:
        ValueError: if the proxy set is empty, ``proxy_x`` and ``soft_labels`` have
            different B or ``soft_labels`` is not (B, K), ``epochs`` < 0, ``lr`` <= 0,
            ``batch_size`` < 1, T <= 0, or the optimizer is unknown.

    References:
        Lin et al., "Ensemble Distillation for Robust Model Fusion in Federated
        Learning" (FedDF), arXiv:2006.07242; Hinton et al., arXiv:1503.02531.
    """
    if proxy_x.dim() < 2 or proxy_x.shape[0] == 0:
        raise ValueError(f"proxy_x must be a non-empty batch (B, ...), got {tuple(proxy_x.shape)}")
    if soft_labels.dim() != 2 or soft_labels.shape[0] != proxy_x.shape[0]:
        raise ValueError(
            f"soft_labels must be (B, K) with B = {proxy_x.shape[0]} (proxy_x), "
            f"got {tuple(soft_labels.shape)}"
        )
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")

    dev = torch.device(device)
    model.to(dev)
    n = proxy_x.shape[0]
    cuda_devices = [dev.index or 0] if dev.type == "cuda" else []
    if epochs == 0:
        return _evaluate(model, proxy_x, soft_labels, temperature, batch_size, dev)

    params = [p for p in model.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    last = math.nan
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            total = 0.0
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                x = proxy_x[idx].to(dev)
                y = soft_labels[idx].to(dev)
                loss = kd_loss(model(x), y, temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * idx.numel()
            last = total / n
    model.eval()
    return last


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    proxy_x: Tensor,
    soft_labels: Tensor,
    temperature: float,
    batch_size: int,
    dev: torch.device,
) -> float:
    model.eval()
    total = 0.0
    for start in range(0, proxy_x.shape[0], batch_size):
        x = proxy_x[start : start + batch_size].to(dev)
        y = soft_labels[start : start + batch_size].to(dev)
        total += kd_loss(model(x), y, temperature).item() * x.shape[0]
    return total / proxy_x.shape[0]
