"""Byzantine-robust maths on decoded client updates: norm clipping relative to the
cohort and robust aggregators. No Flower messages here (Flower's numpy helpers only).

Every function takes the same shape of input as :func:`feddistill.server.aggregate.fedavg`
(a list of ``(num_examples, update)`` pairs in partition-id order) plus the set of keys
to treat robustly (the trainable deltas); the other keys (buffers) are left to the
caller, so this module does not need to know which tensors are buffers.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from flwr.server.strategy.aggregate import aggregate_median, aggregate_trimmed_avg
from torch import Tensor

from feddistill.config import RunConfig
from feddistill.server.aggregate import fedavg

AGGREGATORS: tuple[str, ...] = ("fedavg", "median", "trimmed-mean", "krum", "multi-krum")

Updates = Sequence[tuple[int, Mapping[str, Tensor]]]


@dataclass(frozen=True)
class ClipResult:
    """What :func:`clip_to_median_norm` did.

    Attributes:
        updates: the (num_examples, update) pairs after clipping, same order.
        norms: each client's L2 norm over the robust keys before clipping.
        bound: the clipping bound, ``multiple * median(norms)``.
        clipped: indices of the clients whose update was scaled down.
    """

    updates: list[tuple[int, dict[str, Tensor]]]
    norms: list[float]
    bound: float
    clipped: list[int]


@dataclass(frozen=True)
class RobustResult:
    """What :func:`robust_aggregate` did.

    Attributes:
        update: the aggregated update, all keys of the inputs.
        excluded: indices of the clients that the aggregator left out entirely
            (Krum / multi-Krum); the coordinate-wise rules exclude nobody as a whole.
    """

    update: dict[str, Tensor]
    excluded: list[int]


def update_norm(update: Mapping[str, Tensor], keys: Collection[str]) -> float:
    """L2 norm of an update over `keys`, as one flat vector (float64).

    Args:
        update: name -> tensor.
        keys: the names to include; each must be in `update`.

    Returns:
        ``sqrt(sum_key ||update[key]||^2)``.
    """
    total = sum(float(update[k].double().pow(2).sum()) for k in sorted(keys))
    return math.sqrt(total)


def clip_to_median_norm(updates: Updates, keys: Collection[str], multiple: float) -> ClipResult:
    """Scale each update down to at most `multiple` times the cohort's median norm.

    With ``m = median_n ||u_n||`` over the `keys` of every update (the lower median for
    an even count, so that half the clients can never raise it), each update becomes
    ``u_n * min(1, multiple * m / ||u_n||)`` on `keys`; other keys are unchanged.
    The bound follows the cohort, so no fixed norm has to fit every model and round.

    Args:
        updates: (num_examples, update) pairs, one per client.
        keys: names of the trainable deltas to clip.
        multiple: the bound as a multiple of the median norm, > 0.

    Returns:
        A :class:`ClipResult`.

    Raises:
        ValueError: if `updates` is empty or `multiple` is not a finite number > 0.

    References:
        Sun et al., "Can you really backdoor federated learning?", arXiv:1911.07963.
    """
    if not updates:
        raise ValueError("clip_to_median_norm needs at least one update, got none")
    if not (math.isfinite(multiple) and multiple > 0):
        raise ValueError(f"clip multiple must be a finite number > 0, got {multiple!r}")
    norms = [update_norm(u, keys) for _, u in updates]
    median = sorted(norms)[(len(norms) - 1) // 2]
    bound = multiple * median
    out: list[tuple[int, dict[str, Tensor]]] = []
    clipped: list[int] = []
    for i, ((n, upd), norm) in enumerate(zip(updates, norms, strict=True)):
        scale = bound / norm if norm > bound else 1.0
        if scale < 1.0:
            clipped.append(i)
        out.append((n, {k: (v * scale).to(v.dtype) if k in keys else v for k, v in upd.items()}))
    return ClipResult(out, norms, bound, clipped)


def num_byzantine(num_clients: int, fraction: float) -> int:
    """The number of clients the robust rules tolerate: ``floor(fraction * N)``.

    Raises:
        ValueError: if `fraction` is outside [0, 0.5).
    """
    if not 0.0 <= fraction < 0.5:
        raise ValueError(f"robust fraction must be in [0, 0.5), got {fraction!r}")
    return int(math.floor(fraction * num_clients + 1e-9))


def _to_numpy(updates: Updates, keys: list[str]) -> list[tuple[list[np.ndarray], int]]:
    return [([u[k].double().numpy() for k in keys], int(n)) for n, u in updates]


def robust_aggregate(
    updates: Updates, keys: Collection[str], aggregator: str, fraction: float = 0.25
) -> RobustResult:
    """Aggregate the `keys` of the updates with a robust rule; other keys by FedAvg.

    Rules (``N`` clients, ``f = floor(fraction * N)``):

    - ``fedavg``: the mean weighted by num_examples (McMahan et al.).
    - ``median``: coordinate-wise median, unweighted (Yin et al.; even N: mean of the
      two middle values).
    - ``trimmed-mean``: per coordinate, drop the ``f`` largest and ``f`` smallest
      values and average the rest, unweighted (Yin et al.).
    - ``krum``: the single update with the smallest sum of squared distances to its
      ``max(1, N - f - 2)`` nearest neighbours (Blanchard et al.).
    - ``multi-krum``: the num_examples-weighted mean of the ``N - f`` updates with the
      best Krum scores.

    The coordinate-wise rules are Flower's (:mod:`flwr.server.strategy.aggregate`),
    run in float64 on the tensors of `keys` in sorted-name order; Krum uses
    :func:`krum_scores` (Flower's formula, which also tells who was left out); ties
    go to the lower index. Results come back as float32.

    Args:
        updates: (num_examples, update) pairs in a fixed (partition-id) order; every
            update has the same names and shapes.
        keys: names aggregated by the rule (trainable deltas); the rest by FedAvg.
        aggregator: one of :data:`AGGREGATORS`.
        fraction: share of clients assumed malicious, in [0, 0.5).

    Returns:
        A :class:`RobustResult`.

    Raises:
        ValueError: if `updates` is empty, the aggregator is unknown (the message lists
            the valid ones), or `fraction` is outside [0, 0.5).

    References:
        Yin et al., arXiv:1803.01498; Blanchard et al., NeurIPS 2017 ("Machine
        learning with adversaries: Byzantine tolerant gradient descent");
        McMahan et al., arXiv:1602.05629.
    """
    if aggregator not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {aggregator!r}; valid: {', '.join(AGGREGATORS)}")
    if not updates:
        raise ValueError("robust_aggregate needs at least one update, got none")
    f = num_byzantine(len(updates), fraction)
    out = fedavg(updates)
    names = sorted(k for k in keys if k in out)
    if aggregator == "fedavg" or not names:
        return RobustResult(out, [])
    results = _to_numpy(updates, names)
    excluded: list[int] = []
    if aggregator == "median":
        arrays = aggregate_median(results)
    elif aggregator == "trimmed-mean":
        arrays = aggregate_trimmed_avg(results, proportiontocut=f / len(updates))
    else:
        keep = len(updates) - f if aggregator == "multi-krum" else 1
        scores = krum_scores(updates, names, f)
        chosen = sorted(np.argsort(np.asarray(scores), kind="stable")[:keep].tolist())
        excluded = [i for i in range(len(updates)) if i not in chosen]
        kept = fedavg([(updates[i][0], {k: updates[i][1][k] for k in names}) for i in chosen])
        arrays = [kept[k].double().numpy() for k in names]
    for name, array in zip(names, arrays, strict=True):
        out[name] = torch.from_numpy(np.asarray(array, dtype=np.float64)).float()
    return RobustResult(out, excluded)


def krum_scores(updates: Updates, keys: Collection[str], num_malicious: int) -> list[float]:
    """Krum score of each update: summed squared distance to its nearest neighbours.

    ``score(i) = sum_{j in NN(i)} ||u_i - u_j||^2`` over the ``max(1, N - f - 2)``
    updates nearest to ``u_i`` (itself excluded), on the `keys` flattened in
    sorted-name order. The same formula as Flower's ``aggregate_krum``, which returns
    only the aggregate; here the scores say which clients were left out.

    Args:
        updates: (num_examples, update) pairs.
        keys: names compared.
        num_malicious: f, the number of Byzantine clients assumed, >= 0.

    Returns:
        One score per update, in input order (float64 arithmetic).

    References:
        Blanchard et al., NeurIPS 2017.
    """
    names = sorted(keys)
    flat = torch.stack(
        [torch.cat([u[k].double().flatten() for k in names]) for _, u in updates]
    )  # (N, D)
    dist = torch.cdist(flat, flat).pow(2)  # (N, N)
    num_closest = max(1, len(updates) - num_malicious - 2)
    nearest = dist.sort(dim=1, stable=True).values[:, 1 : num_closest + 1]  # skip self
    return [float(s) for s in nearest.sum(dim=1)]


@dataclass(frozen=True)
class ClientAction:
    """One thing the server did to one client's contribution in one round.

    Attributes:
        partition_id: the client (-1 when unknown, e.g. an undecodable reply).
        action: ``clipped``, ``excluded``, ``down-weighted``, ``capped`` or ``rejected``.
        reason: a sentence with the numbers behind the action.
    """

    partition_id: int
    action: str
    reason: str


@dataclass(frozen=True)
class RobustPolicy:
    """How the server bounds malicious clients (see the ``aggregator`` ... keys).

    Attributes:
        aggregator: one of :data:`AGGREGATORS`.
        clip_multiple: clip to this multiple of the median norm; 0 turns clipping off.
        fraction: share of clients assumed malicious, in [0, 0.5).
        robust_consensus: normalise affinities, gate by agreement, cap shares.
        max_share: largest share of one client per proxy sample, in (0, 1].
    """

    aggregator: str = "fedavg"
    clip_multiple: float = 0.0
    fraction: float = 0.25
    robust_consensus: bool = False
    max_share: float = 1.0


def aggregate_updates(
    updates: Updates, partition_ids: Sequence[int], keys: Collection[str], policy: RobustPolicy
) -> tuple[dict[str, Tensor], list[ClientAction]]:
    """Clip (relative to the cohort), then aggregate by the policy's rule.

    Args:
        updates: (num_examples, update) pairs in partition-id order.
        partition_ids: the clients' partition ids, same order.
        keys: trainable deltas (clipped and robustly aggregated); other keys by FedAvg.
        policy: the :class:`RobustPolicy`.

    Returns:
        (the aggregated update, one :class:`ClientAction` per clipped or excluded client).

    Raises:
        ValueError: as :func:`clip_to_median_norm` and :func:`robust_aggregate`.
    """
    actions: list[ClientAction] = []
    if policy.clip_multiple > 0:
        clip = clip_to_median_norm(updates, keys, policy.clip_multiple)
        updates = clip.updates
        for i in clip.clipped:
            actions.append(
                ClientAction(
                    partition_ids[i],
                    "clipped",
                    f"update L2 norm {clip.norms[i]:.3g} > {policy.clip_multiple:g} x the "
                    f"round's median {clip.bound / policy.clip_multiple:.3g}; scaled to "
                    f"{clip.bound:.3g}",
                )
            )
    result = robust_aggregate(updates, keys, policy.aggregator, policy.fraction)
    for i in result.excluded:
        actions.append(
            ClientAction(partition_ids[i], "excluded", f"{policy.aggregator} left the update out")
        )
    return result.update, actions


def robust_policy(cfg: RunConfig) -> RobustPolicy:
    """The :class:`RobustPolicy` of a run's config."""
    return RobustPolicy(
        aggregator=cfg.aggregator,
        clip_multiple=cfg.clip_multiple,
        fraction=cfg.robust_fraction,
        robust_consensus=cfg.robust_consensus,
        max_share=cfg.max_client_share,
    )


def robustness_columns(
    actions: Sequence[ClientAction], failures: Sequence[str]
) -> dict[str, int | list[dict[str, int | str]]]:
    """A round's metrics columns: a count per action, and every action with its reason.

    ``robust_events`` (a list) goes to metrics.jsonl and report.md; the counts also
    go to metrics.csv. Rejected and failed replies come from `failures` (the
    strategy's reasons, which name the node).
    """
    events: list[dict[str, int | str]] = [
        {"partition_id": a.partition_id, "action": a.action, "reason": a.reason} for a in actions
    ]
    events += [{"partition_id": -1, "action": "rejected", "reason": f} for f in failures]
    counts: dict[str, int | list[dict[str, int | str]]] = {
        name.replace("-", "_"): sum(1 for a in actions if a.action == name)
        for name in ("clipped", "excluded", "down-weighted", "capped")
    }
    counts["robust_events"] = events
    return counts
