"""In-process driver: the real ServerApp round loop and ClientApp, without Ray or SuperLink.

For benchmarks that run many small jobs on few cores (``feddistill bench domains``):
:class:`InProcessGrid` implements the part of Flower's ``Grid`` the round loop uses and
hands every message to :data:`feddistill.clients.app.app` in this process, one client
after another, so the strategy, the client round, the codec and the results writer run
exactly as under Flower, minus transport, process start-up and Ray. Results (rows,
bytes, accuracies) equal a simulation run's for the same config; wall times do not.

A launcher: nothing in the ServerApp or ClientApp imports this module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from feddistill.clients.app import app as client_app
from feddistill.config import RunConfig

logger = logging.getLogger(__name__)

NODE_ID_BASE = 1000  # node id of partition p is NODE_ID_BASE + p


class InProcessGrid:
    """Just enough of ``flwr.serverapp.Grid``: node ids and a synchronous send_and_receive.

    Args:
        cfg: the run config; one node per partition, each with its ``partition-id``.
    """

    def __init__(self, cfg: RunConfig) -> None:
        n = cfg.num_partitions
        self.contexts = {
            NODE_ID_BASE + p: Context(
                run_id=1,
                node_id=NODE_ID_BASE + p,
                state=RecordDict(),
                run_config=cfg.to_kebab(),
                node_config={"partition-id": p, "num-partitions": n},
            )
            for p in range(n)
        }

    def get_node_ids(self) -> list[int]:
        """The ids of all nodes (all connected from the start)."""
        return list(self.contexts)

    def send_and_receive(
        self, messages: Iterable[Message], timeout: float | None = None
    ) -> list[Message]:
        """Run each message through the ClientApp; an exception becomes an error reply."""
        del timeout  # synchronous: every client replies before this returns
        replies = []
        for msg in messages:
            try:
                replies.append(client_app(msg, self.contexts[msg.metadata.dst_node_id]))
            except Exception as exc:  # Flower turns a ClientApp exception into an error reply
                logger.warning("in-process client failed: %s", exc)
                replies.append(Message(Error(code=1, reason=f"Message: {exc}"), reply_to=msg))
        return replies


@contextmanager
def _task_identity() -> Iterator[None]:
    # Flower messages need a task identity; a real app process has one, this one not.
    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1  # type: ignore[misc]
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


def run_in_process(cfg: RunConfig) -> dict[str, Any]:
    """Run one job in this process and return its summary (writes ``cfg.out_dir`` as usual).

    ``centralized`` runs :func:`~feddistill.server.centralized.run_centralized`; every
    other strategy runs :class:`~feddistill.server.loop.FederationRun` (the ServerApp's
    loop) on an :class:`InProcessGrid`.

    Raises:
        RuntimeError, ValueError: as the round loop (e.g. too few clients succeeded).
    """
    from feddistill.server.centralized import run_centralized
    from feddistill.server.loop import FederationRun

    if cfg.strategy == "centralized":
        return run_centralized(cfg)
    with _task_identity():
        return FederationRun(cfg).run(InProcessGrid(cfg))  # type: ignore[arg-type]
