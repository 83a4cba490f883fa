"""Plain PyTorch local work of one client: no Flower, no Ray.

Training loops for the teacher (cross-entropy on local labels) and the student
(cross-entropy + alpha * KD to the consensus on the proxy set), evaluation, and proxy
logits. Every loop is seeded by a ``torch.Generator`` so a round is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from feddistill.distill import kd_loss
from feddistill.timing import timed


@dataclass(frozen=True)
class KDTarget:
    """The distillation target of a student round.

    Attributes:
        proxy_x: proxy inputs, shape (B, C, H, W).
        soft_labels: consensus soft labels on the proxy set, shape (B, K), rows sum to 1.
        alpha: KD weight >= 0.
        temperature: softmax temperature T > 0.
    """

    proxy_x: Tensor
    soft_labels: Tensor
    alpha: float
    temperature: float


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when present else cpu; ``cuda`` without a GPU raises ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch.cuda.is_available() is False")
    return torch.device(name)


def train_supervised(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epochs: int,
    lr: float,
    momentum: float,
    batch_size: int,
    seed: int,
    device: torch.device,
    kd: KDTarget | None = None,
    steps: int = 0,
) -> dict[str, float]:
    """SGD on (x, y) with cross-entropy, plus alpha * KD on the proxy set if `kd` is given.

    Each step takes one labeled batch and, with `kd`, one proxy batch (cycling through
    the proxy set in a seeded order): ``loss = CE(f(x_b), y_b) + alpha * KD(f(p_b), q_b)``
    with KD as in :func:`feddistill.distill.kd_loss` (KL at T, batchmean, times T^2).

    Args:
        model: trained in place; left in eval mode.
        x: inputs, shape (n, C, H, W), float32.
        y: labels, shape (n,), int64.
        epochs: passes over (x, y); 0 trains nothing.
        lr: learning rate > 0.
        momentum: SGD momentum in [0, 1).
        batch_size: samples per step.
        seed: seeds the batch order.
        device: where to compute.
        kd: optional distillation target.
        steps: if > 0, exactly this many SGD steps (batches keep cycling through
            reshuffled epochs, the last one cut short) and `epochs` is ignored; the
            fixed-local-steps setting of FL papers (e.g. FedAvg's E and B replaced by
            a step count), so tiny partitions still make progress each round.

    Returns:
        Mean ``loss``, ``ce`` and ``kd`` over the last (possibly partial) epoch (0.0
        when not trained).

    Raises:
        ValueError: if x is empty or x and y lengths differ.
    """
    n = x.shape[0]
    if n == 0 or y.shape[0] != n:
        raise ValueError(
            f"need a non-empty dataset with matching labels, got x {n}, y {y.shape[0]}"
        )
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    gen = torch.Generator().manual_seed(seed)
    stats = {"loss": 0.0, "ce": 0.0, "kd": 0.0}
    proxy_order: Tensor | None = None
    proxy_pos = 0
    per_epoch = math.ceil(n / batch_size)
    left = steps if steps > 0 else epochs * per_epoch
    while left > 0:
        order = torch.randperm(n, generator=gen)
        sums = {"loss": 0.0, "ce": 0.0, "kd": 0.0}
        this_epoch = min(per_epoch, left)
        left -= this_epoch
        for step in range(this_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            ce = F.cross_entropy(model(xb), yb)
            loss = ce
            kd_value = torch.zeros((), device=device)
            if kd is not None and kd.alpha > 0:
                b = kd.proxy_x.shape[0]
                if proxy_order is None or proxy_pos >= b:
                    proxy_order, proxy_pos = torch.randperm(b, generator=gen), 0
                pidx = proxy_order[proxy_pos : proxy_pos + batch_size]
                proxy_pos += batch_size
                with timed("kd"):  # the KD term's forward pass; its backward is in the step
                    student_logits = model(kd.proxy_x[pidx].to(device))
                    kd_value = kd_loss(
                        student_logits, kd.soft_labels[pidx].to(device), kd.temperature
                    )
                loss = ce + kd.alpha * kd_value
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums["loss"] += float(loss.detach())
            sums["ce"] += float(ce.detach())
            sums["kd"] += float(kd_value.detach())
        stats = {k: v / this_epoch for k, v in sums.items()}
    model.eval()
    return stats


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: Tensor, device: torch.device, batch_size: int = 512
) -> Tensor:
    """Logits of `model` in eval mode on x (n, C, H, W) -> (n, K) float32 on the CPU."""
    model.to(device).eval()
    outs = [
        model(x[i : i + batch_size].to(device)).float().cpu()
        for i in range(0, x.shape[0], batch_size)
    ]
    return torch.cat(outs) if outs else torch.empty(0)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, device: torch.device, batch_size: int = 512
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in [0, 1] of `model` on (x, y).

    Raises:
        ValueError: if x is empty.
    """
    if x.shape[0] == 0:
        raise ValueError("cannot evaluate on an empty set")
    logits = predict_logits(model, x, device, batch_size)
    loss = float(F.cross_entropy(logits, y))
    acc = float((logits.argmax(dim=1) == y).float().mean())
    return loss, acc


def state_delta(local: dict[str, Tensor], global_: dict[str, Tensor]) -> dict[str, Tensor]:
    """The update ``local - global`` for floating tensors; integer buffers as local values.

    Integer and bool buffers (BatchNorm's ``num_batches_tracked``) have no meaningful
    difference: they travel as the client's value and are averaged server-side.
    """
    out: dict[str, Tensor] = {}
    for key, value in local.items():
        value = value.detach().cpu()
        out[key] = value - global_[key].to(value.dtype) if value.is_floating_point() else value
    return out


MIN_STEPS_PER_ROUND = 5  # fewer local SGD steps than this per round: the run warns


def few_steps_warning(
    partition_sizes: list[int], local_epochs: int, local_steps: int, batch_size: int
) -> str | None:
    """A warning if some client makes fewer than MIN_STEPS_PER_ROUND SGD steps a round.

    A client makes ``local_steps`` steps when that is > 0, else
    ``local_epochs * ceil(n / batch_size)`` for its n samples.

    Args:
        partition_sizes: samples per client partition.
        local_epochs: the local-epochs key.
        local_steps: the local-steps key (0 = epochs decide).
        batch_size: the batch-size key.

    Returns:
        The warning text, naming how many clients and the fewest steps, or None.
    """
    if local_steps > 0:
        steps = [local_steps] * len(partition_sizes)
    else:
        steps = [local_epochs * math.ceil(n / batch_size) for n in partition_sizes]
    few = [s for s in steps if s < MIN_STEPS_PER_ROUND]
    if not few:
        return None
    return (
        f"warning: {len(few)} of {len(steps)} clients make fewer than {MIN_STEPS_PER_ROUND} "
        f"SGD steps per round (fewest: {min(few)}; local-epochs={local_epochs}, "
        f"local-steps={local_steps}, batch-size={batch_size}); they learn little per round: "
        f"set local-steps (e.g. local-steps={4 * MIN_STEPS_PER_ROUND}) or a smaller batch-size"
    )
