"""Server side of the teacher-logits upload: decode it, and reuse a frozen teacher's.

A client whose teacher is frozen (:mod:`feddistill.clients.teacher_freeze`) sends an
empty logits payload with ``logits_reused = 1``; the server then uses the last logits
and affinity it accepted from that client. They are kept here, per partition, written
into every checkpoint and read back on resume, so a resumed run reuses them too. Each
train message names the partitions whose logits the server holds (``logits-held``), so
a client whose last upload was lost sends it again instead of nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import torch
from torch import Tensor

from feddistill.compression import decode_update
from feddistill.compression.topm import AFFINITY, LOGITS, decode_logits_payload
from feddistill.server.aggregate import RejectedUpdate

LOGITS_REUSED = "logits_reused"  # reply metric, as the client writes it


class _WithLogits(Protocol):
    partition_id: int
    logits: Tensor | None
    affinity: Tensor | None
    metrics: dict[str, float]


def decode_teacher_upload(
    payload: bytes, shapes: Mapping[str, tuple[int, ...]] | None, top_m: int
) -> dict[str, Tensor]:
    """Decode a client's logits payload (all classes or top-m) to dense tensors.

    Args:
        payload: the reply's logits bytes (untrusted); ``b""`` decodes to ``{}``.
        shapes: ``{"logits": (B, K), "affinity": (B,)}`` the server expects, or None
            (not known: only allowed when ``top_m`` is 0).
        top_m: classes per row the run sends (``logits-top-m``); 0 = all.

    Returns:
        ``{"logits": (B, K), "affinity": (B,)}`` as float32, or ``{}`` for no payload.

    Raises:
        CodecError: if the bytes do not decode to those shapes (see
            :func:`~feddistill.compression.topm.decode_logits_payload`).
        RejectedUpdate: if ``top_m`` > 0 and the shapes are not known.
    """
    if not payload:
        return {}
    if not top_m:
        return decode_update(payload, shapes)
    if shapes is None:
        raise RejectedUpdate("top-m logits need the proxy size and class count up front")
    num_rows, num_classes = shapes[LOGITS]
    logits, affinity = decode_logits_payload(payload, num_rows, num_classes, top_m)
    return {LOGITS: logits, AFFINITY: affinity}


class HeldLogits:
    """The last accepted teacher logits and log affinity of every client.

    Attributes:
        logits: partition id -> (logits (B, K), log affinity (B,)), float32.
    """

    def __init__(self) -> None:
        self.logits: dict[int, tuple[Tensor, Tensor]] = {}

    def config_value(self) -> str:
        """Comma list of the partitions held, ascending (the ``logits-held`` value)."""
        return ",".join(str(p) for p in sorted(self.logits))

    def reused(self, partition_id: int) -> tuple[Tensor, Tensor]:
        """The held (logits (B, K), log affinity (B,)) of a client that reuses them.

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
        """Keep the logits of every accepted reply that has them."""
        for r in accepted:
            if r.logits is not None and r.affinity is not None:
                self.logits[r.partition_id] = (r.logits.clone(), r.affinity.clone())

    def state_dict(self) -> dict[int, dict[str, Tensor]]:
        """For the checkpoint: partition id -> {"logits", "affinity"}."""
        return {p: {LOGITS: lg, AFFINITY: af} for p, (lg, af) in self.logits.items()}

    def load_state_dict(self, state: Mapping[int, Mapping[str, Any]]) -> None:
        """Inverse of :meth:`state_dict` (a checkpoint without them: nothing held)."""
        self.logits = {
            int(p): (torch.as_tensor(v[LOGITS]).float(), torch.as_tensor(v[AFFINITY]).float())
            for p, v in state.items()
        }


def reuse_columns(accepted: Iterable[_WithLogits]) -> dict[str, int]:
    """``logits_reused``: accepted clients whose frozen teacher sent no logits this round."""
    return {"logits_reused": sum(1 for r in accepted if r.metrics.get(LOGITS_REUSED))}
