"""The ServerApp's round loop, split into named steps.

Round r: send the global student and last consensus -> collect replies -> decode,
validate, FedAvg in partition order, new consensus -> optional FedDF distillation ->
evaluate overall and per domain -> write the metrics row and a checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, cast

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from torch import Tensor

from feddistill import protocol as P
from feddistill.clients.teacher_freeze import caches_upload
from feddistill.clients.train import few_steps_warning, predict_logits, resolve_device
from feddistill.cluster.remote import distill_on_gpu_node
from feddistill.compression import UpdateCompression, encode_tensors
from feddistill.compression.downlink import ReplicaBook
from feddistill.compression.pruning import resize_to_state
from feddistill.config import RunConfig
from feddistill.data import FederatedData, prepare_federated_data
from feddistill.distill import consensus as build_consensus
from feddistill.distill.kd3a import kept_samples
from feddistill.distill.subset import proxy_subset, subset_rows
from feddistill.models import buffer_names, build_model
from feddistill.progress import record_phase
from feddistill.server.aggregate import apply_update
from feddistill.server.checkpoint import load_latest_checkpoint, save_checkpoint
from feddistill.server.domain_results import (
    append_domain_report,
    domain_summary,
    plot_domain_curves,
)
from feddistill.server.downlink_round import downlink_columns, downlink_config, total_ratio_column
from feddistill.server.evaluate import evaluate_by_domain
from feddistill.server.logits_only import client_accuracy_columns, latest_client_accuracy
from feddistill.server.plots import plot_run
from feddistill.server.results import (
    save_run_config,
    write_report,
    write_rows,
    write_summary,
)
from feddistill.server.robust import robust_policy, robustness_columns
from feddistill.server.sparse import GlobalMask
from feddistill.server.strategy import FedDistill, RoundOutcome
from feddistill.server.surgery import channel_pruning_due, prune_global_channels, retarget
from feddistill.server.teacher_logits import reuse_columns
from feddistill.timing import flush, reset, timed

logger = logging.getLogger(__name__)
QUERY_PARTITION = "partition"


class OutDirInUse(ValueError):
    """out-dir holds a checkpoint and the run was not asked to resume it."""


def discover_partitions(grid: Grid, num_partitions: int, timeout_s: float) -> dict[int, int]:
    """Ask every connected node for its partition id: node id -> partition id.

    Waits (up to `timeout_s`) until `num_partitions` nodes are connected.

    Raises:
        RuntimeError: if too few nodes connect or answer, or two claim one partition.
    """
    deadline = time.monotonic() + timeout_s
    while len(list(grid.get_node_ids())) < num_partitions:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(list(grid.get_node_ids()))} of num-partitions={num_partitions} "
                f"nodes connected within {timeout_s:.0f} s"
            )
        time.sleep(0.5)
    nodes = sorted(grid.get_node_ids())
    messages = [
        Message(
            RecordDict({P.CONFIG: ConfigRecord({"ask": QUERY_PARTITION})}), n, MessageType.QUERY
        )
        for n in nodes
    ]
    mapping: dict[int, int] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        if reply.has_error():
            logger.warning(
                "node %d did not report its partition: %s",
                reply.metadata.src_node_id,
                (reply.error.reason or "")[:200],
            )
            continue
        pid = int(reply.content[P.METRICS][P.PARTITION_ID])  # type: ignore[arg-type]
        if not 0 <= pid < num_partitions:
            logger.warning(
                "node %d has partition-id %d outside [0, %d); it is not used",
                reply.metadata.src_node_id,
                pid,
                num_partitions,
            )
            continue
        if pid in mapping.values():
            raise RuntimeError(
                f"two nodes claim partition {pid}; give each SuperNode its own partition-id"
            )
        mapping[reply.metadata.src_node_id] = pid
    if len(mapping) < num_partitions:
        raise RuntimeError(f"only {len(mapping)} of {num_partitions} nodes reported a partition id")
    return mapping


def write_placement(out: Path, server_round: int, outcome: RoundOutcome) -> None:
    """Append one line per accepted client to placement.jsonl: which node ran it."""
    with (out / "placement.jsonl").open("a") as fh:
        for r in outcome.accepted:
            fh.write(
                json.dumps({"round": server_round, "partition_id": r.partition_id, **r.placement})
                + "\n"
            )


def _state(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _record_bytes(state: dict[str, Tensor]) -> int:
    return sum(v.numel() * v.element_size() for v in state.values())


class FederationRun:
    """State of one federated run on the server; `run` executes the remaining rounds."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.timeout_s = cfg.round_timeout_s
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        record_phase(self.out, f"loading data ({cfg.dataset}, {cfg.num_partitions} partitions)")
        reset()  # phase seconds of this run only (feddistill.timing)
        with timed("data_loading"):
            self.data: FederatedData = prepare_federated_data(cfg)
        self.device = resolve_device(cfg.device)
        few = few_steps_warning(
            [len(p) for p in self.data.partitions],
            cfg.local_epochs,
            cfg.local_steps,
            cfg.batch_size,
        )
        if few is not None:
            logger.warning("%s", few)
            record_phase(self.out, few)  # shown by `feddistill run` like a phase
        self.plan = P.plan_for(cfg)
        splits = self.data.splits
        self.student = build_model(
            cfg.student_model, splits.in_shape, splits.num_classes, seed=cfg.seed
        )
        self.strategy = FedDistill(
            _state(self.student),
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
        self.strategy.logits_top_m = cfg.logits_top_m  # issue 11 hook: top-m logits rows
        self.replicas: ReplicaBook | None = None  # per-client replicas (downlink deltas)
        params = {name for name, _ in self.student.named_parameters()}
        if cfg.downlink_bit_width < 32 or cfg.downlink_density < 1.0:
            self.replicas = ReplicaBook(
                UpdateCompression(
                    density=cfg.downlink_density,
                    bit_width=cfg.downlink_bit_width,
                    error_feedback=False,
                ),
                initial={k: v for k, v in _state(self.student).items() if k in params},
            )
        self.mask = GlobalMask(cfg, self.student)  # in-federation sparsity (issue 12)
        self.rows: list[dict[str, Any]] = []
        self.proxy_idx = torch.arange(len(splits.proxy_x))  # this round's proxy rows
        self.consensus: Tensor | None = None
        self.start_round = 0
        self.wall_offset = 0.0
        ckpt = load_latest_checkpoint(self.out / "checkpoints")
        if ckpt is not None and not cfg.resume:
            raise OutDirInUse(
                f"out-dir {cfg.out_dir!r} holds a previous run (checkpoint after round "
                f"{ckpt['round']}); set resume=true to continue it, or use another out-dir"
            )
        if not (self.out / "run-config.json").is_file():
            save_run_config(cfg)
        if ckpt is not None:
            try:
                resize_to_state(self.student, ckpt["student"])  # a channel-pruned student
                self.student.load_state_dict(ckpt["student"])
                retarget(self.strategy, _state(self.student), buffer_names(self.student))
            except RuntimeError as exc:
                raise OutDirInUse(
                    f"the checkpoint in {cfg.out_dir!r} does not fit student-model="
                    f"{cfg.student_model!r}: {str(exc).splitlines()[0]}"
                ) from None
            self.rows, self.consensus = ckpt["rows"], ckpt["consensus"]
            if self.replicas is not None:
                self.replicas.replicas = dict(ckpt.get("replicas", {}))
            if "mask" in ckpt:
                self.mask.load_state_dict(ckpt["mask"])
            self.strategy.held_logits.load_state_dict(ckpt.get("held_logits", {}))  # issue 11
            self.start_round, self.wall_offset = int(ckpt["round"]), float(ckpt["wall_seconds"])
            logger.info(
                "resuming after round %d from %s", self.start_round, self.out / "checkpoints"
            )
        self.fp32_update_bytes = sum(
            v.numel() * 4 for v in self.strategy.template.values() if v.is_floating_point()
        )

    def run(self, grid: Grid) -> dict[str, Any]:
        """Run rounds start_round+1..num_server_rounds, then write the final results."""
        from feddistill.server.tracking import RunTracker

        t_start = time.perf_counter() - self.wall_offset
        record_phase(self.out, f"waiting for {self.cfg.num_partitions} clients to connect")
        self.strategy.node_partitions = discover_partitions(
            grid, self.cfg.num_partitions, self.timeout_s
        )
        tracker = RunTracker(self.out, self.cfg.to_kebab(), run_name=self.cfg.strategy)
        try:
            for server_round in range(self.start_round + 1, self.cfg.num_server_rounds + 1):
                record_phase(
                    self.out,
                    f"round {server_round}/{self.cfg.num_server_rounds}",
                    rows_done=len(self.rows),
                )
                tracker.log_round(self.run_round(grid, server_round, t_start))
        finally:
            tracker.close()
        return self.finish(time.perf_counter() - t_start)

    def run_round(self, grid: Grid, server_round: int, t_start: float) -> dict[str, Any]:
        """One round; raises RuntimeError if fewer than min-train-nodes clients succeed."""
        t0 = time.perf_counter()
        config = ConfigRecord()
        if caches_upload(self.cfg):  # issue 11 hook: whose frozen-teacher logits are held
            config[P.LOGITS_HELD] = self.strategy.held_logits.config_value()
        consensus_bytes = b""
        if self.consensus is not None and self.plan.uses_kd:
            # fp16 on the downlink: soft labels need finer steps than 8 bits give.
            with timed("encode"):
                consensus_bytes = encode_tensors(
                    {P.SOFT_LABELS_TENSOR: self.consensus}, bit_width=self.cfg.consensus_bit_width
                )
            config[P.CONSENSUS] = consensus_bytes
        if channel_pruning_due(self.cfg, server_round):
            removed = prune_global_channels(
                self.student,
                self.data.splits.proxy_x[:1],
                self.cfg.channel_pruning_ratio,
                self.cfg.channel_pruning_norm,
            )
            retarget(self.strategy, _state(self.student), buffer_names(self.student))
            logger.info("round %d: channel pruning removed %d parameters", server_round, removed)
        self.mask.step(server_round, self.student)
        self.strategy.masks, self.strategy.mask_version = self.mask.active(), self.mask.version
        global_state = _state(self.student)
        arrays = ArrayRecord(global_state)
        student_bytes: dict[int, int] = {}  # partition -> exact student bytes sent down
        if not self.plan.uploads_student:
            arrays = ArrayRecord()  # logits-only: only the consensus goes down
        elif self.replicas is not None:
            arrays = ArrayRecord()
            self.strategy.per_partition_config = lambda p: downlink_config(
                cast(ReplicaBook, self.replicas),
                self.strategy.buffer_template,
                p,
                server_round,
                global_state,
                student_bytes,
            )
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        mask_bytes = self.mask.attach(messages, self.strategy.node_partitions)
        replies = list(grid.send_and_receive(messages, timeout=self.timeout_s))
        splits = self.data.splits
        self.proxy_idx = proxy_subset(
            len(splits.proxy_x), self.cfg.logits_subset, self.cfg.seed, server_round
        )
        self.strategy.proxy_size = len(self.proxy_idx)  # this round's teacher logits (b, K)
        with timed("server_aggregation"):  # includes "decode_server"
            outcome = self.strategy.aggregate_round(server_round, replies)
        if self.replicas is not None:
            self.replicas.commit(r.partition_id for r in outcome.accepted)
        if len(replies) < len(messages):
            outcome.failures.append(
                f"{len(messages) - len(replies)} client(s) did not reply in {self.timeout_s:.0f} s"
            )
        if len(outcome.accepted) < self.cfg.min_train_nodes or outcome.update is None:
            raise RuntimeError(
                f"round {server_round}: only {len(outcome.accepted)} of {len(messages)} sampled clients "
                f"succeeded, fewer than min-train-nodes={self.cfg.min_train_nodes}; failures: {outcome.failures}"
            )
        self.student.load_state_dict(apply_update(global_state, outcome.update, outcome.buffers))
        self.consensus = outcome.consensus
        with timed("server_distillation"):
            distill_loss = self.server_distill(global_state, outcome)
        if self.mask.enabled:  # server distillation must not revive pruned weights
            self.student.load_state_dict(self.mask.apply(_state(self.student)))
            self.mask.accepted([r.partition_id for r in outcome.accepted])
        with timed("evaluation"):
            metrics = evaluate_by_domain(
                self.student,
                self.data.splits.test_x,
                self.data.splits.test_y,
                self.data.test_domains,
                self.device,
                target_domains=self.data.target_domains,
            )
        row = self.make_row(
            server_round, metrics, outcome, len(messages), global_state, consensus_bytes
        )
        if student_bytes or not self.plan.uploads_student:
            downlink_columns(row, self.rows, student_bytes, len(messages), len(consensus_bytes))
        total_ratio_column(row, self.rows, self.fp32_update_bytes)
        row.update(client_accuracy_columns(outcome))
        row.update(reuse_columns(outcome.accepted))  # issue 11 hook: frozen teachers
        row["server_distill_loss"] = distill_loss
        if self.mask.enabled or self.cfg.channel_pruning_ratio > 0:
            row["student_parameters"] = sum(p.numel() for p in self.student.parameters())
            for name in ("client_seconds", "student_seconds"):
                row[f"{name}_mean"] = sum(r.metrics.get(name, 0.0) for r in outcome.accepted) / len(
                    outcome.accepted
                )
        if self.mask.enabled:
            row["global_sparsity"] = self.mask.sparsity
            row["downlink_mask_bytes"] = mask_bytes
            row["downlink_bytes"] += mask_bytes
            row["cumulative_downlink_bytes"] += mask_bytes
        row.update(robustness_columns(outcome.actions, outcome.failures))
        row["round_seconds"] = time.perf_counter() - t0
        row["wall_seconds"] = time.perf_counter() - t_start
        self.rows.append(row)
        with timed("checkpoint_io"):
            write_rows(self.out, self.rows)
            write_placement(self.out, server_round, outcome)
            save_checkpoint(
                self.out / "checkpoints",
                server_round,
                {
                    "student": _state(self.student),
                    "consensus": self.consensus,
                    "rows": self.rows,
                    "wall_seconds": row["wall_seconds"],
                    **({"mask": self.mask.state_dict()} if self.mask.enabled else {}),
                    "replicas": self.replicas.state() if self.replicas is not None else {},
                    "held_logits": self.strategy.held_logits.state_dict(),  # issue 11
                },
            )
        flush(self.out)
        logger.info(
            "round %d: accuracy %.4f loss %.4f uplink %d B downlink %d B total %.1fx "
            "below fp32 FedAvg failed %d",
            server_round,
            row["accuracy"],
            row["loss"],
            row["uplink_bytes"],
            row["downlink_bytes"],
            row["total_ratio_vs_fedavg_fp32"],
            row["failed"],
        )
        return row

    def reference_logits(self, update: dict[str, Tensor]) -> Tensor:
        """(B, K) logits on the proxy set of the global student after `update`."""
        splits = self.data.splits
        model = build_model(self.cfg.student_model, splits.in_shape, splits.num_classes)
        state = apply_update(_state(self.student), update)
        resize_to_state(model, state)
        model.load_state_dict(state)
        return predict_logits(model, subset_rows(splits.proxy_x, self.proxy_idx), self.device)

    def server_distill(self, global_state: dict[str, Tensor], outcome: RoundOutcome) -> float:
        """FedDF: distill the new global student to the ensemble on the proxy set."""
        epochs = self.plan.server_distill_epochs
        if epochs <= 0:
            return 0.0
        target = outcome.consensus
        proxy = subset_rows(self.data.splits.proxy_x, self.proxy_idx)  # the round's rows
        if target is None:  # FedDF proper: the ensemble of the clients' own students
            splits = self.data.splits
            client_model = build_model(self.cfg.student_model, splits.in_shape, splits.num_classes)
            resize_to_state(client_model, global_state)
            logits = []
            for result in outcome.accepted:
                client_model.load_state_dict(
                    apply_update(global_state, result.update, result.buffers)
                )
                logits.append(predict_logits(client_model, proxy, self.device))
            target = build_consensus(
                torch.stack(logits), "mean", self.cfg.temperature
            )  # (N,B,K) -> (B,K)
        keep = kept_samples(target)  # (B,): KD3A modes drop unconfident samples (zero rows)
        if not bool(keep.any()):
            return 0.0
        # On a GPU node of the Ray cluster when this process has no GPU and one is free.
        return distill_on_gpu_node(
            self.student,
            proxy[keep],
            target[keep],
            num_gpus=0.1,
            temperature=self.cfg.temperature,
            epochs=epochs,
            lr=self.cfg.learning_rate * 0.1,
            batch_size=self.cfg.batch_size,
            device=self.device,
            seed=self.cfg.seed,
        )

    def make_row(
        self,
        server_round: int,
        metrics: dict[str, float],
        outcome: RoundOutcome,
        sampled: int,
        global_state: dict[str, Tensor],
        consensus_bytes: bytes,
    ) -> dict[str, Any]:
        """The metrics row of one round (bytes are exact payload lengths)."""
        uplink = sum(r.uplink_bytes for r in outcome.accepted)
        downlink_per_client = _record_bytes(global_state) + len(consensus_bytes)
        prev = self.rows[-1] if self.rows else {}
        cum_up = int(prev.get("cumulative_uplink_bytes", 0)) + uplink
        cum_fp32 = int(prev.get("cumulative_fedavg_fp32_bytes", 0)) + self.fp32_update_bytes * len(
            outcome.accepted
        )
        teacher = [
            r.metrics["teacher_train_accuracy"]
            for r in outcome.accepted
            if "teacher_train_accuracy" in r.metrics
        ]
        return {
            "round": server_round,
            **metrics,
            "teacher_accuracy": sum(teacher) / len(teacher) if teacher else "",
            "student_train_loss": sum(r.metrics.get("student_loss", 0.0) for r in outcome.accepted)
            / len(outcome.accepted),
            "sampled": sampled,
            "accepted": len(outcome.accepted),
            "failed": sampled - len(outcome.accepted),
            "uplink_bytes": uplink,
            "uplink_update_bytes": sum(
                int(r.metrics.get("update_bytes", 0)) for r in outcome.accepted
            ),
            "uplink_logits_bytes": sum(
                int(r.metrics.get("logits_bytes", 0)) for r in outcome.accepted
            ),
            "uplink_bytes_per_client": uplink // max(1, len(outcome.accepted)),
            "downlink_bytes": downlink_per_client * sampled,
            "downlink_bytes_per_client": downlink_per_client,
            "cumulative_uplink_bytes": cum_up,
            "cumulative_downlink_bytes": int(prev.get("cumulative_downlink_bytes", 0))
            + downlink_per_client * sampled,
            "cumulative_fedavg_fp32_bytes": cum_fp32,
            "ratio_vs_fedavg_fp32": cum_fp32 / max(1, cum_up),
        }

    def finish(self, wall_seconds: float) -> dict[str, Any]:
        """summary.json, report.md, plots and the exported student."""
        from feddistill.compression import export_student  # heavy (quantization backends)

        splits = self.data.splits
        record_phase(
            self.out,
            f"exporting student ({self.cfg.student_model}, int8 and pruned)",
            rows_done=len(self.rows),
        )
        with timed("export"):
            export = export_student(
                self.student,
                splits.proxy_x,
                splits.test_x,
                splits.test_y,
                self.out / "student",
                # a sparse run exports its own trained mask (pruning more only if asked)
                sparsity=max(self.cfg.export_sparsity, self.mask.sparsity),
                compress=self.mask.enabled,
            )
        last = self.rows[-1]
        summary = build_summary(self.cfg, self.rows, wall_seconds, status="completed")
        summary["student_export"] = export
        summary["final_worst_domain_accuracy"] = last.get("worst_domain_accuracy")
        summary.update(domain_summary(self.data, self.rows))
        record_phase(self.out, "writing report.md and plots", rows_done=len(self.rows))
        with timed("report_plots"):
            write_report(self.out, summary, self.rows)
            plot_run(self.out, self.rows, summary)
            append_domain_report(self.out, summary)
            plot_domain_curves(self.out, self.data, self.rows)
            save_label_plot(self.data, self.cfg, self.out)
        flush(self.out)
        # last: summary.json tells `feddistill run` the run is over, and it then stops
        # every process of the run, this one included
        write_summary(self.out, summary)
        return summary


def save_label_plot(data: FederatedData, cfg: RunConfig, out: Path) -> None:
    """label_distribution.png: samples per class of every client's partition."""
    from feddistill.data.cli_partition import save_plot

    title = f"{cfg.dataset}: {cfg.partitioner} partitions"
    save_plot(data.partition_label_counts(), out / "label_distribution.png", title)


def build_summary(
    cfg: RunConfig, rows: list[dict[str, Any]], wall_seconds: float, status: str
) -> dict[str, Any]:
    """The summary.json fields every run has."""
    last = rows[-1] if rows else {}
    return {
        "status": status,
        "strategy": cfg.strategy,
        "rounds": len(rows),
        "final_accuracy": last.get("accuracy"),
        "best_accuracy": max((r["accuracy"] for r in rows), default=None),
        "uplink_bytes": last.get("cumulative_uplink_bytes", 0),
        "downlink_bytes": last.get("cumulative_downlink_bytes", 0),
        "uplink_ratio_vs_fedavg_fp32": last.get("ratio_vs_fedavg_fp32"),
        "total_ratio_vs_fedavg_fp32": last.get("total_ratio_vs_fedavg_fp32"),
        **latest_client_accuracy(rows),
        "wall_seconds": wall_seconds,
        "config": cfg.to_kebab(),
    }
