"""RoundMetrics: one round's metrics, the row of metrics.csv / metrics.jsonl.

Built once per round (by the federated loop, or by the centralized baseline with
``pooled=True``), stored in checkpoints, and turned into a row (:meth:`to_row`) only
where it crosses into a file or a plotting helper. A value that was not measured is
None, never ``""``; the CSV writer alone writes None as an empty cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from feddistill.protocol import class_counts_bytes
from feddistill.server.logits_only import client_accuracy_columns
from feddistill.server.policy import SentRound
from feddistill.server.strategy import RoundOutcome

# Columns that are only there for some runs (None: not measured, no column).
_OPTIONAL = (
    "student_parameters",
    "client_seconds_mean",
    "student_seconds_mean",
    "global_sparsity",
    "downlink_mask_bytes",
    "logits_reused",
    "uplink_class_counts_bytes",
)
_ROBUST = ("clipped", "excluded", "down_weighted", "capped")


@dataclass
class RoundMetrics:
    """One round's measurements; bytes are exact payload lengths, seconds wall-clock.

    Attributes:
        round: the server round, from 1.
        evaluation: the global student on the test set (accuracy and loss, overall,
            per domain and worst domain: :func:`~feddistill.learn.evaluate`).
        student_train_loss: mean training loss the clients reported.
        sampled, accepted, failed: clients sent a message, replies used, the rest.
        teacher_accuracy: mean teacher training accuracy; None when no client trains
            a teacher (written as an empty CSV cell).
        uplink_*: bytes the accepted clients sent this round (all, student update,
            teacher logits, per client); ``uplink_class_counts_bytes``: the class
            counts of the ``coverage`` modes (part of ``uplink_bytes``; None when no
            reply sent any).
        downlink_bytes, downlink_bytes_per_client: bytes sent to the sampled clients.
        cumulative_*: sums over the run so far (``fedavg_fp32``: what fp32 FedAvg would
            have sent, uplink only and up + down).
        ratio_vs_fedavg_fp32, total_ratio_vs_fedavg_fp32: those sums over this run's.
        client_accuracy: ``client_<p>_accuracy`` and their mean (logits-only runs).
        server_distill_loss: the server's FedDF distillation loss (0: none).
        logits_reused: accepted clients whose frozen teacher sent no logits (the
            server reused its held ones); None unless teachers can freeze.
        robust_counts: clipped / excluded / down_weighted / capped clients.
        robust_events: every such action and every rejected reply, with its reason
            (metrics.jsonl and report.md only).
        pooled: a centralized-baseline row (no teachers, no traffic columns).
    """

    round: int
    evaluation: dict[str, float]
    student_train_loss: float
    sampled: int
    accepted: int
    failed: int
    uplink_bytes: int = 0
    cumulative_uplink_bytes: int = 0
    cumulative_downlink_bytes: int = 0
    teacher_accuracy: float | None = None
    uplink_update_bytes: int = 0
    uplink_logits_bytes: int = 0
    uplink_bytes_per_client: int = 0
    downlink_bytes: int = 0
    downlink_bytes_per_client: int = 0
    cumulative_fedavg_fp32_bytes: int = 0
    ratio_vs_fedavg_fp32: float = 0.0
    cumulative_fedavg_fp32_total_bytes: int = 0
    total_ratio_vs_fedavg_fp32: float = 0.0
    client_accuracy: dict[str, float] = field(default_factory=dict)
    server_distill_loss: float = 0.0
    student_parameters: int | None = None
    client_seconds_mean: float | None = None
    student_seconds_mean: float | None = None
    global_sparsity: float | None = None
    downlink_mask_bytes: int | None = None
    logits_reused: int | None = None
    uplink_class_counts_bytes: int | None = None  # coverage modes: included in uplink_bytes
    robust_counts: dict[str, int] = field(default_factory=dict)
    robust_events: list[dict[str, int | str]] = field(default_factory=list)
    round_seconds: float = 0.0
    wall_seconds: float = 0.0
    pooled: bool = False

    def to_row(self) -> dict[str, Any]:
        """The row of metrics.csv / metrics.jsonl, in its column order.

        Returns:
            column -> value; ``teacher_accuracy`` may be None, columns a run does not
            measure are left out.
        """
        row: dict[str, Any] = {"round": self.round, **self.evaluation}
        if self.pooled:
            row.update(
                student_train_loss=self.student_train_loss,
                sampled=self.sampled,
                accepted=self.accepted,
                failed=self.failed,
                uplink_bytes=self.uplink_bytes,
                cumulative_uplink_bytes=self.cumulative_uplink_bytes,
                cumulative_downlink_bytes=self.cumulative_downlink_bytes,
            )
        else:
            for name in (
                "teacher_accuracy",
                "student_train_loss",
                "sampled",
                "accepted",
                "failed",
                "uplink_bytes",
                "uplink_update_bytes",
                "uplink_logits_bytes",
                "uplink_bytes_per_client",
                "downlink_bytes",
                "downlink_bytes_per_client",
                "cumulative_uplink_bytes",
                "cumulative_downlink_bytes",
                "cumulative_fedavg_fp32_bytes",
                "ratio_vs_fedavg_fp32",
                "cumulative_fedavg_fp32_total_bytes",
                "total_ratio_vs_fedavg_fp32",
            ):
                row[name] = getattr(self, name)
            row.update(self.client_accuracy)
            row["server_distill_loss"] = self.server_distill_loss
            row.update({k: getattr(self, k) for k in _OPTIONAL if getattr(self, k) is not None})
            row.update(self.robust_counts)
            row["robust_events"] = self.robust_events
        row.update(round_seconds=self.round_seconds, wall_seconds=self.wall_seconds)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RoundMetrics:
        """Read back a row of :meth:`to_row` (a checkpoint's, or metrics.jsonl's).

        Rows of older checkpoints wrote a missing teacher accuracy as ``""``; it reads
        as None.
        """
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in row.items() if k in names and k != "evaluation"}
        if known.get("teacher_accuracy") == "":
            known["teacher_accuracy"] = None
        pooled = "uplink_update_bytes" not in row
        evaluation = {
            k: v
            for k, v in row.items()
            if k in ("accuracy", "loss") or k.endswith("domain_accuracy") or _is_domain(k)
        }
        client = {k: v for k, v in row.items() if _is_client(k)}
        counts = {k: int(row[k]) for k in _ROBUST if k in row}
        return cls(
            **known,
            evaluation=evaluation,
            client_accuracy=client,
            robust_counts=counts,
            pooled=pooled,
        )


def _is_domain(key: str) -> bool:
    return key.startswith(("domain_", "target_", "source_")) and key.endswith("_accuracy")


def _is_client(key: str) -> bool:
    return key == "client_accuracy_mean" or (
        key.startswith("client_") and key.endswith("_accuracy") and key[7:-9].isdigit()
    )


def federated_round_metrics(
    server_round: int,
    evaluation: dict[str, float],
    outcome: RoundOutcome,
    sent: SentRound,
    previous: RoundMetrics | None,
    fp32_update_bytes: int,
) -> RoundMetrics:
    """One federated round's metrics (timing and optional columns are set by the loop).

    Args:
        server_round: the round, from 1.
        evaluation: the global student on the test set.
        outcome: the round's accepted replies, failures and actions.
        sent: what went down (messages and exact bytes).
        previous: the last round's metrics (None in the first round of the run).
        fp32_update_bytes: bytes of the student's float parameters in fp32, the
            message FedAvg would send each way.

    Returns:
        The round's metrics; downlink bytes are the exact compressed bytes when a
        per-client student delta or no student went down, else the fp32 student plus
        the consensus per sampled client.
    """
    accepted, sampled = outcome.accepted, len(sent.messages)
    uplink = sum(r.uplink_bytes for r in accepted)
    class_counts = sum(class_counts_bytes(r.metrics) for r in accepted)  # part of uplink
    teacher = [
        r.metrics["teacher_train_accuracy"]
        for r in accepted
        if "teacher_train_accuracy" in r.metrics
    ]
    if sent.student_bytes or not sent.uploads_student:  # exact per-client deltas, or none
        downlink = sum(sent.student_bytes.values()) + sent.consensus_bytes * sampled
        per_client = downlink // max(1, sampled)
    else:  # the fp32 student and the consensus to every sampled client
        per_client = sent.dense_student_bytes() + sent.consensus_bytes
        downlink = per_client * sampled
    prev = previous or RoundMetrics(0, {}, 0.0, 0, 0, 0)
    cum_up = prev.cumulative_uplink_bytes + uplink
    cum_down = prev.cumulative_downlink_bytes + downlink  # the masks' bytes come below
    cum_fp32 = prev.cumulative_fedavg_fp32_bytes + fp32_update_bytes * len(accepted)
    cum_total = prev.cumulative_fedavg_fp32_total_bytes + fp32_update_bytes * (
        len(accepted) + sampled
    )
    return RoundMetrics(
        round=server_round,
        evaluation=evaluation,
        teacher_accuracy=sum(teacher) / len(teacher) if teacher else None,
        student_train_loss=sum(r.metrics.get("student_loss", 0.0) for r in accepted)
        / len(accepted),
        sampled=sampled,
        accepted=len(accepted),
        failed=sampled - len(accepted),
        uplink_bytes=uplink,
        uplink_update_bytes=sum(int(r.metrics.get("update_bytes", 0)) for r in accepted),
        uplink_logits_bytes=sum(int(r.metrics.get("logits_bytes", 0)) for r in accepted),
        uplink_bytes_per_client=uplink // max(1, len(accepted)),
        downlink_bytes=downlink + sent.mask_bytes,
        downlink_bytes_per_client=per_client,
        cumulative_uplink_bytes=cum_up,
        cumulative_downlink_bytes=cum_down + sent.mask_bytes,
        cumulative_fedavg_fp32_bytes=cum_fp32,
        ratio_vs_fedavg_fp32=cum_fp32 / max(1, cum_up),
        cumulative_fedavg_fp32_total_bytes=cum_total,
        total_ratio_vs_fedavg_fp32=cum_total / max(1, cum_up + cum_down),
        client_accuracy=client_accuracy_columns(outcome),
        uplink_class_counts_bytes=class_counts or None,
    )
