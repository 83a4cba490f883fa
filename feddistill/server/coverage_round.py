"""The server's ``coverage`` consensus for one round (label skew), with its actions.

Kept out of :mod:`feddistill.server.strategy`: the strategy calls
:func:`coverage_round_consensus` when ``consensus`` is ``coverage`` or ``coverage-era``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from feddistill.distill.consensus import consensus
from feddistill.distill.coverage import coverage_gate_weights
from feddistill.distill.robust_consensus import agreement_gate
from feddistill.server.robust import ClientAction


def coverage_round_consensus(
    logits: Tensor,
    mode: str,
    class_counts: Tensor,
    temperature: float,
    reference: Tensor | None,
    partition_ids: Sequence[int],
    gate: bool,
) -> tuple[Tensor, list[ClientAction]]:
    """Soft labels of the ``coverage`` / ``coverage-era`` consensus, with the gate's actions.

    With ``gate`` (``robust-consensus = true``) and a reference, each teacher is first
    weighted by :func:`~feddistill.distill.robust_consensus.agreement_gate`, judged on
    the proxy samples the global student puts in the classes the teacher has seen
    (:func:`~feddistill.distill.coverage.coverage_gate_weights`); a teacher that agrees
    with the student at half the cohort's median rate or less gets no vote.

    Args:
        logits: (N, B, K) the accepted clients' teacher logits, in partition-id order.
        mode: ``coverage``, or ``coverage-era`` (the vote sharpened as DS-FL's entropy
            reduction, :func:`~feddistill.distill.consensus.consensus`).
        class_counts: (N, K) their training examples per class (checked by the
            strategy: non-negative integers summing to each reply's num-examples).
        temperature: softmax temperature T > 0.
        reference: (B, K) logits of the new global student, or None (teachers only,
            no gate).
        partition_ids: the N clients' partition ids.
        gate: apply the agreement gate.

    Returns:
        (soft labels (B, K), one ``down-weighted`` action per gated teacher).

    Raises:
        ValueError: as :func:`~feddistill.distill.coverage.coverage_consensus`, or if
            ``mode`` is not a consensus mode.
    """
    weights: Tensor | None = None
    actions: list[ClientAction] = []
    if gate and reference is not None:
        weights, rates = agreement_gate(
            logits, coverage_gate_weights(class_counts, reference), reference
        )
        typical = sorted(r for r in rates.tolist() if not math.isnan(r))
        median = typical[(len(typical) - 1) // 2] if typical else float("nan")
        for i, pid in enumerate(partition_ids):
            if float(weights[i]) < 1.0:
                actions.append(
                    ClientAction(
                        pid,
                        "down-weighted",
                        f"teacher agrees with the global student on {float(rates[i]):.0%} of "
                        f"the samples of its classes (cohort median {median:.0%}); "
                        f"consensus weight x{float(weights[i]):.2f} (class-coverage vote)",
                    )
                )
    soft = consensus(
        logits,
        mode,
        temperature,
        client_weights=weights,
        class_counts=class_counts,
        reference=reference,
    )
    return soft, actions
