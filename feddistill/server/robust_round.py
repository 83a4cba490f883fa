"""The server's robust consensus for one round, with a per-client account of what it did."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from feddistill.distill.robust_consensus import robust_consensus
from feddistill.server.robust import ClientAction


def robust_round_consensus(
    logits: Tensor,
    mode: str,
    temperature: float,
    affinity: Tensor,
    reference: Tensor | None,
    partition_ids: Sequence[int],
    max_share: float,
) -> tuple[Tensor, list[ClientAction]]:
    """Soft labels of :func:`~feddistill.distill.robust_consensus.robust_consensus`
    and one action per client whose weight was lowered.

    Args:
        logits: (N, B, K) the accepted clients' teacher logits, in partition-id order.
        mode: the consensus mode.
        temperature: softmax temperature T > 0.
        affinity: (N, B) claimed affinities (non-negative).
        reference: (B, K) logits of the new global student, or None (no gate).
        partition_ids: the N clients' partition ids.
        max_share: largest share of one client per proxy sample, in (0, 1].

    Returns:
        (soft labels (B, K), actions: ``down-weighted`` for a gate below 1, ``capped``
        for a client whose share was cut on some samples).

    Raises:
        ValueError: as :func:`~feddistill.distill.robust_consensus.robust_consensus`.
    """
    result = robust_consensus(
        logits, mode, temperature, affinity=affinity, reference=reference, max_share=max_share
    )
    actions: list[ClientAction] = []
    rates = result.agreement.tolist()
    typical = sorted(r for r in rates if not math.isnan(r))
    median = typical[(len(typical) - 1) // 2] if typical else float("nan")
    for i, pid in enumerate(partition_ids):
        gate = float(result.client_weights[i])
        if gate < 1.0:
            actions.append(
                ClientAction(
                    pid,
                    "down-weighted",
                    f"teacher agrees with the global student on {rates[i]:.0%} of its "
                    f"claimed samples (cohort median {median:.0%}); consensus weight x{gate:.2f}",
                )
            )
        capped = float(result.capped_share[i])
        if capped > 0:
            actions.append(
                ClientAction(
                    pid,
                    "capped",
                    f"share cut to max-client-share={max_share:g} on {capped:.1%} of proxy samples",
                )
            )
    return result.soft_labels, actions
