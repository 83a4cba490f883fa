"""KD3A's consensus knowledge: Knowledge Vote and Consensus Focus.

KD3A (Feng et al., "KD3A: Unsupervised Multi-Source Decentralized Domain Adaptation via
Knowledge Distillation", ICML 2021, arXiv:2011.09757) distills source-domain teachers
into a model for an unlabeled target domain. Here every client is one teacher; the
definitions follow the paper (Sec. 3.2-3.3), written out so they can be checked:

**Knowledge Vote** (per target / proxy sample b; ``p[n, b] = softmax(logits[n, b])`` at
T = 1):

1. confidence gate: teacher n is *confident* on b if ``max_k p[n, b, k] >= gate``
   (the paper uses 0.9);
2. every confident teacher votes for its argmax class; the *consensus class* ``c_b`` is
   the class with the most votes (ties: the larger summed confidence of its voters,
   then the lower class id);
3. the *supporters* are the confident teachers that voted ``c_b``; their number
   ``n_b`` is the consensus weight;
4. the consensus knowledge is the supporters' mean prediction; a sample with no
   confident teacher (``n_b = 0``) is dropped.

The paper's student loss weights a sample by ``n_b``; our KD loss weights kept samples
equally (the soft labels travel as rows that sum to 1), and a dropped sample is a row
of zeros, which clients and the server's distillation skip.

**Consensus quality and Consensus Focus**: for a set S of teachers,
``Q(S) = sum_b n_b(S) * qbar_b(S)[c_b(S)]`` (``qbar`` = supporters' mean at T = 1), i.e.
the summed confidence of all supporters of all consensus classes. Teacher n's
contribution is ``CF(n) = Q(all) - Q(all \\ {n})`` (leave-one-out; the authors' code
averages marginal contributions over all orders, a Shapley value, which costs 2^N
votes), and the domain weights are ``w_n = N_n * max(CF(n), 0) / sum_j N_j * max(CF(j),
0)`` with ``N_n`` the teacher's training samples (FedAvg's weights when every CF is
<= 0). Mode ``consensus-focus`` is Knowledge Vote whose supporters are averaged with
these weights: a teacher that adds nothing to the consensus (e.g. a domain far from the
target, or a corrupted client) gets no say.
"""

from __future__ import annotations

from itertools import starmap

import torch
from torch import Tensor

from feddistill.distill.losses import soft_labels
from feddistill.distill.names import KD3A_MODES

CONFIDENCE_GATE = 0.9  # KD3A's gate on the teacher's max probability


def _check(logits: Tensor, gate: float) -> None:
    if logits.dim() != 3 or min(logits.shape) < 1:
        raise ValueError(
            f"logits must have shape (N clients, B samples, K classes) with N, B, K >= 1, "
            f"got {tuple(logits.shape)}"
        )
    if not torch.isfinite(logits).all():
        raise ValueError("logits contain NaN or inf; drop or repair the offending client upload")
    if not 0.0 <= gate < 1.0:
        raise ValueError(f"confidence gate must be in [0, 1), got {gate!r}")


def vote(logits: Tensor, gate: float = CONFIDENCE_GATE) -> tuple[Tensor, Tensor]:
    """Knowledge Vote's supporters of each sample's consensus class.

    Args:
        logits: client logits on the proxy set, shape (N, B, K); finite.
        gate: confidence gate in [0, 1).

    Returns:
        ``(supporters, consensus_class)``: bool mask of shape (N, B) (teacher n supports
        sample b's consensus) and int64 classes of shape (B,). A sample without a
        confident teacher has no supporter.

    Raises:
        ValueError: if `logits` is not (N, B, K) with N, B, K >= 1, or is non-finite,
            or `gate` is outside [0, 1).
    """
    _check(logits, gate)
    n, _, k = logits.shape
    probs = torch.softmax(logits.double(), dim=-1)  # (N, B, K)
    conf, cls = probs.max(dim=-1)  # (N, B) each
    confident = conf >= gate
    onehot = torch.nn.functional.one_hot(cls, k).double() * confident.unsqueeze(-1)  # (N, B, K)
    votes = onehot.sum(dim=0)  # (N, B, K) -> (B, K)
    conf_sum = (onehot * conf.unsqueeze(-1)).sum(dim=0)  # (B, K), < N + 1
    consensus_class = (votes * (n + 1) + conf_sum).argmax(dim=1)  # votes first, then confidence
    supporters = confident & (cls == consensus_class.unsqueeze(0))  # (N, B)
    return supporters, consensus_class


def consensus_quality(logits: Tensor, gate: float = CONFIDENCE_GATE) -> float:
    """``Q(S)`` of the teachers in `logits`: summed confidence of all supporters.

    Args:
        logits: logits of the teachers in S, shape (|S|, B, K); |S| = 0 gives 0.
        gate: confidence gate in [0, 1).

    Returns:
        ``sum_b sum_{n supports b} p[n, b, c_b]`` (a float >= 0).

    Raises:
        ValueError: see :func:`vote` (for |S| >= 1).
    """
    if logits.shape[0] == 0:
        return 0.0
    supporters, cls = vote(logits, gate)
    probs = torch.softmax(logits.double(), dim=-1)
    at_class = probs.gather(2, cls.view(1, -1, 1).expand(probs.shape[0], -1, 1)).squeeze(2)
    return float((at_class * supporters).sum())  # (N, B) -> scalar


def consensus_focus(
    logits: Tensor, num_examples: Tensor | None = None, gate: float = CONFIDENCE_GATE
) -> Tensor:
    """Consensus Focus domain weights: ``N_n * max(CF(n), 0)``, normalized.

    Args:
        logits: client logits on the proxy set, shape (N, B, K).
        num_examples: training samples of each client, shape (N,), >= 0; None = equal.
        gate: confidence gate in [0, 1).

    Returns:
        float64 weights of shape (N,), summing to 1.

    Raises:
        ValueError: see :func:`vote`; or if `num_examples` is not (N,) non-negative with
            a positive sum.
    """
    _check(logits, gate)
    n = logits.shape[0]
    sizes = torch.ones(n, dtype=torch.float64) if num_examples is None else num_examples.double()
    if tuple(sizes.shape) != (n,) or (sizes < 0).any() or not sizes.sum() > 0:
        raise ValueError(
            f"num_examples must have shape ({n},), be >= 0 and sum to > 0, got {sizes.tolist()}"
        )
    total = consensus_quality(logits, gate)
    without = [torch.cat([logits[:i], logits[i + 1 :]]) for i in range(n)]
    contribution = torch.tensor(
        [total - q for q in starmap(consensus_quality, ((w, gate) for w in without))],
        dtype=torch.float64,
    )  # (N,)
    raw = sizes * contribution.clamp_min(0.0)
    if not raw.sum() > 0:
        raw = sizes
    return raw / raw.sum()


def kd3a_consensus(
    logits: Tensor,
    mode: str,
    temperature: float,
    num_examples: Tensor | None = None,
    gate: float = CONFIDENCE_GATE,
) -> Tensor:
    """Soft labels of Knowledge Vote (``knowledge-vote``) or Consensus Focus (``consensus-focus``).

    Args:
        logits: client logits on the proxy set, shape (N, B, K).
        mode: one of :data:`KD3A_MODES`.
        temperature: softmax temperature T > 0 of the returned soft labels (the vote
            itself uses T = 1).
        num_examples: clients' training samples, shape (N,), for ``consensus-focus``.
        gate: confidence gate in [0, 1).

    Returns:
        float32 soft labels of shape (B, K): each kept row is the (weighted) mean of its
        supporters' ``softmax(logits / T)`` and sums to 1; a dropped sample's row is 0.

    Raises:
        ValueError: an unknown mode, T <= 0, or see :func:`vote` and
            :func:`consensus_focus`.

    References:
        Feng et al., KD3A, ICML 2021, arXiv:2011.09757; Hinton et al.,
        arXiv:1503.02531.
    """
    if mode not in KD3A_MODES:
        raise ValueError(f"unknown KD3A mode {mode!r}; valid modes: {', '.join(KD3A_MODES)}")
    probs = soft_labels(logits, temperature).double()  # validates T; (N, B, K)
    supporters, _ = vote(logits, gate)
    weights = supporters.double()  # (N, B)
    if mode == "consensus-focus":
        focus = consensus_focus(logits, num_examples, gate)  # (N,)
        focused = weights * focus.unsqueeze(1)
        keep_focus = focused.sum(dim=0) > 0  # a sample whose supporters all have weight 0
        weights = torch.where(keep_focus.unsqueeze(0), focused, weights)
    col = weights.sum(dim=0, keepdim=True)  # (1, B)
    w = torch.where(col > 0, weights / col.clamp_min(1e-300), torch.zeros_like(weights))
    return torch.einsum("nb,nbk->bk", w, probs).float()  # (N, B, K) -> (B, K)


def kept_samples(soft: Tensor) -> Tensor:
    """Which consensus rows are kept: a bool mask (B,), False for the zero rows of
    samples a KD3A mode dropped (rows of other modes always sum to 1)."""
    return soft.sum(dim=1) > 0.5


__all__ = [
    "CONFIDENCE_GATE",
    "KD3A_MODES",
    "consensus_focus",
    "consensus_quality",
    "kd3a_consensus",
    "kept_samples",
    "vote",
]
