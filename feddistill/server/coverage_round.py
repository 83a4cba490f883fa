"""The server's ``coverage`` consensus for one round (label skew), with its actions.

Kept out of :mod:`feddistill.server.strategy`: the strategy calls
:func:`coverage_round_consensus` when ``consensus = "coverage"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from feddistill.distill.consensus import ERA_TEMPERATURE
from feddistill.distill.coverage import coverage_consensus, coverage_gate_weights
from feddistill.distill.robust_consensus import agreement_gate
from feddistill.server.robust import ClientAction


def coverage_round_consensus(
    logits: Tensor,
    class_counts: Tensor,
    temperature: float,
    reference: Tensor | None,
    partition_ids: Sequence[int],
    gate: bool,
    sharpen: bool = False,
) -> tuple[Tensor, list[ClientAction]]:
    """Soft labels of :func:`~feddistill.distill.coverage.coverage_consensus`.

    With ``gate`` (``robust-consensus = true``) and a reference, each teacher is first
    weighted by :func:`~feddistill.distill.robust_consensus.agreement_gate`, judged on
    the proxy samples the global student puts in the classes the teacher has seen
    (:func:`~feddistill.distill.coverage.coverage_gate_weights`); a teacher that agrees
    with the student at half the cohort's median rate or less gets no vote.

    Args:
        logits: (N, B, K) the accepted clients' teacher logits, in partition-id order.
        class_counts: (N, K) their training examples per class (checked by the
            strategy: non-negative integers summing to each reply's num-examples).
        temperature: softmax temperature T > 0.
        reference: (B, K) logits of the new global student, or None (teachers only,
            no gate).
        partition_ids: the N clients' partition ids.
        gate: apply the agreement gate.
        sharpen: return ``softmax(q / 0.1)`` of the soft labels q (``coverage-era``:
            DS-FL's entropy reduction, :data:`~feddistill.distill.consensus.ERA_TEMPERATURE`).

    Returns:
        (soft labels (B, K), one ``down-weighted`` action per gated teacher).

    Raises:
        ValueError: as :func:`~feddistill.distill.coverage.coverage_consensus`.
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
    soft = coverage_consensus(
        logits, class_counts, temperature, reference=reference, client_weights=weights
    )
    if sharpen:  # DS-FL's entropy reduction aggregation, arXiv:2008.06180
        soft = torch.softmax(soft / ERA_TEMPERATURE, dim=-1)
    return soft, actions
