"""Which node holds which partition: one query message per node, once per run.

Light on purpose (Flower and the protocol keys only): the ServerApp starts
:class:`Discovery` before it imports the round loop and loads the data, so the clients
start up (Ray's actors, their imports) while the server does its own (issue 13).
"""

from __future__ import annotations

import logging
import threading
import time

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from feddistill import protocol as P

logger = logging.getLogger(__name__)
QUERY_PARTITION = "partition"


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
        time.sleep(0.2)
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


class Discovery:
    """:func:`discover_partitions` in a background thread, started at construction.

    The caller must not use the grid until :meth:`result` has returned.
    """

    def __init__(self, grid: Grid, num_partitions: int, timeout_s: float) -> None:
        self._mapping: dict[int, int] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._discover,
            args=(grid, num_partitions, timeout_s),
            name="feddistill-discovery",
            daemon=True,
        )
        self._thread.start()

    def _discover(self, grid: Grid, num_partitions: int, timeout_s: float) -> None:
        try:
            self._mapping = discover_partitions(grid, num_partitions, timeout_s)
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def result(self) -> dict[int, int]:
        """node id -> partition id, once discovery ended.

        Raises:
            RuntimeError: as :func:`discover_partitions`.
        """
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._mapping is not None
        return self._mapping
