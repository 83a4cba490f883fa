"""The ServerApp's round loop: set up or resume, then rounds, then the end of the run.

Round r: :meth:`FederationPolicy.configure` (model surgery, messages) -> send and
receive -> :meth:`FederationPolicy.aggregate` (decode, validate, FedAvg in partition
order, new consensus, server distillation) -> evaluate overall and per domain ->
:meth:`RunRecorder.record_round` (metrics row, placement, checkpoint).
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

from flwr.serverapp import Grid

from feddistill import protocol as P
from feddistill.config import RunConfig
from feddistill.data import FederatedData
from feddistill.data.names import DIRICHLET_PARTITIONER_NAMES
from feddistill.heap import release_free_heap
from feddistill.learn import evaluate, few_steps_warning, resolve_device
from feddistill.server.discovery import Discovery
from feddistill.server.policy import FederationPolicy
from feddistill.server.recorder import RunRecorder
from feddistill.server.robust import robustness_columns
from feddistill.server.round_metrics import RoundMetrics, federated_round_metrics
from feddistill.server.run_data import load_run_data
from feddistill.server.teacher_logits import reused_count
from feddistill.threads import torch_threads
from feddistill.timing import reset, timed

logger = logging.getLogger(__name__)


class OutDirInUse(ValueError):
    """out-dir holds a checkpoint and the run was not asked to resume it."""


class CheckpointMismatch(OutDirInUse):
    """out-dir's checkpoint does not fit the configured student-model."""


# dirichlet-alpha at or below which teachers that freeze cost accuracy in a measurement
# (README "Label skew: 10 Dirichlet(0.1) clients": alpha 0.1, 20 rounds, seed 0)
STRONG_LABEL_SKEW = 0.3


def frozen_teachers_warning(cfg: RunConfig, plan: P.StrategyPlan) -> str | None:
    """A warning when teachers may freeze under strong label skew, else None.

    Args:
        cfg: the effective config (``teacher-rounds``, ``teacher-plateau-rounds``,
            ``partitioner``, ``dirichlet-alpha``, ``num-server-rounds``,
            ``fraction-train``).
        plan: what the strategy does (:attr:`~feddistill.protocol.StrategyPlan.freezes_teachers`).

    Returns:
        The line to show, or None when teachers train every round, the labels are not
        strongly skewed, or a client is expected to be sampled in no more than
        ``teacher-rounds`` rounds (``num-server-rounds * fraction-train``; a plateau
        needs ``teacher-plateau-rounds`` trained rounds and one more).
    """
    skewed = (
        cfg.partitioner in DIRICHLET_PARTITIONER_NAMES and cfg.dirichlet_alpha <= STRONG_LABEL_SKEW
    )
    if not (plan.freezes_teachers and skewed):
        return None
    client_rounds = cfg.num_server_rounds * cfg.fraction_train  # a client's expected rounds
    limits = [cfg.teacher_rounds] if cfg.teacher_rounds else []
    if cfg.teacher_plateau_rounds:
        limits.append(cfg.teacher_plateau_rounds + 1)
    if client_rounds <= min(limits):
        return None
    keys = " / ".join(
        f"{name}={value}"
        for name, value in (
            ("teacher-rounds", cfg.teacher_rounds),
            ("teacher-plateau-rounds", cfg.teacher_plateau_rounds),
        )
        if value
    )
    return (
        f"warning: teachers freeze ({keys}); under strong label skew (dirichlet-alpha="
        f"{cfg.dirichlet_alpha}) frozen teachers cost 2.7 points in the label-skew "
        f"benchmark (alpha 0.1, 20 rounds, seed 0): set teacher-rounds=0 (and "
        f"teacher-plateau-rounds=0) to train them every round"
    )


class FederationRun:
    """One federated run on the server: `run` executes the remaining rounds and ends it.

    The server's entry for every engine (the ServerApp, :mod:`feddistill.inprocess`):
    the strategy's overrides are resolved here once (:func:`~feddistill.protocol.effective_config`,
    as the ClientApp does) and the loop and policy read only :attr:`cfg`, the effective
    config; the recorder keeps the config as given, so run-config.json and summary.json
    show what the user asked for (and ``--resume`` starts from it).

    Args:
        cfg: the run config as given.

    Raises:
        OutDirInUse: if out-dir holds a checkpoint and ``resume`` is off, or the
            checkpoint does not fit ``student-model``.
    """

    def __init__(self, cfg: RunConfig) -> None:
        self.recorder = RunRecorder(cfg)  # writes the config as given
        self.cfg = cfg = P.effective_config(cfg)  # what the run does: all below reads it
        self.recorder.phase(f"loading data ({cfg.dataset}, {cfg.num_partitions} partitions)")
        reset()  # phase seconds of this run only (feddistill.timing)
        with timed("data_loading"):
            # from client-data.npz when `feddistill run`'s checks wrote it, else computed
            self.data: FederatedData = load_run_data(cfg)
        self.device = resolve_device(cfg.device, cfg.deterministic)
        plan = P.plan_for(cfg)  # which local models the clients train
        few = few_steps_warning(
            [len(p) for p in self.data.partitions],
            cfg.batch_size,
            local_epochs=cfg.local_epochs if plan.uploads_student else None,
            local_steps=cfg.local_steps,
            teacher_epochs=cfg.teacher_epochs if plan.uses_teachers else None,
            teacher_local_steps=cfg.teacher_local_steps,
        )
        for warning in (few, frozen_teachers_warning(cfg, plan)):
            if warning is not None:
                logger.warning("%s", warning)
                self.recorder.phase(warning)  # shown by `feddistill run` like a phase
        self.policy = FederationPolicy(cfg, self.data, self.device)
        self.strategy = self.policy.strategy
        self.start_round, self.wall_offset = self._resume()

    def _resume(self) -> tuple[int, float]:
        """(last finished round, its wall seconds) from out-dir's checkpoint; (0, 0.0) fresh."""
        cfg = self.cfg
        ckpt = self.recorder.latest_checkpoint()
        if ckpt is not None and not cfg.resume:
            raise OutDirInUse(
                f"out-dir {cfg.out_dir!r} holds a previous run (checkpoint after round "
                f"{ckpt['round']}); set resume=true to continue it, or use another out-dir"
            )
        self.recorder.save_config()
        if ckpt is None:
            return 0, 0.0
        try:
            self.policy.resume(ckpt)
        except RuntimeError as exc:
            raise CheckpointMismatch(
                f"the checkpoint in {cfg.out_dir!r} does not fit student-model="
                f"{cfg.student_model!r}: {str(exc).splitlines()[0]}"
            ) from None
        logger.info("resuming after round %d from %s", ckpt["round"], self.recorder.folder.root)
        return int(ckpt["round"]), float(ckpt["wall_seconds"])

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The metrics rows so far (column -> value)."""
        return self.recorder.rows

    @property
    def student(self) -> Any:
        """The global student."""
        return self.policy.student

    def run(self, grid: Grid, discovery: Discovery | None = None) -> dict[str, Any]:
        """Run rounds start_round+1..num_server_rounds, then end the run; return its summary.

        ``discovery``: the node -> partition query, if the caller started it already
        (the ServerApp does, before it loads this module); else it runs here.
        """
        # the server's torch threads come from the config (server-num-cpus), not from the
        # machine: its models are small, and with one thread per core a busy machine made
        # server distillation 3-12x slower (measured, README "Where the seconds go"); the
        # results no longer depend on the core count. Restored on return (in-process use).
        with torch_threads(self.cfg.server_num_cpus):
            return self._run(grid, discovery)

    def _run(self, grid: Grid, discovery: Discovery | None) -> dict[str, Any]:
        t_start = time.perf_counter() - self.wall_offset
        self.recorder.phase(f"waiting for {self.cfg.num_partitions} clients to connect")
        if discovery is None:
            discovery = Discovery(grid, self.cfg.num_partitions, self.cfg.round_timeout_s)
        self.strategy.node_partitions = discovery.result()
        self.recorder.open_tracking()
        try:
            for server_round in range(self.start_round + 1, self.cfg.num_server_rounds + 1):
                self.recorder.phase(
                    f"round {server_round}/{self.cfg.num_server_rounds}",
                    rows_done=len(self.recorder.metrics),
                )
                self.run_round(grid, server_round, t_start)
        finally:
            self.recorder.close_tracking()
        return self.finish(time.perf_counter() - t_start)

    def run_round(self, grid: Grid, server_round: int, t_start: float) -> RoundMetrics:
        """One round; raises RuntimeError if fewer than min-train-nodes clients succeed."""
        t0 = time.perf_counter()
        policy = self.policy
        sent = policy.configure(server_round, grid)
        replies = list(grid.send_and_receive(sent.messages, timeout=self.cfg.round_timeout_s))
        outcome, distill_loss = policy.aggregate(
            server_round, sent, replies, self.cfg.round_timeout_s
        )
        with timed("evaluation"):
            evaluation = evaluate(
                policy.student,
                self.data.splits.test_x,
                self.data.splits.test_y,
                self.device,
                self.data.test_domains,
                target_domains=self.data.target_domains,
            )
        metrics = self.recorder.metrics
        m = federated_round_metrics(
            server_round,
            evaluation,
            outcome,
            sent,
            metrics[-1] if metrics else None,
            policy.fp32_update_bytes,
        )
        m.server_distill_loss = distill_loss
        if policy.mask.enabled or self.cfg.channel_pruning_ratio > 0:
            m.student_parameters = policy.student_parameters()
            m.client_seconds_mean, m.student_seconds_mean = (
                sum(r.metrics.get(name, 0.0) for r in outcome.accepted) / len(outcome.accepted)
                for name in ("client_seconds", "student_seconds")
            )
        if policy.mask.enabled:
            m.global_sparsity, m.downlink_mask_bytes = policy.mask.sparsity, sent.mask_bytes
        if policy.plan.freezes_teachers:  # issue 11: frozen teachers that sent no logits
            m.logits_reused = reused_count(outcome.accepted)
        robust = robustness_columns(outcome.actions, outcome.failures)
        m.robust_events = cast(list[dict[str, int | str]], robust.pop("robust_events"))
        m.robust_counts = {k: cast(int, v) for k, v in robust.items()}
        m.round_seconds = time.perf_counter() - t0
        m.wall_seconds = time.perf_counter() - t_start
        placement = [{"partition_id": r.partition_id, **r.placement} for r in outcome.accepted]
        self.recorder.record_round(m, policy.checkpoint_state(), placement)
        release_free_heap()  # what this round freed, before the clients' next round
        logger.info(
            "round %d: accuracy %.4f loss %.4f uplink %d B downlink %d B total %.1fx "
            "below fp32 FedAvg failed %d",
            server_round,
            evaluation["accuracy"],
            evaluation["loss"],
            m.uplink_bytes,
            m.downlink_bytes,
            m.total_ratio_vs_fedavg_fp32,
            m.failed,
        )
        return m

    def finish(self, wall_seconds: float) -> dict[str, Any]:
        """Export the student, write report.md, plots and (last) summary.json."""
        mask = self.policy.mask
        return self.recorder.finish(
            self.data,
            self.policy.student,
            wall_seconds,
            # a sparse run exports its own trained mask (pruning more only if asked)
            export_sparsity=max(self.cfg.export_sparsity, mask.sparsity),
            compress=mask.enabled,
        )
