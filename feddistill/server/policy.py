"""FederationPolicy: what the server does in a round, and the state it keeps between rounds.

Before the round (:meth:`FederationPolicy.configure`): the consensus of the last round
goes down with the global student (whole, or as per-client deltas against replicas),
after any scheduled model surgery (channel pruning, mask growth). After it
(:meth:`FederationPolicy.aggregate`): decode, validate and average the replies
(:class:`~feddistill.server.strategy.FedDistill`), build the next consensus, apply the
update, and run the server's FedDF distillation. The round loop only calls these two.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from torch import Tensor

from feddistill import protocol as P
from feddistill.compression import CompressionSpec
from feddistill.compression.consensus_payload import encode_consensus
from feddistill.compression.downlink import ReplicaBook
from feddistill.compression.pruning import resize_to_state
from feddistill.config import RunConfig
from feddistill.data import FederatedData
from feddistill.distill.subset import proxy_subset, subset_rows
from feddistill.learn import predict_logits
from feddistill.models import buffer_names, build_model
from feddistill.server.aggregate import apply_update
from feddistill.server.downlink_round import downlink_config
from feddistill.server.robust import robust_policy
from feddistill.server.server_distill import ensemble_soft_labels, server_distill
from feddistill.server.sparse import GlobalMask
from feddistill.server.strategy import FedDistill, RoundOutcome
from feddistill.server.surgery import (
    channel_pruning_due,
    importance_gradients,
    prune_global_channels,
    retarget,
)
from feddistill.timing import timed

logger = logging.getLogger(__name__)


def model_state(model: torch.nn.Module) -> dict[str, Tensor]:
    """A detached CPU copy of `model`'s state_dict."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@dataclass
class SentRound:
    """What went down in one round: the messages and their exact byte counts."""

    messages: list[Message]
    global_state: dict[str, Tensor]  # the student the clients start from
    consensus_bytes: int = 0  # per sampled client
    student_bytes: dict[int, int] = field(default_factory=dict)  # partition -> delta bytes
    mask_bytes: int = 0  # all clients together
    uploads_student: bool = True  # False: logits-only, no student went down

    def dense_student_bytes(self) -> int:
        """Bytes of the whole global student as sent uncompressed."""
        return sum(v.numel() * v.element_size() for v in self.global_state.values())


class FederationPolicy:
    """The server's side of a FedDistill run between and within rounds.

    Args:
        cfg: the effective run config (:func:`feddistill.protocol.effective_config`:
            the strategy's overrides applied), as :class:`FederationRun` passes it.
        data: the run's splits and partitions.
        device: where the server evaluates and distills ("cpu", "cuda").
    """

    def __init__(self, cfg: RunConfig, data: FederatedData, device: torch.device) -> None:
        self.cfg, self.data, self.device = cfg, data, device
        self.plan = P.plan_for(cfg)
        splits = data.splits
        self.student = build_model(
            cfg.student_model, splits.in_shape, splits.num_classes, seed=cfg.seed
        )
        self.strategy = FedDistill(
            model_state(self.student),
            self.plan,
            cfg.temperature,
            cfg.seed,
            cfg.fraction_train,
            cfg.min_train_nodes,
            buffer_keys=buffer_names(self.student),
            num_classes=splits.num_classes,
            proxy_size=len(splits.proxy_x),
            robust=robust_policy(cfg),
            robust_keys=frozenset(name for name, _ in self.student.named_parameters()),
        )
        self.strategy.reference_fn = self.reference_logits
        self.strategy.logits_top_m = cfg.logits_top_m  # top-m teacher logits rows (issue 11)
        self.replicas: ReplicaBook | None = None  # per-client replicas (downlink deltas)
        params = {name for name, _ in self.student.named_parameters()}
        if cfg.downlink_bit_width < 32 or cfg.downlink_density < 1.0:
            self.replicas = ReplicaBook(
                CompressionSpec(
                    density=cfg.downlink_density,
                    bit_width=cfg.downlink_bit_width,
                    error_feedback=False,
                ),
                initial={k: v for k, v in model_state(self.student).items() if k in params},
            )
        self.mask = GlobalMask(cfg, self.student)  # in-federation sparsity (issue 12)
        self.proxy_idx = torch.arange(len(splits.proxy_x))  # this round's proxy rows
        self.consensus: Tensor | None = None  # (B, K) soft labels of the last round
        self.fp32_update_bytes = sum(
            v.numel() * 4 for v in self.strategy.template.values() if v.is_floating_point()
        )

    def resume(self, ckpt: dict[str, Any]) -> None:
        """Take the student, consensus, replicas, mask and held logits from a checkpoint.

        Raises:
            RuntimeError: if the checkpoint's student does not fit ``student-model``.
        """
        resize_to_state(self.student, ckpt["student"])  # a channel-pruned student
        self.student.load_state_dict(ckpt["student"])
        retarget(self.strategy, model_state(self.student), buffer_names(self.student))
        self.consensus = ckpt["consensus"]
        if self.replicas is not None:
            self.replicas.replicas = dict(ckpt.get("replicas", {}))
        if "mask" in ckpt:
            self.mask.load_state_dict(ckpt["mask"])
        self.strategy.held_logits.load_state_dict(ckpt.get("held_logits", {}))

    def checkpoint_state(self) -> dict[str, Any]:
        """What :meth:`resume` needs to continue after this round."""
        return {
            "student": model_state(self.student),
            "consensus": self.consensus,
            **({"mask": self.mask.state_dict()} if self.mask.enabled else {}),
            "replicas": self.replicas.state() if self.replicas is not None else {},
            **(
                {"held_logits": self.strategy.held_logits.state_dict()}
                if self.plan.freezes_teachers
                else {}
            ),
        }

    def configure(self, server_round: int, grid: Grid) -> SentRound:
        """Model surgery due this round, then one train message per sampled client."""
        config = ConfigRecord()
        if self.plan.freezes_teachers:  # whose frozen-teacher logits the server holds
            config[P.LOGITS_HELD] = self.strategy.held_logits.config_value()
        consensus_bytes = b""
        if self.consensus is not None and self.plan.uses_kd:
            # fp16 on the downlink: soft labels need finer steps than 8 bits give.
            with timed("encode"):
                consensus_bytes = encode_consensus(self.consensus, self.cfg.consensus_bit_width)
            config[P.CONSENSUS] = consensus_bytes
        if channel_pruning_due(self.cfg, server_round):
            removed = prune_global_channels(
                self.student,
                self.data.splits.proxy_x[:1],
                self.cfg.channel_pruning_ratio,
                self.cfg.channel_pruning_norm,
                importance_gradients(  # Taylor: KD to last round's consensus (issue 12)
                    self.cfg, self.data.splits.proxy_x, self.consensus, server_round
                ),
            )
            retarget(self.strategy, model_state(self.student), buffer_names(self.student))
            logger.info("round %d: channel pruning removed %d parameters", server_round, removed)
        self.mask.step(server_round, self.student)
        self.strategy.masks, self.strategy.mask_version = self.mask.active(), self.mask.version
        global_state = model_state(self.student)
        sent = SentRound(
            [], global_state, len(consensus_bytes), uploads_student=self.plan.uploads_student
        )
        arrays = ArrayRecord(global_state)
        if not self.plan.uploads_student:
            arrays = ArrayRecord()  # logits-only: only the consensus goes down
        elif self.replicas is not None:
            arrays = ArrayRecord()
            replicas = self.replicas
            self.strategy.per_partition_config = lambda p: downlink_config(
                replicas,
                self.strategy.buffer_template,
                p,
                server_round,
                global_state,
                sent.student_bytes,
            )
        sent.messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        sent.mask_bytes = self.mask.attach(sent.messages, self.strategy.node_partitions)
        return sent

    def aggregate(
        self, server_round: int, sent: SentRound, replies: list[Message], timeout_s: float
    ) -> tuple[RoundOutcome, float]:
        """Apply the round's replies to the global student.

        Returns:
            The outcome (accepted replies, failures, update, consensus) and the
            server distillation's loss (0.0 when the strategy has none).

        Raises:
            RuntimeError: if fewer than min-train-nodes clients succeeded.
        """
        splits = self.data.splits
        self.proxy_idx = proxy_subset(
            len(splits.proxy_x), self.cfg.logits_subset, self.cfg.seed, server_round
        )
        self.strategy.proxy_size = len(self.proxy_idx)  # this round's teacher logits (b, K)
        subset = len(self.proxy_idx) < len(splits.proxy_x)
        self.strategy.proxy_rows = self.proxy_idx if subset else None
        with timed("server_aggregation"):  # includes "decode_server"
            outcome = self.strategy.aggregate_round(server_round, replies)
        if self.replicas is not None:
            self.replicas.commit(r.partition_id for r in outcome.accepted)
        sampled = len(sent.messages)
        if len(replies) < sampled:
            outcome.failures.append(
                f"{sampled - len(replies)} client(s) did not reply in {timeout_s:.0f} s"
            )
        if len(outcome.accepted) < self.cfg.min_train_nodes or outcome.update is None:
            raise RuntimeError(
                f"round {server_round}: only {len(outcome.accepted)} of {sampled} sampled clients "
                f"succeeded, fewer than min-train-nodes={self.cfg.min_train_nodes}; failures: {outcome.failures}"
            )
        global_state = sent.global_state
        self.student.load_state_dict(apply_update(global_state, outcome.update, outcome.buffers))
        self.consensus = outcome.consensus
        with timed("server_distillation"):
            distill_loss = self.distill(server_round, global_state, outcome)
        if self.mask.enabled:  # server distillation must not revive pruned weights
            self.student.load_state_dict(self.mask.apply(model_state(self.student)))
            self.mask.accepted([r.partition_id for r in outcome.accepted])
        return outcome, distill_loss

    def distill(
        self, server_round: int, global_state: dict[str, Tensor], outcome: RoundOutcome
    ) -> float:
        """FedDF: distill the new global student to the ensemble on the proxy set.

        Only in rounds 1..``server-distill-rounds`` when that is set (> 0); returns the
        distillation loss, 0.0 in a round without it.
        """
        epochs = self.plan.server_distill_epochs
        last = self.cfg.server_distill_rounds
        if epochs <= 0 or (last and server_round > last):
            return 0.0
        splits = self.data.splits
        proxy = subset_rows(splits.proxy_x, self.proxy_idx)  # the round's rows
        target = outcome.consensus
        if target is None:  # FedDF proper: the ensemble of the clients' own students
            target = ensemble_soft_labels(
                self.cfg.student_model,
                splits.in_shape,
                global_state,
                outcome.accepted,
                proxy,
                splits.num_classes,
                self.cfg.temperature,
                self.device,
            )
        return server_distill(
            self.student,
            proxy,
            target,
            temperature=self.cfg.temperature,
            epochs=epochs,
            learning_rate=self.cfg.learning_rate,
            batch_size=self.cfg.batch_size,
            device=self.device,
            seed=self.cfg.seed,
            deterministic=self.cfg.deterministic,
        )

    def reference_logits(self, update: dict[str, Tensor]) -> Tensor:
        """(B, K) logits on the proxy set of the global student after `update`."""
        splits = self.data.splits
        model = build_model(self.cfg.student_model, splits.in_shape, splits.num_classes)
        state = apply_update(model_state(self.student), update)
        resize_to_state(model, state)
        model.load_state_dict(state)
        return predict_logits(model, subset_rows(splits.proxy_x, self.proxy_idx), self.device)

    def student_parameters(self) -> int:
        """Parameters of the global student now (it shrinks with channel pruning)."""
        return sum(p.numel() for p in self.student.parameters())
