"""In-process driver: the real ServerApp round loop and ClientApp, without Ray or a
SuperLink. For benchmarks and debugging (the fastest faithful engine) and as the
overhead baseline; the loop, strategy, client round and codec run exactly as under
Flower, minus the transport. A launcher: nothing in the apps imports it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from feddistill.clients.app import app as client_app
from feddistill.config import RunConfig
from feddistill.server.loop import FederationRun, discover_partitions


class InProcessGrid:
    """Just enough of Flower's Grid: node ids and a synchronous send_and_receive.

    Node ``1000 + p`` holds partition ``p``; each has its own Context (state).

    Args:
        cfg: the run's config (its kebab-case keys become each node's run config).
    """

    def __init__(self, cfg: RunConfig) -> None:
        n = cfg.num_partitions
        self.contexts = {
            1000 + p: Context(
                run_id=1,
                node_id=1000 + p,
                state=RecordDict(),
                run_config=cfg.to_kebab(),
                node_config={"partition-id": p, "num-partitions": n},
            )
            for p in range(n)
        }

    def get_node_ids(self) -> list[int]:
        """The connected nodes' ids."""
        return list(self.contexts)

    def send_and_receive(
        self, messages: Iterable[Message], timeout: float | None = None
    ) -> list[Message]:
        """Run the ClientApp on each message in turn; an exception becomes an error reply."""
        del timeout  # synchronous
        replies = []
        for m in messages:
            try:
                replies.append(client_app(m, self.contexts[m.metadata.dst_node_id]))
            except Exception as exc:  # Flower turns a ClientApp exception into an error reply
                replies.append(Message(Error(code=1, reason=f"Message: {exc}"), reply_to=m))
        return replies


@contextmanager
def task_identity() -> Iterator[None]:
    """Flower messages need a task identity outside a running app; set one, then restore."""
    saved = (TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id)
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = saved


def run_rounds(cfg: RunConfig) -> list[dict[str, Any]]:
    """Run every round of `cfg` in this process; return the metrics rows.

    Writes metrics and checkpoints to ``cfg.out_dir`` like a real run but skips the
    final export and plots (:meth:`FederationRun.finish`).

    Raises:
        RuntimeError: if a round has fewer successful clients than min-train-nodes.
    """
    with task_identity():
        run = FederationRun(cfg)
        grid = cast(Grid, InProcessGrid(cfg))  # duck-typed: the two methods the loop uses
        run.strategy.node_partitions = discover_partitions(
            grid, cfg.num_partitions, cfg.round_timeout_s
        )
        t_start = time.perf_counter()
        for server_round in range(run.start_round + 1, cfg.num_server_rounds + 1):
            run.run_round(grid, server_round, t_start)
        return run.rows


def run_in_process(cfg: RunConfig) -> dict[str, Any]:
    """Run one whole job in this process and return its summary (writes ``cfg.out_dir``
    as usual, export and plots included).

    ``centralized`` runs :func:`~feddistill.server.centralized.run_centralized`; every
    other strategy runs :class:`~feddistill.server.loop.FederationRun` (the ServerApp's
    loop) on an :class:`InProcessGrid`.

    Raises:
        RuntimeError, ValueError: as the round loop (e.g. too few clients succeeded).
    """
    from feddistill.server.centralized import run_centralized

    if cfg.strategy == "centralized":
        return run_centralized(cfg)
    with task_identity():
        return FederationRun(cfg).run(cast(Grid, InProcessGrid(cfg)))
