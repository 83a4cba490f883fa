"""FedDistill: FedAvg of compressed student updates plus a consensus of teacher logits.

A subclass of Flower's message-based :class:`flwr.serverapp.strategy.FedAvg`: it keeps
the paired ``configure_train`` / ``aggregate_train`` shape, replaces Flower's random
node sampling by a seeded sample over partition ids, and decodes, validates and
averages the clients' compressed updates in partition-id order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch import Tensor

from feddistill import protocol as P
from feddistill.compression import CodecError, decode_update
from feddistill.distill import consensus as build_consensus
from feddistill.server.aggregate import RejectedUpdate, fedavg, validate_update

logger = logging.getLogger(__name__)


@dataclass
class ClientResult:
    """One accepted client reply, decoded."""

    partition_id: int
    num_examples: int
    update: dict[str, Tensor]
    logits: Tensor | None  # (B, K)
    affinity: Tensor | None  # (B,)
    metrics: dict[str, float]
    uplink_bytes: int
    placement: dict[str, str | int] = field(default_factory=dict)


@dataclass
class RoundOutcome:
    """What aggregate_train learned in one round."""

    accepted: list[ClientResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # one reason per failed client
    update: dict[str, Tensor] | None = None
    consensus: Tensor | None = None  # (B, K) soft labels


def _as_bytes(value: object, key: str) -> bytes:
    if not isinstance(value, bytes):
        raise RejectedUpdate(f"payload[{key!r}] must be bytes, got {type(value).__name__}")
    return value


def _short_reason(reason: str | None) -> str:
    """The client's own exception message out of Ray's long error text."""
    reason = reason or ""
    marker = "Message: "
    if marker in reason:
        reason = reason[reason.rindex(marker) + len(marker) :]
    reason = reason.strip().removesuffix("'>").strip()  # the end of Ray's repr
    return reason.splitlines()[0][:300] if reason else "unknown error"


class FedDistill(FedAvg):
    """Federated distillation with compressed updates.

    Args:
        template: the global student's state_dict; updates must match its names,
            shapes and dtypes.
        plan: what the configured strategy does (:func:`feddistill.protocol.plan_for`).
        temperature: softmax temperature T > 0 of the consensus.
        seed: seeds client sampling (one stream per round).
        fraction_train: share of clients sampled per round, in (0, 1].
        min_train_nodes: fewest clients sampled per round; also the fewest accepted
            replies for a round to count.
        max_update_norm: replies with a larger L2 norm in any tensor are rejected.

    References:
        FedAvg, arXiv:1602.05629; FedDF, arXiv:2006.07242; FedMD, arXiv:1910.03581.
    """

    def __init__(
        self,
        template: dict[str, Tensor],
        plan: P.StrategyPlan,
        temperature: float,
        seed: int,
        fraction_train: float = 1.0,
        min_train_nodes: int = 2,
        max_update_norm: float = 1e4,
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=0.0,
            min_train_nodes=min_train_nodes,
            min_available_nodes=min_train_nodes,
            arrayrecord_key=P.ARRAYS,
            configrecord_key=P.CONFIG,
        )
        self.template = template
        self.plan = plan
        self.temperature = temperature
        self.seed = seed
        self.max_update_norm = max_update_norm
        self.node_partitions: dict[int, int] = {}  # node id -> partition id

    def sample_partitions(self, server_round: int, num_partitions: int) -> list[int]:
        """Seeded sample of partition ids for `server_round`, sorted."""
        size = max(int(num_partitions * self.fraction_train), self.min_train_nodes)
        size = min(size, num_partitions)
        rng = np.random.default_rng([self.seed, server_round])
        return sorted(int(p) for p in rng.choice(num_partitions, size=size, replace=False))

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One train message per sampled node, in partition-id order."""
        by_partition = {p: n for n, p in self.node_partitions.items()}
        if not by_partition:
            raise RuntimeError("configure_train called before node_partitions was discovered")
        chosen = self.sample_partitions(server_round, max(by_partition) + 1)
        config[P.SERVER_ROUND] = server_round
        record = RecordDict({P.ARRAYS: arrays, P.CONFIG: config})
        node_ids = [by_partition[p] for p in chosen if p in by_partition]
        logger.info("round %d: sampled partitions %s", server_round, chosen)
        return self._construct_messages(record, node_ids, MessageType.TRAIN)

    def decode_reply(self, msg: Message) -> ClientResult:
        """Decode and validate one reply.

        Raises:
            RejectedUpdate: if the reply is malformed, cannot be decoded, or fails
                :func:`validate_update`.
        """
        try:
            metrics = {k: float(v) for k, v in msg.content[P.METRICS].items()}  # type: ignore[arg-type]
            payload = msg.content[P.PAYLOAD]
            update_bytes = _as_bytes(payload[P.UPDATE], P.UPDATE)
            logits_bytes = _as_bytes(payload[P.LOGITS], P.LOGITS)
        except (KeyError, TypeError, ValueError) as exc:
            raise RejectedUpdate(f"malformed reply: {exc!r}") from None
        try:
            update = decode_update(update_bytes)
            tensors = decode_update(logits_bytes) if logits_bytes else {}
        except CodecError as exc:
            raise RejectedUpdate(f"undecodable payload: {exc}") from None
        validate_update(update, self.template, self.max_update_norm)
        logits = tensors.get(P.LOGITS_TENSOR)
        affinity = tensors.get(P.AFFINITY_TENSOR)
        if self.plan.uses_teachers:
            if (
                logits is None
                or affinity is None
                or logits.ndim != 2
                or affinity.shape != logits.shape[:1]
            ):
                raise RejectedUpdate("teacher logits (B, K) and affinity (B,) are required")
            if not (bool(torch.isfinite(logits).all()) and bool(torch.isfinite(affinity).all())):
                raise RejectedUpdate("teacher logits or affinity contain NaN or Inf")
        num_examples = int(metrics.get(P.NUM_EXAMPLES, -1))
        if num_examples < 0:
            raise RejectedUpdate(f"num-examples must be >= 0, got {num_examples}")
        return ClientResult(
            partition_id=int(metrics.get(P.PARTITION_ID, -1)),
            num_examples=num_examples,
            update=update,
            logits=logits,
            affinity=affinity,
            metrics=metrics,
            uplink_bytes=len(update_bytes) + len(logits_bytes),
            placement=dict(msg.content[P.PLACEMENT]) if P.PLACEMENT in msg.content else {},  # type: ignore[arg-type]
        )

    def aggregate_round(self, server_round: int, replies: Iterable[Message]) -> RoundOutcome:
        """Decode, validate and average the replies; build the next consensus.

        A reply with an error, a rejected update or 0 examples counts as a failure and
        the round goes on with the rest. Aggregation runs in partition-id order.
        """
        outcome = RoundOutcome()
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                outcome.failures.append(
                    f"node {node}: client error: {_short_reason(msg.error.reason)}"
                )
                continue
            try:
                result = self.decode_reply(msg)
            except RejectedUpdate as exc:
                outcome.failures.append(f"node {node}: rejected: {exc}")
                continue
            if result.num_examples == 0:
                outcome.failures.append(f"partition {result.partition_id}: 0 examples")
                continue
            outcome.accepted.append(result)
        outcome.accepted.sort(key=lambda r: r.partition_id)
        for reason in outcome.failures:
            logger.warning("round %d: %s", server_round, reason)
        if outcome.accepted:
            outcome.update = fedavg([(r.num_examples, r.update) for r in outcome.accepted])
            if self.plan.uses_teachers and self.plan.consensus is not None:
                logits = torch.stack(
                    [cast(Tensor, r.logits) for r in outcome.accepted]
                )  # (N, B, K)
                # clients send log-affinity; exp, then a floor so no sample has all-zero weights
                log_affinity = [cast(Tensor, r.affinity) for r in outcome.accepted]
                affinity = torch.stack(log_affinity).exp()  # (N, B)
                affinity = affinity.clamp_min(1e-12)
                outcome.consensus = build_consensus(
                    logits,
                    self.plan.consensus,
                    self.temperature,
                    affinity=affinity,
                    seed=self.seed,
                    num_examples=torch.tensor([r.num_examples for r in outcome.accepted]),
                )
        return outcome

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Flower's interface: the averaged update and the mean client metrics."""
        outcome = self.aggregate_round(server_round, replies)
        if outcome.update is None:
            return None, None
        total = sum(r.num_examples for r in outcome.accepted)
        keys = sorted(set.intersection(*(set(r.metrics) for r in outcome.accepted)))
        mean = {
            k: sum(r.metrics[k] * r.num_examples for r in outcome.accepted) / total for k in keys
        }
        return ArrayRecord(outcome.update), MetricRecord(cast(Any, mean))
