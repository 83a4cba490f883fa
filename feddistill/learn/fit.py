"""The one training loop, and its two uses: supervised (+ KD) and distillation only.

:func:`fit` owns the epochs, the seeded batch order, the optimizer steps and the
statistics; a *step loss* says what one batch costs. :func:`train_supervised` (clients'
teachers and students, the centralized baseline) uses cross-entropy on labeled batches
plus alpha * KD on proxy batches; :func:`distill_on_proxy` (the server's FedDF step)
uses KD on proxy batches only. Every run is seeded by a private ``torch.Generator``,
so a round is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from feddistill.distill.losses import kd_loss
from feddistill.learn.evaluate import predict_logits
from feddistill.learn.specs import KDTarget, SGDSpec
from feddistill.timing import timed

# One batch: sample indices (b,) -> (loss to minimise, named scalar parts to report).
StepLoss = Callable[[Tensor], tuple[Tensor, dict[str, Tensor]]]
MIN_STEPS_PER_ROUND = 5  # fewer local SGD steps than this per round: the run warns


def fit(
    model: nn.Module,
    num_samples: int,
    sgd: SGDSpec,
    step_loss: StepLoss,
    generator: torch.Generator,
) -> list[tuple[int, dict[str, float]]]:
    """Train ``model`` in place: the training loop every caller shares.

    Each epoch draws ``torch.randperm(num_samples, generator=generator)`` and walks it
    in batches of ``sgd.batch_size``; each batch's loss is minimised with one step of
    ``sgd.make_optimizer``. With ``sgd.steps > 0`` exactly that many steps are taken
    (the last epoch cut short), else ``sgd.epochs * ceil(num_samples / batch_size)``.

    Args:
        model: trained in place (switched to train mode; the caller sets eval mode).
        num_samples: n, the size of the set the batches index, >= 1.
        sgd: optimizer, batch size and length.
        step_loss: batch indices (b,) -> (loss, parts); ``step_loss`` may draw from
            ``generator`` too (its draws then interleave with the batch order).
        generator: seeds the batch order.

    Returns:
        The last epoch's batches, each ``(batch samples, {name: value})`` with
        ``loss`` and the parts as floats; ``[]`` when nothing was trained.
    """
    model.train()
    opt = sgd.make_optimizer([p for p in model.parameters() if p.requires_grad])
    per_epoch = math.ceil(num_samples / sgd.batch_size)
    left = sgd.steps if sgd.steps > 0 else sgd.epochs * per_epoch
    last: list[tuple[int, dict[str, float]]] = []
    while left > 0:
        order = torch.randperm(num_samples, generator=generator)
        this_epoch = min(per_epoch, left)
        left -= this_epoch
        last = []
        for step in range(this_epoch):
            idx = order[step * sgd.batch_size : (step + 1) * sgd.batch_size]
            loss, parts = step_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            values = {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}}
            last.append((idx.numel(), values))
    return last


def train_supervised(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    sgd: SGDSpec,
    device: torch.device,
    kd: KDTarget | None = None,
) -> dict[str, float]:
    """Cross-entropy on (x, y), plus alpha * KD on the proxy set if ``kd`` is given.

    Each step takes one labeled batch and, with ``kd``, one proxy batch (cycling
    through the proxy set in a seeded order): ``loss = CE(f(x_b), y_b) + alpha *
    KD(f(p_b), q_b)`` with KD as in :func:`feddistill.distill.kd_loss` (KL at T,
    batchmean, times T^2).

    Args:
        model: trained in place; left in eval mode on ``device``.
        x: inputs, shape (n, C, H, W), float32.
        y: labels, shape (n,), int64.
        sgd: optimizer settings (:class:`SGDSpec`); ``sgd.seed`` seeds batch and
            proxy order.
        device: where to compute.
        kd: optional distillation target; alpha = 0 adds no KD term.

    Returns:
        Mean ``loss``, ``ce`` and ``kd`` over the steps of the last (possibly
        partial) epoch, and ``accuracy`` in [0, 1]: the share of that epoch's labeled
        samples the model classified correctly as it trained on them (train mode,
        weights changing between batches: the running train accuracy training logs
        show, at no extra forward pass); all 0.0 when not trained.

    Raises:
        ValueError: if x is empty or x and y lengths differ.
    """
    n = x.shape[0]
    if n == 0 or y.shape[0] != n:
        raise ValueError(
            f"need a non-empty dataset with matching labels, got x {n}, y {y.shape[0]}"
        )
    model.to(device)
    gen = torch.Generator().manual_seed(sgd.seed)
    proxy_order: list[Tensor] = []  # the current seeded order of the proxy set
    proxy_pos = [0]

    def step_loss(idx: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        labels = y[idx].to(device)
        logits = model(x[idx].to(device))
        ce = F.cross_entropy(logits, labels)
        correct = (logits.detach().argmax(dim=1) == labels).sum()  # for the train accuracy
        kd_value = torch.zeros((), device=device)
        if kd is None or kd.kd.alpha <= 0:
            return ce, {"ce": ce, "kd": kd_value, "correct": correct}
        b = kd.proxy_x.shape[0]
        if not proxy_order or proxy_pos[0] >= b:  # a fresh seeded order of the proxy set
            proxy_order[:] = [torch.randperm(b, generator=gen)]
            proxy_pos[0] = 0
        pidx = proxy_order[0][proxy_pos[0] : proxy_pos[0] + sgd.batch_size]
        proxy_pos[0] += sgd.batch_size
        with timed("kd"):  # the KD term's forward pass; its backward is in the step
            student_logits = model(kd.proxy_x[pidx].to(device))
            kd_value = kd_loss(student_logits, kd.soft_labels[pidx].to(device), kd.kd.temperature)
        return ce + kd.kd.alpha * kd_value, {"ce": ce, "kd": kd_value, "correct": correct}

    last = fit(model, n, sgd, step_loss, gen)
    model.eval()
    if not last:
        return {"loss": 0.0, "ce": 0.0, "kd": 0.0, "accuracy": 0.0}
    means = {k: sum(v[k] for _, v in last) / len(last) for k in ("loss", "ce", "kd")}
    trained_on = sum(size for size, _ in last)
    return {**means, "accuracy": sum(v["correct"] for _, v in last) / trained_on}


def distill_on_proxy(
    model: nn.Module,
    proxy_x: Tensor,
    soft_labels: Tensor,
    temperature: float,
    sgd: SGDSpec,
    device: str | torch.device = "cpu",
) -> float:
    """Distill ``model`` to consensus soft labels on the proxy set, in place.

    Minimises :func:`~feddistill.distill.kd_loss` (KL at temperature T, batch-mean,
    times T^2) over ``sgd.epochs`` passes of shuffled mini-batches with :func:`fit`.
    The global RNG (dropout etc.) is seeded with ``sgd.seed`` inside
    ``torch.random.fork_rng``, so the caller's RNG state is untouched and two calls
    with equal inputs give equal weights (on CPU).

    Side effects: ``model`` is moved to ``device``, its parameters are updated, and
    it is left in eval mode.

    Args:
        model: maps (b, C, H, W) to logits (b, K).
        proxy_x: proxy inputs, shape (B, C, H, W).
        soft_labels: targets, shape (B, K); each row sums to 1.
        temperature: softmax temperature T > 0.
        sgd: optimizer settings; ``epochs`` = 0 only evaluates the loss.
        device: where to train, e.g. ``"cpu"`` or ``"cuda:0"``.

    Returns:
        Mean KD loss over the samples of the last epoch (with 0 epochs, the loss of
        the model as given, in eval mode).

    Raises:
        ValueError: if the proxy set is empty, ``proxy_x`` and ``soft_labels`` have
            different B or ``soft_labels`` is not (B, K), or T <= 0.

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
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    dev = torch.device(device)
    model.to(dev)
    n = proxy_x.shape[0]
    if sgd.epochs == 0 and sgd.steps == 0:
        logits = predict_logits(model, proxy_x, dev)  # (B, K)
        return float(kd_loss(logits, soft_labels, temperature))

    def step_loss(idx: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return kd_loss(model(proxy_x[idx].to(dev)), soft_labels[idx].to(dev), temperature), {}

    cuda_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(sgd.seed)
        last = fit(model, n, sgd, step_loss, torch.Generator().manual_seed(sgd.seed))
    model.eval()
    return sum(size * v["loss"] for size, v in last) / sum(size for size, _ in last)


def steps_per_round(num_samples: int, epochs: int, steps: int, batch_size: int) -> int:
    """SGD steps one model makes per round on ``num_samples`` samples (as :func:`fit`).

    Args:
        num_samples: n, the client's samples.
        epochs: local epochs (used when ``steps`` is 0).
        steps: fixed steps per round; > 0 overrides ``epochs``.
        batch_size: samples per step.

    Returns:
        ``steps`` if > 0, else ``epochs * ceil(n / batch_size)``.
    """
    return steps if steps > 0 else epochs * math.ceil(num_samples / batch_size)


def few_steps_warning(
    partition_sizes: list[int],
    batch_size: int,
    *,
    local_epochs: int | None,
    local_steps: int = 0,
    teacher_epochs: int | None = None,
    teacher_local_steps: int = 0,
) -> str | None:
    """A warning if some client's student or teacher makes < MIN_STEPS_PER_ROUND steps a round.

    Each model makes :func:`steps_per_round` steps: the student with ``local-epochs`` /
    ``local-steps``, the teacher with ``teacher-epochs`` / ``teacher-local-steps``.

    Args:
        partition_sizes: samples per client partition.
        batch_size: the batch-size key.
        local_epochs: the local-epochs key; None when the strategy trains no student
            on the clients (logits-only).
        local_steps: the local-steps key (0 = epochs decide).
        teacher_epochs: the teacher-epochs key; None when the strategy trains no
            teachers (fedavg, feddf).
        teacher_local_steps: the teacher-local-steps key (0 = epochs decide).

    Returns:
        The warning text, naming how many clients, the fewest steps of each model
        below the limit and the keys that set them, or None.
    """
    roles = []  # (model, [steps per client], its keys and values)
    if local_epochs is not None:
        steps = [steps_per_round(n, local_epochs, local_steps, batch_size) for n in partition_sizes]
        roles.append(("student", steps, f"local-epochs={local_epochs}, local-steps={local_steps}"))
    if teacher_epochs is not None:
        steps = [
            steps_per_round(n, teacher_epochs, teacher_local_steps, batch_size)
            for n in partition_sizes
        ]
        keys = f"teacher-epochs={teacher_epochs}, teacher-local-steps={teacher_local_steps}"
        roles.append(("teacher", steps, keys))
    low = [(model, steps, keys) for model, steps, keys in roles if min(steps) < MIN_STEPS_PER_ROUND]
    if not low:
        return None
    few = sum(
        any(steps[i] < MIN_STEPS_PER_ROUND for _, steps, _ in low)
        for i in range(len(partition_sizes))
    )
    fewest = ", ".join(f"{min(steps)} {model} ({keys})" for model, steps, keys in low)
    fix = " and ".join(
        f"{'local-steps' if model == 'student' else 'teacher-local-steps'}="
        f"{4 * MIN_STEPS_PER_ROUND}"
        for model, _, _ in low
    )
    return (
        f"warning: {few} of {len(partition_sizes)} clients make fewer than "
        f"{MIN_STEPS_PER_ROUND} SGD steps per round (fewest: {fewest}; batch-size={batch_size}); "
        f"they learn little per round: set {fix}, or a smaller batch-size"
    )
