"""The server's FedDF step: distill the new global student to an ensemble on the proxy set.

The target is the round's consensus of teacher logits when the strategy builds one,
else (FedDF proper) the mean of the accepted clients' own students' soft labels.

References:
    FedDF, Lin et al., arXiv:2006.07242.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from feddistill.compression.pruning import resize_to_state
from feddistill.distill.consensus import consensus as build_consensus
from feddistill.distill.kd3a import kept_samples
from feddistill.learn import SGDSpec, predict_logits
from feddistill.models import build_model
from feddistill.server.aggregate import apply_update
from feddistill.server.remote import distill_on_gpu_node
from feddistill.server.strategy import ClientResult

# GPU fraction the server's distillation asks of a Ray cluster when this process has no
# GPU: small, so that it fits beside the client actors' fractions.
SERVER_DISTILL_NUM_GPUS = 0.1
# The server distills with learning-rate * this factor: it fine-tunes the averaged
# student towards the ensemble, a gentler step than a client's local training.
SERVER_DISTILL_LR_FACTOR = 0.1


def ensemble_soft_labels(
    student_model: str,
    in_shape: tuple[int, int, int],
    global_state: dict[str, Tensor],
    accepted: list[ClientResult],
    proxy_x: Tensor,
    num_classes: int,
    temperature: float,
    device: torch.device,
) -> Tensor:
    """Mean tempered softmax of the accepted clients' students on the proxy rows.

    Args:
        student_model: the student's registry name.
        in_shape: one input's shape, e.g. (C, H, W).
        global_state: the global student's state_dict the clients started from.
        accepted: the round's accepted replies (each with its update and buffers).
        proxy_x: the round's proxy inputs, shape (B, ...).
        num_classes: K.
        temperature: softmax temperature T > 0.
        device: where the clients' students run.

    Returns:
        Soft labels, shape (B, K).
    """
    client_model = build_model(student_model, in_shape, num_classes)
    resize_to_state(client_model, global_state)
    logits = []
    for result in accepted:
        client_model.load_state_dict(apply_update(global_state, result.update, result.buffers))
        logits.append(predict_logits(client_model, proxy_x, device))
    return build_consensus(torch.stack(logits), "mean", temperature)  # (N,B,K) -> (B,K)


def server_distill(
    student: nn.Module,
    proxy_x: Tensor,
    target: Tensor,
    temperature: float,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    device: torch.device,
    seed: int,
    deterministic: bool = True,
) -> float:
    """Distill `student` (in place) to `target` on `proxy_x`; on a GPU node if there is one.

    Args:
        student: the new global student, updated in place.
        proxy_x: the round's proxy inputs, shape (B, ...).
        target: soft labels, shape (B, K); all-zero rows (KD3A's unconfident samples)
            are left out.
        temperature: KD temperature T > 0.
        epochs: passes over the proxy rows (> 0).
        learning_rate: the clients' learning rate; the server uses
            ``learning_rate * SERVER_DISTILL_LR_FACTOR``.
        batch_size: proxy samples per step.
        device: where to train when it stays in this process.
        seed: seeds the batch order.
        deterministic: deterministic CUDA kernels on a GPU node (config key
            ``deterministic``).

    Returns:
        The mean KD loss of the last epoch (0.0 when no row is kept).
    """
    keep = kept_samples(target)  # (B,): KD3A modes drop unconfident samples (zero rows)
    if not bool(keep.any()):
        return 0.0
    return distill_on_gpu_node(
        student,
        proxy_x[keep],
        target[keep],
        num_gpus=SERVER_DISTILL_NUM_GPUS,
        deterministic=deterministic,
        temperature=temperature,
        sgd=SGDSpec(
            learning_rate * SERVER_DISTILL_LR_FACTOR,
            batch_size=batch_size,
            epochs=epochs,
            seed=seed,
            optimizer="adam",
        ),
        device=device,
    )
