"""The server's side of downlink compression in one round (the per-client student config).

See :mod:`feddistill.compression.downlink` for replicas and catch-up.
"""

from __future__ import annotations

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
