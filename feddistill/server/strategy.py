"""FedDistill: FedAvg of compressed student updates plus a consensus of teacher logits.

Not a subclass of Flower's :class:`flwr.serverapp.strategy.Strategy` / ``FedAvg``, on
purpose: Flower's ``Strategy.start()`` runs rounds in which ``aggregate_train`` returns
the new global *weights* and nothing else, while a FedDistill round also builds a
consensus of teacher logits, applies server-side surgery and distillation, and keeps
per-client replicas, masks and checkpoints (:mod:`feddistill.server.loop` drives it).
Overriding FedAvg's methods to return updates and extras would break the contract that
``start()`` relies on, so this class composes Flower's messages instead. It keeps
Flower's names for the paired steps (``configure_train`` -> messages, then
``aggregate_round`` of the replies), samples partitions with a seeded RNG instead of
Flower's random node choice, and decodes, validates and averages the clients'
compressed updates in partition-id order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from torch import Tensor

from feddistill import protocol as P
from feddistill.compression import CodecError, decode_tensors
from feddistill.compression.masks import packed_shapes, unpack_unmasked
from feddistill.compression.teacher_upload import TeacherUpload
from feddistill.distill.consensus import consensus as build_consensus
from feddistill.distill.coverage import COVERAGE_MODES
from feddistill.distill.kd3a import KD3A_MODES
from feddistill.server.aggregate import (
    RejectedUpdate,
    fedavg,
    validate_buffers,
    validate_update,
)
from feddistill.server.coverage_round import coverage_round_consensus
from feddistill.server.robust import ClientAction, RobustPolicy, aggregate_updates
from feddistill.server.robust_round import robust_round_consensus
from feddistill.server.teacher_logits import HeldLogits
from feddistill.timing import timed

logger = logging.getLogger(__name__)


@dataclass
class ClientResult:
    """One accepted client reply, decoded."""

    partition_id: int
    num_examples: int
    update: dict[str, Tensor]
    logits: Tensor | None  # (B, K)
    affinity: Tensor | None  # (B,) consensus weights (TeacherUpload.affinity_weights)
    metrics: dict[str, float]
    uplink_bytes: int
    placement: dict[str, str | int] = field(default_factory=dict)
    buffers: dict[str, Tensor] = field(default_factory=dict)  # buffer values, not deltas
    class_counts: tuple[int, ...] | None = None  # (K,) training examples per class (coverage)
    # logits (B, K) and affinity (B,) on the whole proxy set to hold for the client's
    # frozen rounds; None when the reply brought none (only a round's subset, or reused)
    whole_proxy: tuple[Tensor, Tensor] | None = None


@dataclass
class RoundOutcome:
    """What aggregate_round learned in one round."""

    accepted: list[ClientResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # one reason per failed client
    update: dict[str, Tensor] | None = None
    consensus: Tensor | None = None  # (B, K) soft labels
    buffers: dict[str, Tensor] | None = None  # averaged buffer values (BatchNorm statistics)
    actions: list[ClientAction] = field(default_factory=list)  # clipped / down-weighted ...


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


class FedDistill:
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
        buffer_keys: keys of ``template`` that are buffers (BatchNorm statistics):
            clients send their values densely (``buffers`` payload), the server
            averages them by num-examples; every other key is a compressed update.
        num_classes: the student's class count K; teacher logits with another count
            are rejected before they are decoded. None: the first accepted reply (in
            partition order) sets K and others must match it.
        proxy_size: proxy samples B; logits must be (B, K). None: not checked up front.
            The loop sets :attr:`proxy_size` and :attr:`proxy_rows` each round with
            ``logits-subset`` < 1 (logits then cover b of the B rows); a frozen
            teacher's whole-proxy resend (``logits_whole_proxy``) has the B rows
            given here.
        robust: how malicious clients are bounded (clipping, aggregator, consensus);
            None: plain FedAvg and consensus.
        robust_keys: names of the trainable deltas that are clipped and robustly
            aggregated (None: every floating tensor of `template`).

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
        buffer_keys: Iterable[str] = (),
        num_classes: int | None = None,
        proxy_size: int | None = None,
        robust: RobustPolicy | None = None,
        robust_keys: frozenset[str] | None = None,
    ) -> None:
        if not 0.0 < fraction_train <= 1.0:
            raise ValueError(f"fraction_train must be in (0, 1], got {fraction_train}")
        if min_train_nodes < 1:
            raise ValueError(f"min_train_nodes must be >= 1, got {min_train_nodes}")
        self.fraction_train = fraction_train
        self.min_train_nodes = min_train_nodes
        self.template = template
        self.plan = plan
        self.temperature = temperature
        self.seed = seed
        self.max_update_norm = max_update_norm
        buffers = frozenset(buffer_keys)
        self.param_template = {k: v for k, v in template.items() if k not in buffers}
        self.buffer_template = {k: v for k, v in template.items() if k in buffers}
        self.num_classes = num_classes
        self.proxy_size = proxy_size
        self.whole_proxy_size = proxy_size
        self.proxy_rows: Tensor | None = None  # this round's rows of the proxy set; None: all
        # node id -> partition id (set by the loop after discovery); a reply must claim
        # the partition of the node it came from. Empty: not known, replies are taken at
        # their word (the strategy driven without a federation, as in unit tests)
        self.node_partitions: dict[int, int] = {}
        self.robust = robust or RobustPolicy()
        self.robust_keys = robust_keys or frozenset(
            k for k, v in template.items() if v.is_floating_point()
        )
        # aggregated update -> (B, K) logits of the new global student on the proxy set;
        # the trusted reference of the consensus' agreement gate (set by the loop)
        self.reference_fn: Callable[[dict[str, Tensor]], Tensor] | None = None
        # partition id -> extra config of its own message (downlink deltas); set by the loop
        self.per_partition_config: Callable[[int], ConfigRecord] | None = None
        # the global keep-mask (set by the loop when target-sparsity > 0): replies carry
        # only kept coordinates of masked tensors and must name this mask version
        self.masks: dict[str, Tensor] = {}
        self.mask_version = 0
        self.logits_top_m = 0  # issue 11: top-m logits rows (0 = all classes)
        self.held_logits = HeldLogits()  # issue 11: reused while a teacher is frozen

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
        logger.info("round %d: sampled partitions %s", server_round, chosen)
        per_partition = self.per_partition_config or (lambda p: ConfigRecord())
        own = {p: per_partition(p) for p in chosen if p in by_partition}
        return [
            Message(
                RecordDict({P.ARRAYS: arrays, P.CONFIG: ConfigRecord({**config, **extra})}),
                by_partition[p],
                MessageType.TRAIN,
            )
            for p, extra in own.items()
        ]

    def _shapes(self, template: dict[str, Tensor]) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in template.items()}

    def decode_reply(self, msg: Message) -> ClientResult:
        """Decode and validate one reply.

        Every size claim is checked against the shapes the server knows before
        anything is allocated (:func:`feddistill.compression.decode_tensors`).

        Raises:
            RejectedUpdate: if the reply is malformed, cannot be decoded, or fails
                :func:`validate_update` / :func:`validate_buffers`, or its teacher
                logits have another class count than the student (both named), or its
                class counts (``coverage`` modes) are missing, not non-negative integers
                or do not sum to its num-examples.
        """
        try:
            metrics = {k: float(v) for k, v in msg.content[P.METRICS].items()}  # type: ignore[arg-type]
            payload = msg.content[P.PAYLOAD]
            update_bytes = _as_bytes(payload[P.UPDATE], P.UPDATE)
            logits_bytes = _as_bytes(payload[P.LOGITS], P.LOGITS)
            buffers_bytes = b""
            if self.buffer_template and self.plan.uploads_student:
                buffers_bytes = _as_bytes(payload[P.BUFFERS], P.BUFFERS)
        except (KeyError, TypeError, ValueError) as exc:
            raise RejectedUpdate(f"malformed reply: {exc!r}") from None
        if not self.plan.uploads_student and update_bytes:
            raise RejectedUpdate(
                f"logits-only clients upload no student update, got {len(update_bytes)} bytes"
            )
        version = int(metrics.get(P.MASK_VERSION, 0))
        if version != self.mask_version:
            raise RejectedUpdate(
                f"update made with mask version {version}, the round's mask is "
                f"version {self.mask_version}"
            )
        try:
            update: dict[str, Tensor] = {}
            if self.plan.uploads_student:
                shapes = packed_shapes(self._shapes(self.param_template), self.masks)
                update = unpack_unmasked(decode_tensors(update_bytes, shapes), self.masks)
            buffers: dict[str, Tensor] = {}
            if self.buffer_template and self.plan.uploads_student:
                buffers = decode_tensors(buffers_bytes, self._shapes(self.buffer_template))
        except CodecError as exc:
            raise RejectedUpdate(f"undecodable payload: {exc}") from None
        try:
            upload = None
            whole = bool(metrics.get(P.LOGITS_WHOLE_PROXY))  # a frozen teacher's cache
            rows = self.whole_proxy_size if whole else self.proxy_size
            if logits_bytes:
                upload = TeacherUpload.decode(
                    logits_bytes, rows, self.num_classes, self.logits_top_m
                )
        except CodecError as exc:
            raise RejectedUpdate(
                f"undecodable teacher logits (student: {self.num_classes} classes, "
                f"{rows} proxy samples): {exc}"
            ) from None
        if self.plan.uploads_student:
            validate_update(update, self.param_template, self.max_update_norm)
            validate_buffers(buffers, self.buffer_template)
        logits, affinity = (upload.logits, upload.affinity_weights()) if upload else (None, None)
        whole_proxy = None
        if logits is not None and affinity is not None and (whole or self.proxy_rows is None):
            whole_proxy = (logits, affinity)  # B rows: held for the frozen rounds
            logits, affinity = self._round_rows(logits, affinity)
        if self.plan.uses_teachers and upload is None and metrics.get(P.LOGITS_REUSED):
            # a frozen teacher: its last accepted logits, this round's rows of them
            held = self.held_logits.reused(int(metrics.get(P.PARTITION_ID, -1)))
            logits, affinity = self._round_rows(*held)
        if self.plan.uses_teachers and logits is None:
            raise RejectedUpdate("teacher logits (B, K) and affinity (B,) are required")
        num_examples = int(metrics.get(P.NUM_EXAMPLES, -1))
        if num_examples < 0:
            raise RejectedUpdate(f"num-examples must be >= 0, got {num_examples}")
        class_counts = None
        if logits is not None and self.plan.consensus in COVERAGE_MODES:
            try:  # logits are (b, K): sent now, or a frozen teacher's held ones
                class_counts = P.read_class_counts(metrics, logits.shape[1], num_examples)
            except ValueError as exc:
                raise RejectedUpdate(f"bad class counts: {exc}") from None
        return ClientResult(
            partition_id=int(metrics.get(P.PARTITION_ID, -1)),
            num_examples=num_examples,
            update=update,
            logits=logits,
            affinity=affinity,
            metrics=metrics,
            uplink_bytes=len(update_bytes)
            + len(logits_bytes)
            + len(buffers_bytes)
            + P.class_counts_bytes(metrics),  # sent in coverage modes; counted when sent
            placement=dict(msg.content[P.PLACEMENT]) if P.PLACEMENT in msg.content else {},  # type: ignore[arg-type]
            buffers=buffers,
            class_counts=class_counts,
            whole_proxy=whole_proxy,
        )

    def _round_rows(self, logits: Tensor, affinity: Tensor) -> tuple[Tensor, Tensor]:
        """This round's rows (:attr:`proxy_rows`) of whole-proxy logits (B, K) and affinity (B,)."""
        if self.proxy_rows is None:
            return logits, affinity
        return logits[self.proxy_rows], affinity[self.proxy_rows]

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
                with timed("decode_server"):  # decode and validation of one reply
                    result = self.decode_reply(msg)
            except RejectedUpdate as exc:
                outcome.failures.append(f"node {node}: rejected: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - one bad reply never stops the round
                outcome.failures.append(f"node {node}: rejected: {type(exc).__name__}: {exc}")
                continue
            claimed, held = result.partition_id, self.node_partitions.get(node)
            if self.node_partitions and claimed != held:
                outcome.failures.append(
                    f"node {node}: rejected: the reply claims partition {claimed}, the node "
                    f"holds partition {held}"
                )
                continue
            if result.num_examples == 0:
                outcome.failures.append(f"partition {result.partition_id}: 0 examples")
                continue
            outcome.accepted.append(result)
        outcome.accepted.sort(key=lambda r: r.partition_id)
        if self.plan.uses_teachers:
            outcome.accepted = self._same_logits_shape(outcome)
            self.held_logits.remember(outcome.accepted)
        for reason in outcome.failures:
            logger.warning("round %d: %s", server_round, reason)
        if outcome.accepted and not self.plan.uploads_student:
            # logits-only: the student changes only by the server's distillation
            outcome.update = {k: torch.zeros_like(v) for k, v in self.param_template.items()}
        elif outcome.accepted:
            outcome.update, outcome.actions = aggregate_updates(
                [(r.num_examples, r.update) for r in outcome.accepted],
                [r.partition_id for r in outcome.accepted],
                self.robust_keys,
                self.robust,
            )
            if self.buffer_template:
                outcome.buffers = fedavg([(r.num_examples, r.buffers) for r in outcome.accepted])
        if outcome.accepted and self.plan.uses_teachers and self.plan.consensus is not None:
            outcome.consensus = self._round_consensus(outcome, self.plan.consensus)
        return outcome

    def _round_consensus(self, outcome: RoundOutcome, mode: str) -> Tensor:
        """The next consensus (B, K) from the accepted teachers; appends the gate's actions."""
        logits = torch.stack([cast(Tensor, r.logits) for r in outcome.accepted])  # (N, B, K)
        affinity = torch.stack([cast(Tensor, r.affinity) for r in outcome.accepted])  # (N, B)
        partition_ids = [r.partition_id for r in outcome.accepted]
        update = cast(dict[str, Tensor], outcome.update)
        if mode in COVERAGE_MODES:  # label skew: teachers vote on the classes they have seen
            counts = [cast(tuple[int, ...], r.class_counts) for r in outcome.accepted]
            soft, actions = coverage_round_consensus(
                logits,
                mode,
                torch.tensor(counts, dtype=torch.float64),  # (N, K)
                self.temperature,
                self._reference(update),
                partition_ids,
                gate=self.robust.robust_consensus,
            )
        # KD3A's modes carry their own defence (Knowledge Vote's agreement gate,
        # Consensus Focus' contribution weights); the others get the robust path
        elif self.robust.robust_consensus and mode not in KD3A_MODES:
            soft, actions = robust_round_consensus(
                logits,
                mode,
                self.temperature,
                affinity,
                self._reference(update),
                partition_ids,
                self.robust.max_share,
            )
        else:
            num_examples = torch.tensor([r.num_examples for r in outcome.accepted])
            return build_consensus(
                logits, mode, self.temperature, affinity=affinity, num_examples=num_examples
            )
        outcome.actions += actions
        return soft

    def _reference(self, update: dict[str, Tensor]) -> Tensor | None:
        """The new global student's (B, K) proxy logits, the consensus gate's reference."""
        return self.reference_fn(update) if self.reference_fn else None

    def _same_logits_shape(self, outcome: RoundOutcome) -> list[ClientResult]:
        """Accepted replies whose logits are (B, K) like the student's (or the first's)."""
        kept: list[ClientResult] = []
        for r in outcome.accepted:
            shape = tuple(cast(Tensor, r.logits).shape)  # (B, K)
            if self.num_classes is not None and shape[1] != self.num_classes:
                outcome.failures.append(
                    f"partition {r.partition_id}: rejected: teacher logits have {shape[1]} "
                    f"classes, the student has {self.num_classes}"
                )
            elif kept and shape != tuple(cast(Tensor, kept[0].logits).shape):
                first = tuple(cast(Tensor, kept[0].logits).shape)
                outcome.failures.append(
                    f"partition {r.partition_id}: rejected: teacher logits of shape {shape} "
                    f"({shape[1]} classes), partition {kept[0].partition_id} sent {first} "
                    f"({first[1]} classes)"
                )
            else:
                kept.append(r)
        return kept
