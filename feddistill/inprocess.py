"""In-process driver: the real ServerApp round loop and ClientApp, without Ray or a
SuperLink. For benchmarks and debugging (the fastest faithful engine) and as the
overhead baseline; the loop, strategy, client round and codec run exactly as under
Flower, minus the transport. A launcher: nothing in the apps imports it.

``feddistill run --engine inprocess`` uses :func:`run_inprocess_job`: same results
folder, progress lines and phases as the simulation engine, one process, one traceback.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from feddistill.clients.app import app as client_app
from feddistill.config import RunConfig
from feddistill.progress import emit_new_rows, follow_progress, read_new_phases
from feddistill.run_folder import RunFolder
from feddistill.server.discovery import discover_partitions
from feddistill.server.loop import FederationRun


class InProcessGrid:
    """Just enough of Flower's Grid: node ids and a synchronous send_and_receive.

    Node ``1000 + p`` holds partition ``p``; each has its own Context (state), as a
    simulated SuperNode has. The ClientApp sets torch's thread count to its
    client-num-cpus (as under Ray); the server's own count is restored after each call,
    so server-side work runs with the same threads as in Flower's ServerApp process.

    Args:
        cfg: the run's config (its kebab-case keys become each node's run config).
        extra_nodes: nodes beyond num-partitions (partition ids ``n..n+extra-1``), to
            test that the loop ignores nodes it did not ask for.
    """

    def __init__(self, cfg: RunConfig, extra_nodes: int = 0) -> None:
        n = cfg.num_partitions + extra_nodes
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
        server_threads = torch.get_num_threads()
        for m in messages:
            try:
                replies.append(client_app(m, self.contexts[m.metadata.dst_node_id]))
            except Exception as exc:  # Flower turns a ClientApp exception into an error reply
                replies.append(Message(Error(code=1, reason=f"Message: {exc}"), reply_to=m))
            finally:
                torch.set_num_threads(server_threads)
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


def run_inprocess_job(
    cfg: RunConfig,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    poll_s: float = 0.2,
) -> dict[str, Any]:
    """The whole job (rounds, export, report, summary.json) in this process.

    The ServerApp's own body runs on this thread (a debugger stops in it, a failure
    has one traceback); a helper thread follows ``metrics.jsonl`` and ``phases.jsonl``
    exactly as the simulation engine does, so progress and phases look the same.
    The caller holds the out-dir lock (``feddistill run`` does).

    Args:
        cfg: the run config; ``out_dir`` should be absolute.
        on_row: called with each new metrics row.
        on_phase: called with each phase the run records ("loading data", ...).
        poll_s: seconds between two looks at the progress files.

    Returns:
        The parsed summary.json (``status`` "completed", or "failed" with the error and
        traceback, which also go to ``flower.log``).
    """
    from feddistill.server.app import _run

    folder = RunFolder(cfg.out_dir)
    out = folder.root
    out.mkdir(parents=True, exist_ok=True)
    folder.summary.unlink(missing_ok=True)
    phase = on_phase or (lambda text: None)
    seen = {"rows": emit_new_rows(folder.metrics_jsonl, 0, None), "phases": 0}
    seen["phases"] = read_new_phases(out, 0)[1]
    done = threading.Event()

    def follow() -> None:
        while True:
            stop = done.is_set()
            seen["rows"], seen["phases"] = follow_progress(
                out, seen["rows"], seen["phases"], on_row, phase
            )
            if stop:
                return
            done.wait(poll_s)

    follower = threading.Thread(target=follow, name="feddistill-progress", daemon=True)
    phase("starting the in-process engine (no SuperLink, no Ray)")
    follower.start()
    try:
        with task_identity():
            _run(cast(Grid, InProcessGrid(cfg)), cfg)
    except Exception:  # the ServerApp wrote summary.json with status "failed"
        with folder.flower_log.open("a") as log:
            log.write(traceback.format_exc())
    finally:
        done.set()
        follower.join()
    summary = folder.read_summary()
    if summary is None:  # e.g. OutDirInUse: an error code, no summary written
        error = folder.read_server_error()
        why = error.message if error is not None else "see flower.log"
        return {"status": "failed", "error": f"the run wrote no {folder.summary}: {why}"}
    return summary
