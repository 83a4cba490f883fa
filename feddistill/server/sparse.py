"""The server's global sparsity mask: grown on a schedule, sent to clients that lack it.

Round r starts with :meth:`GlobalMask.step`: if the schedule's sparsity of round r is
above the mask's, the mask grows (global magnitude over the current global student,
never un-pruning), the global student's pruned weights are set to 0 and the mask's
version becomes r. A sampled client whose last accepted reply used an older version
gets the bitmap in its train message; the others know it. Replies carry the version
they used, and one with another version is rejected (its packed update would not fit).

References:
    Zhu & Gupta, arXiv:1710.01878; PruneFL, arXiv:1909.12326; FedDST, arXiv:2112.09824.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from torch import Tensor, nn

from feddistill import protocol as P
from feddistill.compression.masks import (
    apply_masks,
    encode_mask,
    global_magnitude_mask,
    mask_sparsity,
    maskable_keys,
    sparsity_at,
)
from feddistill.config import RunConfig


class GlobalMask:
    """The server-owned keep-mask of the global student's conv / linear weights.

    Args:
        cfg: the run's config (``target-sparsity``, ``sparsity-start-round``,
            ``sparsity-end-round``).
        student: the global student (names and shapes of the maskable weights).
    """

    def __init__(self, cfg: RunConfig, student: nn.Module) -> None:
        self.cfg = cfg
        self.keys = maskable_keys(student)
        state = student.state_dict()
        self.masks: dict[str, Tensor] = {
            k: state[k].new_ones(state[k].shape).bool() for k in self.keys
        }
        self.version = 0  # round the mask last changed; 0: nothing pruned yet
        self.known: dict[int, int] = {}  # partition id -> version of its last accepted reply

    @property
    def enabled(self) -> bool:
        """True when the run prunes inside the federation (target-sparsity > 0)."""
        return self.cfg.target_sparsity > 0.0

    @property
    def sparsity(self) -> float:
        """Achieved fraction of masked weights."""
        return mask_sparsity(self.masks)

    def step(self, server_round: int, student: nn.Module) -> bool:
        """Grow the mask to the schedule's sparsity of ``server_round``; zero pruned weights.

        Returns:
            True if the mask changed.
        """
        if not self.enabled:
            return False
        cfg = self.cfg
        target = sparsity_at(
            server_round, cfg.target_sparsity, cfg.sparsity_start_round, cfg.sparsity_end_round
        )
        if target <= self.sparsity + 1e-9:
            return False
        state = student.state_dict()
        new = global_magnitude_mask({k: state[k] for k in self.keys}, target, self.masks)
        if all(bool((new[k] == self.masks[k]).all()) for k in self.keys):
            return False
        self.masks, self.version = new, server_round
        student.load_state_dict(self.apply(state))
        return True

    def active(self) -> dict[str, Tensor]:
        """The masks replies are packed with: ``{}`` until the first pruning step."""
        return self.masks if self.enabled and self.version > 0 else {}

    def apply(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``state`` with masked weights exactly 0 (identity when the mask is off)."""
        return apply_masks(state, self.masks) if self.enabled else dict(state)

    def attach(self, messages: list[Message], node_partitions: Mapping[int, int]) -> int:
        """Give each message the mask version, and the bitmap to clients that lack it.

        Messages share one RecordDict; a message that gets the bitmap gets its own copy.

        Returns:
            Bytes of bitmap sent over all messages (downlink).
        """
        if not self.enabled:
            return 0
        blob = encode_mask(self.masks, self.version)
        sent = 0
        for i, msg in enumerate(messages):
            content = msg.content
            config = content.config_records[P.CONFIG]
            config[P.MASK_VERSION] = self.version
            pid = node_partitions.get(msg.metadata.dst_node_id, -1)
            if self.version == 0 or self.known.get(pid) == self.version:
                continue
            own = ConfigRecord(dict(config))
            own[P.MASK] = blob
            record = RecordDict({P.ARRAYS: content.array_records[P.ARRAYS], P.CONFIG: own})
            messages[i] = Message(
                content=record,
                message_type=msg.metadata.message_type,
                dst_node_id=msg.metadata.dst_node_id,
            )
            sent += len(blob)
        return sent

    def accepted(self, partition_ids: list[int]) -> None:
        """These partitions replied with the current version: they know the mask."""
        for pid in partition_ids:
            self.known[pid] = self.version

    def state_dict(self) -> dict[str, Any]:
        """What the checkpoint holds."""
        return {"masks": self.masks, "version": self.version, "known": dict(self.known)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.masks = dict(state["masks"])
        self.version = int(state["version"])
        self.known = {int(k): int(v) for k, v in state["known"].items()}
