"""Consensus soft labels from the clients' logits on the shared proxy set.

Every mode reduces to :func:`weighted_consensus`: a per-client, per-sample convex
combination of the clients' tempered softmax outputs. The modes differ only in the
weights: uniform (``mean``), the client's confidence (``confidence``, ``entropy``), the
client's locally computed domain affinity (``domain``), or membership of the largest
cluster of client outputs (``cluster-mean``, the seed document's method). KD3A's modes
(:mod:`feddistill.distill.kd3a`) and the class-coverage vote for label skew
(:mod:`feddistill.distill.coverage`) are dispatched from :func:`consensus` too.
"""

from __future__ import annotations

import torch
from torch import Tensor

from feddistill.distill.coverage import COVERAGE_ERA_MODE, COVERAGE_MODES, coverage_consensus
from feddistill.distill.kd3a import KD3A_MODES, kd3a_consensus
from feddistill.distill.losses import soft_labels
from feddistill.distill.names import CONSENSUS_MODES

# ERA's sharpening temperature on the averaged probabilities (DS-FL uses 0.1)
ERA_TEMPERATURE = 0.1

# Lloyd iterations of the per-sample k-means in `cluster-mean` (fixed: deterministic cost).
_KMEANS_ITERS = 10


def _check_logits(logits: Tensor) -> None:
    if logits.dim() != 3:
        raise ValueError(
            f"logits must have shape (N clients, B samples, K classes), got {tuple(logits.shape)}"
        )
    n, b, k = logits.shape
    if n == 0:
        raise ValueError("logits has N == 0 clients; need at least one client's logits")
    if b == 0 or k == 0:
        raise ValueError(
            f"logits needs B >= 1 samples and K >= 1 classes, got {tuple(logits.shape)}"
        )
    if not torch.isfinite(logits).all():
        raise ValueError("logits contain NaN or inf; drop or repair the offending client upload")


def _check_weights(weights: Tensor, shape: tuple[int, int], name: str) -> None:
    if tuple(weights.shape) != shape:
        raise ValueError(f"{name} must have shape (N, B) = {shape}, got {tuple(weights.shape)}")
    if not torch.isfinite(weights).all():
        raise ValueError(f"{name} contain NaN or inf")
    if (weights < 0).any():
        raise ValueError(f"{name} must be non-negative, min is {weights.min().item():.4g}")
    zero = (weights.sum(dim=0) <= 0).nonzero().flatten()
    if zero.numel() > 0:
        raise ValueError(
            f"{name} sum to 0 over clients for proxy sample(s) {zero[:10].tolist()}"
            f"{' ...' if zero.numel() > 10 else ''}; at least one client needs a positive weight"
        )


def weighted_consensus(logits: Tensor, weights: Tensor, temperature: float) -> Tensor:
    """Weighted average of the clients' tempered softmax outputs on the proxy set.

    ``out[b] = sum_n w[n, b] * softmax(logits[n, b] / T) / sum_n w[n, b]``.

    Args:
        logits: client logits on the proxy set, shape (N clients, B, K classes); finite.
        weights: per-client, per-sample weights, shape (N, B); non-negative, finite.
        temperature: softmax temperature T > 0.

    Returns:
        Soft labels, shape (B, K), float32; each row sums to 1.

    Raises:
        ValueError: if shapes disagree, N == 0, T <= 0, logits or weights are
            non-finite, weights are negative, or a column of weights sums to 0.

    References:
        FedDF, arXiv:2006.07242; Hinton et al., arXiv:1503.02531.
    """
    _check_logits(logits)
    n, b, _ = logits.shape
    weights = weights.to(logits.device, torch.float32)
    _check_weights(weights, (n, b), "weights")
    probs = soft_labels(logits, temperature)  # (N, B, K)
    w = weights / weights.sum(dim=0, keepdim=True)  # (N, B), columns sum to 1
    return torch.einsum("nb,nbk->bk", w, probs)  # (N, B, K) -> (B, K)


def _entropy_weights(logits: Tensor) -> Tensor:
    """exp(-H) of each client's untempered prediction, shape (N, B), in [1/K, 1]."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(log_p.exp() * log_p).sum(dim=-1)  # (N, B, K) -> (N, B)
    return torch.exp(-entropy)


def largest_cluster_mask(probs: Tensor, num_clusters: int) -> Tensor:
    """Members of the largest cluster of client outputs, per proxy sample.

    For every sample b, the N vectors ``probs[:, b]`` are grouped by a deterministic
    k-means with ``k = min(num_clusters, N)``, vectorised over samples:

    1. initialisation by farthest-first traversal: the first centre is the medoid
       (the client with the smallest summed Euclidean distance to the others), each
       next centre is the client farthest from the centres chosen so far;
    2. a fixed number of Lloyd iterations (assign to the nearest centre, recompute the
       centres as member means; an empty cluster keeps its centre);
    3. the largest cluster wins; ties go to the lowest cluster index, i.e. to the
       cluster seeded by the medoid first.

    All ties (equal distances) resolve to the lowest client / cluster index, so the
    result depends on the input only.

    Args:
        probs: client probabilities, shape (N, B, K).
        num_clusters: requested number of clusters, >= 1.

    Returns:
        Boolean mask, shape (N, B): True where client n is in sample b's largest
        cluster. Every column has at least one True.
    """
    n, b, _ = probs.shape
    k = min(num_clusters, n)
    x = probs.transpose(0, 1).double()  # (N, B, K) -> (B, N, K)
    if k == 1:
        return torch.ones(n, b, dtype=torch.bool, device=probs.device)
    dist = torch.cdist(x, x)  # (B, N, N)
    first = dist.sum(dim=2).argmin(dim=1)  # (B,) medoid
    centre_idx = [first]
    min_dist = dist.gather(1, first.view(b, 1, 1).expand(b, 1, n)).squeeze(1)  # (B, N)
    for _ in range(1, k):
        nxt = min_dist.argmax(dim=1)  # (B,)
        centre_idx.append(nxt)
        d_next = dist.gather(1, nxt.view(b, 1, 1).expand(b, 1, n)).squeeze(1)
        min_dist = torch.minimum(min_dist, d_next)
    idx = torch.stack(centre_idx, dim=1)  # (B, k)
    centres = x.gather(1, idx.unsqueeze(-1).expand(b, k, x.shape[2]))  # (B, k, K)
    assign = torch.cdist(x, centres).argmin(dim=2)  # (B, N)
    for _ in range(_KMEANS_ITERS):
        onehot = torch.nn.functional.one_hot(assign, k).double()  # (B, N, k)
        counts = onehot.sum(dim=1)  # (B, k)
        sums = torch.einsum("bnc,bnk->bck", onehot, x)  # (B, k, K)
        nonempty = counts > 0
        centres = torch.where(
            nonempty.unsqueeze(-1), sums / counts.clamp_min(1).unsqueeze(-1), centres
        )
        new_assign = torch.cdist(x, centres).argmin(dim=2)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
    counts = torch.nn.functional.one_hot(assign, k).sum(dim=1)  # (B, k)
    winner = counts.argmax(dim=1)  # (B,), first index on ties
    return (assign == winner.unsqueeze(1)).transpose(0, 1)  # (B, N) -> (N, B)


def consensus(
    logits: Tensor,
    mode: str,
    temperature: float,
    affinity: Tensor | None = None,
    num_clusters: int = 2,
    num_examples: Tensor | None = None,
    client_weights: Tensor | None = None,
    class_counts: Tensor | None = None,
    reference: Tensor | None = None,
) -> Tensor:
    """Consensus soft labels on the proxy set from N clients' logits.

    Every mode is deterministic: no seed, no randomness.

    Modes (all return ``weighted_consensus(logits, w, T)`` for some weights w):

    - ``mean``: w = 1; the average of the tempered softmax outputs (FedMD, FedDF).
    - ``confidence``: w[n, b] = max_k softmax(logits[n, b])_k at T = 1.
    - ``entropy``: w[n, b] = exp(-H(softmax(logits[n, b]))) at T = 1, in [1/K, 1];
      confident clients count more, a uniform prediction still counts (never 0).
    - ``domain``: w = ``affinity`` (N, B), e.g. each client's
      :func:`~feddistill.distill.domain_affinity` of the proxy samples.
    - ``cluster-mean`` (the seed document: "cluster the models' output vectors,
      average within each cluster"): per sample, the N tempered probability vectors
      are split into ``min(num_clusters, N)`` groups by the deterministic k-means of
      :func:`largest_cluster_mask`, and the result is the mean of the largest group
      (majority consensus; a minority of outlying clients is ignored).
    - ``era`` (DS-FL's entropy reduction aggregation): the ``mean`` consensus p,
      sharpened as ``softmax(p / 0.1)`` (:data:`ERA_TEMPERATURE`), which lowers the
      entropy of the averaged soft labels of non-IID clients.
    - ``knowledge-vote`` / ``consensus-focus``: KD3A's modes
      (:func:`~feddistill.distill.kd3a.kd3a_consensus`); a sample without a confident
      teacher is dropped: its row is all zeros.
    - ``coverage`` / ``coverage-era`` (label skew): teacher n votes on class k with its
      share of the federation's class-k examples, plus the ``reference`` (the global
      student) weighted by its confidence
      (:func:`~feddistill.distill.coverage.coverage_consensus`); ``coverage-era``
      sharpens that vote as ``era`` does. ``client_weights`` is a gate in [0, 1] here
      (0: the teacher has no vote).

    Args:
        logits: client logits on the proxy set, shape (N clients, B samples, K classes).
        mode: one of :data:`CONSENSUS_MODES`.
        temperature: softmax temperature T > 0 of the returned soft labels.
        affinity: per-client, per-sample domain affinity, shape (N, B), non-negative
            and finite; required for ``domain``, ignored otherwise.
        num_clusters: clusters per sample for ``cluster-mean``, >= 1.
        num_examples: clients' training samples, shape (N,), for ``consensus-focus``
            (None = equal); ignored otherwise.
        client_weights: optional per-client factor, shape (N,), positive and finite;
            each mode's weights are multiplied by it (e.g. Consensus Focus weights of
            :mod:`feddistill.distill.robust_consensus`).
        class_counts: clients' training examples per class, shape (N, K); required
            for ``coverage`` / ``coverage-era``, ignored otherwise.
        reference: the global student's logits on the proxy set, shape (B, K), or
            None; used by ``coverage`` / ``coverage-era`` only.

    Returns:
        Soft labels, shape (B, K), float32; each row sums to 1 (a row a KD3A mode
        dropped is all zeros).

    Raises:
        ValueError: if ``logits`` is not (N, B, K) with N, B, K >= 1 or is non-finite,
            T <= 0, the mode is unknown (the message lists the valid modes),
            ``affinity`` is missing for ``domain``, has the wrong shape, is negative
            or non-finite, or sums to 0 over clients for a sample, or
            ``num_clusters`` < 1, or ``client_weights`` is not (N,) positive and finite,
            or ``class_counts`` is missing for a coverage mode (and as
            :func:`~feddistill.distill.coverage.coverage_consensus` for those modes).

    References:
        FedMD, arXiv:1910.03581; FedDF, arXiv:2006.07242; Hinton et al.,
        arXiv:1503.02531; DS-FL (ERA), Itahara et al., arXiv:2008.06180; KD3A,
        arXiv:2011.09757; FedFTG, arXiv:2203.09249.
    """
    if mode not in CONSENSUS_MODES:
        raise ValueError(
            f"unknown consensus mode {mode!r}; valid modes: {', '.join(CONSENSUS_MODES)}"
        )
    _check_logits(logits)
    soft_labels(logits[:1, :1], temperature)  # validates T before any work
    n, b, _ = logits.shape
    if mode in KD3A_MODES:
        return kd3a_consensus(logits, mode, temperature, num_examples=num_examples)
    if mode in COVERAGE_MODES:
        if class_counts is None:
            raise ValueError(f"mode {mode!r} needs class_counts of shape (N, K); got None")
        vote = coverage_consensus(logits, class_counts, temperature, reference, client_weights)
        if mode == COVERAGE_ERA_MODE:
            return torch.softmax(vote / ERA_TEMPERATURE, dim=-1)
        return vote
    if mode in ("mean", "era"):
        weights = torch.ones(n, b, device=logits.device)
    elif mode == "confidence":
        weights = torch.softmax(logits.float(), dim=-1).amax(dim=-1)  # (N, B, K) -> (N, B)
    elif mode == "entropy":
        weights = _entropy_weights(logits)
    elif mode == "domain":
        if affinity is None:
            raise ValueError("mode 'domain' needs affinity of shape (N, B); got None")
        weights = torch.as_tensor(affinity).to(logits.device, torch.float32)
        _check_weights(weights, (n, b), "affinity")
    else:  # cluster-mean
        if num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
        weights = largest_cluster_mask(soft_labels(logits, temperature), num_clusters).float()
    if client_weights is not None:
        cw = torch.as_tensor(client_weights).to(logits.device, torch.float32)
        if tuple(cw.shape) != (n,) or not bool(torch.isfinite(cw).all()) or bool((cw <= 0).any()):
            raise ValueError(
                f"client_weights must be ({n},), positive and finite, got {cw.tolist()}"
            )
        weights = weights * cw.unsqueeze(1)  # (N, B) * (N, 1)
    mixed = weighted_consensus(logits, weights, temperature)
    if mode == "era":
        return torch.softmax(mixed / ERA_TEMPERATURE, dim=-1)
    return mixed


__all__ = ["CONSENSUS_MODES", "consensus", "largest_cluster_mask", "weighted_consensus"]
