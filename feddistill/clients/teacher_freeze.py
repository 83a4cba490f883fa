"""When a client's teacher stops training, and what it uploads then (plain PyTorch).

A teacher is *frozen* once it has trained in ``teacher-rounds`` of the rounds its client
was sampled in (a client's own count: with partial participation a client first
sampled late still trains R times), or when its accuracy on a
held-out share of the client's own data (``VALIDATION_FRACTION``) has not beaten its
best for ``teacher-plateau-rounds`` trained rounds in a row (early stopping's patience
rule: Prechelt, "Early Stopping - But When?", 1998). A frozen teacher's logits no longer
change, so the client keeps them (on the whole proxy set, so that they serve every
later round's ``logits-subset`` rows) and sends nothing new: an empty logits payload with
``logits_reused = 1``; the server reuses the logits it holds for that client
(:mod:`feddistill.server.teacher_logits`). When the server says it holds none (the
client's last upload was lost or rejected, or a ``logits-subset`` < 1 round carried only
some rows) the client sends its cached whole-proxy payload once, marked
``logits_whole_proxy = 1``.
:class:`TeacherFreeze` is what :func:`~feddistill.clients.round.run_client_round` calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from feddistill.config import RunConfig
from feddistill.learn import evaluate
from feddistill.protocol import LOGITS_REUSED, LOGITS_WHOLE_PROXY, StrategyPlan
from feddistill.timing import timed

__all__ = [
    "LOGITS_REUSED",
    "LOGITS_WHOLE_PROXY",
    "Plateau",
    "TeacherFreeze",
    "frozen_upload",
    "teacher_frozen",
]

VALIDATION_FRACTION = 0.1  # share of a client's samples held out to detect a plateau


@dataclass(frozen=True)
class Plateau:
    """Patience bookkeeping of one teacher (kept in the client's state).

    Attributes:
        best: best local validation accuracy so far, in [0, 1] (-1: none yet).
        stale: trained rounds in a row without beating ``best``.
    """

    best: float = -1.0
    stale: int = 0

    def step(self, accuracy: float) -> Plateau:
        """This round's validation accuracy -> the new bookkeeping."""
        if accuracy > self.best:
            return Plateau(accuracy, 0)
        return Plateau(self.best, self.stale + 1)

    def as_state(self) -> dict[str, float]:
        """For torch.save in the client's state."""
        return {"best": self.best, "stale": float(self.stale)}

    @staticmethod
    def from_state(state: dict | None) -> Plateau:
        """Inverse of :meth:`as_state`; a fresh one for None."""
        if not state:
            return Plateau()
        return Plateau(float(state["best"]), int(state["stale"]))


TRAINED_ROUNDS = "teacher_trained_rounds"  # client-state key: rounds the teacher trained in


def teacher_frozen(cfg: RunConfig, state: dict, server_round: int) -> bool:
    """Whether this client's teacher is frozen in ``server_round``.

    Args:
        cfg: the run's config (``teacher-rounds``, ``teacher-plateau-rounds``).
        state: the client's newest state (``teacher_cache``, ``teacher_trained_rounds``,
            ``teacher_plateau``).
        server_round: the round, from 1 (the freeze counts the client's own trained
            rounds, not the server's).

    Returns:
        True when a cached upload exists and either the teacher has trained in
        ``teacher-rounds`` rounds (teacher-rounds > 0), or it was frozen before (its
        weights are no longer kept), or the plateau rule has fired.
    """
    if state.get("teacher_cache") is None:
        return False
    if "teacher" not in state:  # frozen in an earlier round: only the cache is kept
        return True
    if cfg.teacher_rounds and int(state.get(TRAINED_ROUNDS, 0)) >= cfg.teacher_rounds:
        return True
    patience = cfg.teacher_plateau_rounds
    return bool(patience) and Plateau.from_state(state.get("teacher_plateau")).stale >= patience


def validation_split(num_samples: int, seed: int, partition_id: int) -> tuple[Tensor, Tensor]:
    """Seeded split of a client's rows into (teacher training rows, validation rows).

    Args:
        num_samples: the client's sample count n >= 2.
        seed: the run's seed.
        partition_id: the client's partition (each client draws its own split).

    Returns:
        Two int64 index tensors, sizes n - v and v with
        ``v = max(1, round(VALIDATION_FRACTION * n))``; together a permutation of
        range(n).

    Raises:
        ValueError: if n < 2 (nothing would be left to train or to validate on).
    """
    if num_samples < 2:
        raise ValueError(
            f"teacher-plateau-rounds needs >= 2 samples per client to hold out a "
            f"validation share, partition {partition_id} has {num_samples}"
        )
    generator = torch.Generator().manual_seed(seed * 7919 + partition_id)
    order = torch.randperm(num_samples, generator=generator)
    num_val = max(1, round(VALIDATION_FRACTION * num_samples))
    return order[num_val:], order[:num_val]


def frozen_upload(cache: dict, server_holds_logits: bool) -> tuple[bytes, dict[str, float]]:
    """A frozen teacher's upload: nothing when the server holds its logits.

    Args:
        cache: ``{"payload": uint8 tensor, "metrics": {...}}`` of the last trained round;
            the payload holds the teacher's logits on the whole proxy set (B rows).
        server_holds_logits: the server said it holds this client's last logits.

    Returns:
        (logits payload, metrics): ``b""`` and ``logits_reused = 1`` when the server
        holds them, else the cached payload with ``logits_reused = 0`` and
        ``logits_whole_proxy = 1``; the metrics of the round the cache was made in are
        repeated.
    """
    metrics = {k: float(v) for k, v in cache["metrics"].items()}
    if server_holds_logits:
        return b"", {**metrics, LOGITS_REUSED: 1.0}
    payload = cache["payload"].numpy().tobytes()
    return payload, {**metrics, LOGITS_REUSED: 0.0, LOGITS_WHOLE_PROXY: 1.0}


class TeacherFreeze:
    """One client round's view of teacher freezing: its three steps in order.

    Args:
        cfg: the run's effective config.
        plan: what the strategy sends (:attr:`StrategyPlan.freezes_teachers`).
        partition_id: the client.
        state: the client's newest state (read only).
        server_round: the round, from 1.
    """

    def __init__(
        self,
        cfg: RunConfig,
        plan: StrategyPlan,
        partition_id: int,
        state: dict,
        server_round: int,
    ) -> None:
        self.cfg, self.plan, self.state = cfg, plan, state
        self.frozen = teacher_frozen(cfg, state, server_round)
        self.val_rows: Tensor | None = None
        self.partition_id = partition_id

    def frozen_round(self, new_state: dict, metrics: dict[str, float], logits_held: bool) -> bytes:
        """A frozen teacher's round: its upload (``b""`` when the server holds its logits).

        Args:
            new_state: the client's state being built; gets the cache and plateau back.
            metrics: the reply's metrics; gets the cached round's ones and
                ``logits_reused``.
            logits_held: the server holds this client's last logits.

        Returns:
            The logits payload.
        """
        payload, frozen_metrics = frozen_upload(self.state["teacher_cache"], logits_held)
        metrics.update(frozen_metrics)
        new_state["teacher_cache"] = self.state["teacher_cache"]  # no teacher weights kept
        new_state["teacher_plateau"] = self.state.get("teacher_plateau")
        new_state[TRAINED_ROUNDS] = self.state.get(TRAINED_ROUNDS, 0)
        return payload

    def training_rows(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The rows the teacher trains on: all, or all but the plateau's validation share.

        Args:
            x: the client's inputs, shape (n, ...).
            y: labels, shape (n,).

        Returns:
            (inputs, labels) to train on.

        Raises:
            ValueError: with ``teacher-plateau-rounds`` and n < 2 (:func:`validation_split`).
        """
        if not self.cfg.teacher_plateau_rounds:
            return x, y
        train_rows, self.val_rows = validation_split(len(x), self.cfg.seed, self.partition_id)
        return x[train_rows], y[train_rows]

    def trained_round(
        self,
        teacher: torch.nn.Module,
        x: Tensor,
        y: Tensor,
        device: torch.device,
        payload: bytes,
        new_state: dict,
        metrics: dict[str, float],
    ) -> None:
        """After a trained round: plateau bookkeeping and the cache for frozen rounds.

        Args:
            teacher: the trained teacher.
            x: the client's inputs, shape (n, ...) (the validation rows are among them).
            y: labels, shape (n,).
            device: where to evaluate.
            payload: the teacher's logits payload on the whole proxy set (this round's
                upload itself unless ``logits-subset`` < 1), cached for frozen rounds.
            new_state: the client's state being built; gets ``teacher_plateau``,
                ``teacher_cache`` and ``teacher_trained_rounds`` (the last two when
                teachers can freeze).
            metrics: the reply's metrics; gets ``teacher_val_accuracy`` (plateau).
        """
        if self.val_rows is not None:
            with timed("evaluation"):
                val = evaluate(teacher, x[self.val_rows], y[self.val_rows], device)
            plateau = Plateau.from_state(self.state.get("teacher_plateau"))
            new_state["teacher_plateau"] = plateau.step(val["accuracy"]).as_state()
            metrics["teacher_val_accuracy"] = val["accuracy"]
        if self.plan.freezes_teachers:  # a frozen teacher's later rounds reuse this upload
            new_state[TRAINED_ROUNDS] = int(self.state.get(TRAINED_ROUNDS, 0)) + 1
            new_state["teacher_cache"] = {
                "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
                "metrics": dict(metrics),
            }
