"""Frozen-teacher reuse on the server: the last teacher logits each client sent.

(Decoding the upload is :class:`~feddistill.compression.teacher_upload.TeacherUpload`'s.)
A client whose teacher is frozen (:mod:`feddistill.clients.teacher_freeze`) sends an
empty logits payload with ``logits_reused = 1``; the server then uses the last logits
and affinity weights it accepted from that client. They are kept here, per partition,
written into every checkpoint and read back on resume, so a resumed run reuses them too. Each
train message names the partitions whose logits the server holds (``logits-held``), so
a client whose last upload was lost sends it again instead of nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import torch
from torch import Tensor

from feddistill.protocol import LOGITS_REUSED
from feddistill.server.aggregate import RejectedUpdate

LOGITS = "logits"  # checkpoint keys of one held entry
AFFINITY = "affinity"


class _WithLogits(Protocol):
    partition_id: int
    whole_proxy: tuple[Tensor, Tensor] | None
    metrics: dict[str, float]


class HeldLogits:
    """The last accepted teacher logits and log affinity of every client.

    Attributes:
        logits: partition id -> (logits (B, K), affinity weights (B,)) on the whole
            proxy set, float32, as accepted
            (:attr:`~feddistill.server.strategy.ClientResult.whole_proxy`).
    """

    def __init__(self) -> None:
        self.logits: dict[int, tuple[Tensor, Tensor]] = {}

    def config_value(self) -> str:
        """Comma list of the partitions held, ascending (the ``logits-held`` value)."""
        return ",".join(str(p) for p in sorted(self.logits))

    def reused(self, partition_id: int) -> tuple[Tensor, Tensor]:
        """The held (logits (B, K), affinity weights (B,)) of a client that reuses them.

        Raises:
            RejectedUpdate: if the server holds no logits of ``partition_id``.
        """
        if partition_id not in self.logits:
            raise RejectedUpdate(
                f"partition {partition_id} reuses teacher logits the server does not "
                f"hold (held: [{self.config_value()}])"
            )
        return self.logits[partition_id]

    def remember(self, accepted: Iterable[_WithLogits]) -> None:
        """Keep the whole-proxy logits of every accepted reply that brought them."""
        for r in accepted:
            if r.whole_proxy is not None:
                logits, affinity = r.whole_proxy
                self.logits[r.partition_id] = (logits.clone(), affinity.clone())

    def state_dict(self) -> dict[int, dict[str, Tensor]]:
        """For the checkpoint: partition id -> {"logits", "affinity"}."""
        return {p: {LOGITS: lg, AFFINITY: af} for p, (lg, af) in self.logits.items()}

    def load_state_dict(self, state: Mapping[int, Mapping[str, Any]]) -> None:
        """Inverse of :meth:`state_dict` (a checkpoint without them: nothing held)."""
        self.logits = {
            int(p): (torch.as_tensor(v[LOGITS]).float(), torch.as_tensor(v[AFFINITY]).float())
            for p, v in state.items()
        }


def reused_count(accepted: Iterable[_WithLogits]) -> int:
    """``logits_reused``: accepted clients whose frozen teacher sent no logits this round."""
    return sum(1 for r in accepted if r.metrics.get(LOGITS_REUSED))
