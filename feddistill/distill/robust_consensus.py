"""Consensus weights that no client can buy and a minority of wrong teachers cannot steer.

Three independent steps, each usable alone:

1. :func:`normalise_affinity`: each client's claimed affinities are divided by their
   own mean over the proxy set, so every client has the same total weight to spend;
   claiming the maximum everywhere buys nothing over an honest, peaked claim.
2. :func:`cap_share`: per proxy sample, no client holds more than ``max_share`` of the
   weight (the excess goes to the other clients in proportion to their weight).
3. :func:`agreement_gate`: one weight per client from how often its teacher agrees
   with a trusted reference (the new global student) on the samples it claims; a
   teacher with shifted or random outputs agrees rarely and loses its weight.

Why not KD3A's Consensus Focus among the teachers themselves: on cross-domain (KMeans)
clients each teacher is wrong outside its own domain, so honest teachers agree with
each other on few samples (3-15% on MNIST-5k), and a sharp, confident wrong teacher
wins the per-sample vote where the honest ones disagree; measured, it cut the honest
domain consensus from 0.895 to 0.763 proxy accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from feddistill.distill.consensus import consensus


@dataclass(frozen=True)
class RobustConsensus:
    """The soft labels and what the robust weighting did.

    Attributes:
        soft_labels: (B, K), each row sums to 1.
        client_weights: (N,) agreement gate per client, in [0, 1] (ones without a
            reference).
        agreement: (N,) each client's agreement rate with the reference (NaN without).
        capped_share: (N,) fraction of proxy samples on which the client's share was
            cut to ``max_share``.
    """

    soft_labels: Tensor
    client_weights: Tensor
    agreement: Tensor
    capped_share: Tensor


def normalise_affinity(affinity: Tensor) -> Tensor:
    """Divide each client's affinities by their mean over the proxy set.

    Args:
        affinity: claimed per-client, per-sample affinities, shape (N, B);
            non-negative and finite.

    Returns:
        (N, B) float32; each row has mean 1 (a row of zeros becomes all ones).

    Raises:
        ValueError: if `affinity` is not 2-D, is non-finite or negative.
    """
    if affinity.dim() != 2:
        raise ValueError(f"affinity must have shape (N, B), got {tuple(affinity.shape)}")
    a = affinity.double()
    if not bool(torch.isfinite(a).all()) or bool((a < 0).any()):
        raise ValueError("affinity must be finite and non-negative")
    mean = a.mean(dim=1, keepdim=True)  # (N, 1)
    out = torch.where(mean > 0, a / mean.clamp_min(1e-300), torch.ones_like(a))
    return out.float()


def cap_share(weights: Tensor, max_share: float) -> tuple[Tensor, Tensor]:
    """Limit every client's share of each sample's weight to `max_share`.

    Water-filling per column: clients above ``max_share * column_sum`` are set to the
    cap and the excess is handed to the others in proportion to their weight, until
    no client is above the cap (at most N passes). A column whose other clients all
    have weight 0 keeps its single client (there is nobody to hand weight to).
    With ``max_share >= 1`` nothing changes; below ``1/N`` it acts as ``1/N``.

    Args:
        weights: (N, B), non-negative, every column with a positive sum.
        max_share: the largest share of one client per sample, in (0, 1].

    Returns:
        (capped weights (N, B) with the column sums of `weights`, mask (N, B) of the
        entries that were cut).

    Raises:
        ValueError: if `max_share` is outside (0, 1].
    """
    if not 0.0 < max_share <= 1.0:
        raise ValueError(f"max-client-share must be in (0, 1], got {max_share!r}")
    w = weights.double()
    n = w.shape[0]
    share = max(max_share, 1.0 / n)
    total = w.sum(dim=0, keepdim=True)  # (1, B)
    cut = torch.zeros_like(w, dtype=torch.bool)
    for _ in range(n):
        over = (w > share * total * (1 + 1e-9)) & (total > 0)
        if not bool(over.any()):
            break
        cut |= over
        capped = torch.where(cut, share * total, w)
        excess = total - capped.sum(dim=0, keepdim=True)  # (1, B)
        free = torch.where(cut, torch.zeros_like(w), capped)
        free_sum = free.sum(dim=0, keepdim=True)
        w = torch.where(cut, capped, capped + excess * free / free_sum.clamp_min(1e-300))
        w = torch.where(free_sum > 0, w, weights.double())  # nobody to give to: keep
    return w.float(), cut


def agreement_gate(
    logits: Tensor, weights: Tensor, reference: Tensor, tolerance: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Down-weight teachers that disagree with a trusted reference where they claim weight.

    Client n's agreement is the weight-averaged rate at which its argmax matches the
    reference's argmax: ``a_n = sum_b w[n,b] [argmax p_nb = argmax r_b] / sum_b w[n,b]``,
    so an honest domain expert is judged on the samples it claims. The reference is
    the new global student (robustly aggregated: one client moves it by at most its
    clipped share), which the logits of a teacher do not reach in this round;
    the gate is ``g_n = clip((a_n / median_m a_m - t / 2) / (t / 2), 0, 1)`` with
    ``t = tolerance``: clients agreeing at least ``t`` times as often as the typical
    (median) client keep full weight, those at ``t / 2`` or less get none, linear in
    between.

    Args:
        logits: client logits, shape (N, B, K).
        weights: per-client, per-sample weights, shape (N, B), non-negative.
        reference: reference logits on the same proxy samples, shape (B, K).
        tolerance: in (0, 1]; the agreement, relative to the median, below which a
            client is down-weighted (to 0 at half of it).

    Returns:
        (gates (N,) in [0, 1], agreement rates (N,) in [0, 1]), float32.

    Raises:
        ValueError: if the shapes disagree or `tolerance` is outside (0, 1].

    References:
        Agreement with a consensus as a trust signal: KD3A, arXiv:2011.09757.
    """
    if logits.dim() != 3 or tuple(reference.shape) != tuple(logits.shape[1:]):
        raise ValueError(
            f"reference must have shape (B, K) = {tuple(logits.shape[1:])}, "
            f"got {tuple(reference.shape)}"
        )
    if tuple(weights.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"weights must have shape (N, B) = {tuple(logits.shape[:2])}, "
            f"got {tuple(weights.shape)}"
        )
    if not 0.0 < tolerance <= 1.0:
        raise ValueError(f"agreement tolerance must be in (0, 1], got {tolerance!r}")
    agree = (logits.argmax(dim=-1) == reference.argmax(dim=-1).unsqueeze(0)).double()  # (N, B)
    w = weights.double()
    rate = (w * agree).sum(dim=1) / w.sum(dim=1).clamp_min(1e-300)  # (N,)
    typical = float(rate.median())
    if typical <= 0:
        return torch.ones(rate.shape[0]), rate.float()
    ratio = rate / typical
    gate = ((ratio - tolerance / 2) / (tolerance / 2)).clamp(0.0, 1.0)
    return gate.float(), rate.float()


def robust_consensus(
    logits: Tensor,
    mode: str,
    temperature: float,
    affinity: Tensor | None = None,
    reference: Tensor | None = None,
    max_share: float = 1.0,
    tolerance: float = 0.5,
) -> RobustConsensus:
    """:func:`~feddistill.distill.consensus.consensus` with bounded client weights.

    For ``domain``, the claimed `affinity` is first normalised per client
    (:func:`normalise_affinity`); every mode's weights are then multiplied by each
    client's :func:`agreement_gate` (when a `reference` is given), the weight the
    gated clients lose goes to the reference as one more teacher (so where no trusted
    teacher claims a sample the soft label is the reference's own prediction, and KD
    there pulls nowhere), and, for ``domain``, every share is capped per sample at
    `max_share` (:func:`cap_share`).

    Args:
        logits: (N, B, K) client logits on the proxy set.
        mode: a consensus mode (see :func:`~feddistill.distill.consensus.consensus`).
        temperature: softmax temperature T > 0 of the soft labels.
        affinity: (N, B) claimed affinities, required for ``domain``.
        reference: (B, K) logits of a trusted model on the proxy set, or None (no gate).
        max_share: largest share of one client per sample, in (0, 1].
        tolerance: see :func:`agreement_gate`.

    Returns:
        A :class:`RobustConsensus`.

    Raises:
        ValueError: as :func:`~feddistill.distill.consensus.consensus`,
            :func:`normalise_affinity`, :func:`cap_share` and :func:`agreement_gate`.

    References:
        KD3A, arXiv:2011.09757; FedDF, arXiv:2006.07242.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (N, B, K), got {tuple(logits.shape)}")
    n, b, _ = logits.shape
    use_domain = mode == "domain" and affinity is not None
    weights = normalise_affinity(affinity) if use_domain else torch.ones(n, b)  # type: ignore[arg-type]
    gate, rate = torch.ones(n), torch.full((n,), float("nan"))
    if reference is not None:
        gate, rate = agreement_gate(logits, weights, reference, tolerance)
    client = gate.clamp_min(1e-6).to(logits.device)  # a floor keeps every column positive
    if reference is not None and bool((gate < 1).any()):
        # the weight a gated teacher loses goes to the reference (the global student):
        # where no trusted teacher speaks, the consensus is the student's own belief
        lost = ((1 - gate).unsqueeze(1) * weights).sum(dim=0)  # (N, B) -> (B,)
        # where the trusted clients claim less than usual, a gated client's own domain
        # probably was: the reference also takes that deficit (scaled by the gate lost)
        trusted = (gate.unsqueeze(1) * weights).sum(dim=0)  # (B,)
        deficit = (trusted.mean() - trusted).clamp_min(0.0)
        lost = lost + deficit * (1 - gate).sum().clamp(max=1.0)
        logits = torch.cat([logits, reference.to(logits).unsqueeze(0)])  # (N + 1, B, K)
        # domain: the reference's per-sample weight is `lost`; other modes weigh
        # clients as a whole, so the reference gets the summed lost gate
        ref_factor = torch.ones(1) if use_domain else (1 - gate).sum().reshape(1)
        weights = torch.cat([weights, lost.unsqueeze(0)]) if use_domain else torch.ones(n + 1, b)
        client = torch.cat([client, ref_factor.to(client)])
    cut = torch.zeros(logits.shape[0], b, dtype=torch.bool)
    if use_domain:
        weights, cut = cap_share((weights * client.unsqueeze(1)).clamp_min(1e-12), max_share)
        soft = consensus(logits, "domain", temperature, affinity=weights)
    else:
        soft = consensus(logits, mode, temperature, client_weights=client)
    return RobustConsensus(soft, gate, rate, cut[:n].float().mean(dim=1))


__all__ = [
    "RobustConsensus",
    "cap_share",
    "agreement_gate",
    "normalise_affinity",
    "robust_consensus",
]
