"""Malicious-client behaviour for tests and the robustness benchmark (fault injection).

A client in ``attack-partitions`` does its honest round, then corrupts what it
uploads (plain PyTorch, no Flower). Update attacks replace the encoded student update
by a corrupted one re-encoded dense at 32 bits; knowledge attacks corrupt the teacher
logits and claim the largest possible domain affinity (log-affinity 0, affinity 1) for
every proxy sample.

- ``scaled-update``: the decoded update times 20.
- ``sign-flip``: the decoded update times -4.
- ``random-update``: Gaussian noise with 20 times the update's L2 norm (per tensor).
- ``shifted-logits``: logits rolled by one class (``roll(1)`` over K), times 3.
- ``random-logits``: Gaussian logits, standard deviation 4 T.
"""

from __future__ import annotations

import torch
from torch import Tensor

from feddistill.compression import CompressionSpec, compress_update, decode_tensors

UPDATE_ATTACKS = ("scaled-update", "sign-flip", "random-update")
LOGITS_ATTACKS = ("shifted-logits", "random-logits")
SCALE = 20.0  # scaled-update factor and random-update norm multiple
FLIP = -4.0  # sign-flip factor
SHIFT_SHARPEN = 3.0  # shifted-logits factor


def attack_update(payload: bytes, attack: str, generator: torch.Generator) -> bytes:
    """Corrupt an encoded student update; other attacks return it unchanged.

    Args:
        payload: the honest encoded update (:func:`compress_update`).
        attack: an attack name (see the module docstring).
        generator: random source of ``random-update``.

    Returns:
        The payload to send: dense fp32 for an update attack.
    """
    if attack not in UPDATE_ATTACKS:
        return payload
    update = decode_tensors(payload)
    bad: dict[str, Tensor] = {}
    for key, t in update.items():
        if not t.is_floating_point():
            bad[key] = t
        elif attack == "scaled-update":
            bad[key] = t * SCALE
        elif attack == "sign-flip":
            bad[key] = t * FLIP
        else:
            noise = torch.randn(t.shape, generator=generator)
            bad[key] = noise * (SCALE * float(t.norm()) / max(float(noise.norm()), 1e-12))
    dense = CompressionSpec(density=1.0, bit_width=32, error_feedback=False)
    return compress_update(bad, dense)[0]


def attack_logits(
    logits: Tensor,
    log_affinity: Tensor,
    attack: str,
    temperature: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Corrupt teacher logits and claim maximal affinity; other attacks change nothing.

    Args:
        logits: honest teacher logits on the proxy set, shape (B, K).
        log_affinity: honest log domain affinity, shape (B,), <= 0.
        attack: an attack name (see the module docstring).
        temperature: the run's softmax temperature T (scale of ``random-logits``).
        generator: random source of ``random-logits``.

    Returns:
        (logits (B, K), log_affinity (B,)) to upload.
    """
    if attack not in LOGITS_ATTACKS:
        return logits, log_affinity
    if attack == "shifted-logits":
        bad = logits.roll(1, dims=1) * SHIFT_SHARPEN  # class k's score goes to class k+1
    else:
        bad = torch.randn(logits.shape, generator=generator) * (4.0 * temperature)
    return bad, torch.zeros_like(log_affinity)  # affinity exp(0) = 1, the maximum
