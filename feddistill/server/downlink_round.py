"""The server's side of downlink compression in one round, and the total-bytes columns.

See :mod:`feddistill.compression.downlink` for replicas and catch-up.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ConfigRecord
from torch import Tensor

from feddistill import protocol as P
from feddistill.compression.downlink import ReplicaBook


def downlink_config(
    replicas: ReplicaBook,
    buffer_template: dict[str, Tensor],
    partition_id: int,
    server_round: int,
    global_state: dict[str, Tensor],
    sizes: dict[int, int],
) -> ConfigRecord:
    """One client's student: compressed delta against its replica, or the full model.

    Args:
        replicas: the server's per-client replicas.
        buffer_template: the student's buffers (they go down dense).
        partition_id: the client.
        server_round: the round, from 1.
        global_state: the global student's state_dict.
        sizes: filled with partition id -> exact student bytes sent down.

    Returns:
        The config entries of that client's message (``P.DOWNLINK_*``).
    """
    payload = replicas.payload_for(
        partition_id,
        server_round,
        {k: v for k, v in global_state.items() if k not in buffer_template},
        {k: v for k, v in global_state.items() if k in buffer_template},
    )
    sizes[partition_id] = payload.num_bytes
    return ConfigRecord(
        {
            P.DOWNLINK_BASE: payload.base_round,
            P.DOWNLINK_PARAMS: payload.params,
            P.DOWNLINK_BUFFERS: payload.buffers,
        }
    )


def downlink_columns(
    row: dict[str, Any],
    rows: list[dict[str, Any]],
    student_bytes: dict[int, int],
    sampled: int,
    consensus_bytes: int,
) -> None:
    """Set the row's downlink columns to the exact compressed bytes sent.

    Args:
        row: this round's metrics row (changed in place).
        rows: the rows of earlier rounds.
        student_bytes: partition id -> student bytes sent to it (``{}``: no student
            went down, as in logits-only).
        sampled: clients sent a message this round.
        consensus_bytes: bytes of the consensus each sampled client got.
    """
    down = sum(student_bytes.values()) + consensus_bytes * sampled
    prev = rows[-1] if rows else {}
    row["downlink_bytes"] = down
    row["downlink_bytes_per_client"] = down // max(1, sampled)
    row["cumulative_downlink_bytes"] = int(prev.get("cumulative_downlink_bytes", 0)) + down


def total_ratio_column(
    row: dict[str, Any], rows: list[dict[str, Any]], fp32_update_bytes: int
) -> None:
    """fp32 FedAvg's cumulative up + down bytes over this run's (``total_ratio_vs_fedavg_fp32``).

    fp32 FedAvg sends the float parameters down to every sampled client and gets
    them back from every accepted one.
    """
    prev = rows[-1] if rows else {}
    fp32 = fp32_update_bytes * (row["accepted"] + row["sampled"])
    cum = int(prev.get("cumulative_fedavg_fp32_total_bytes", 0)) + fp32
    row["cumulative_fedavg_fp32_total_bytes"] = cum
    sent = row["cumulative_uplink_bytes"] + row["cumulative_downlink_bytes"]
    row["total_ratio_vs_fedavg_fp32"] = cum / max(1, sent)
