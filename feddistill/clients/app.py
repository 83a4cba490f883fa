"""Flower ClientApp: one train handler (the client's round) and one query (its partition).

The partition id comes from the node config (``partition-id``), which Flower's
simulation sets for each virtual SuperNode and a real SuperNode gets through
``--node-config "partition-id=0 num-partitions=2"``.

This module imports Flower and nothing heavy: Flower's simulation loads the ClientApp in
its driver process, to check that it loads, before it starts Ray, and with torch, the
models and the data imported here that check put ~3 s on the path of every run's
start-up (issue 13). The train handler lives in :mod:`feddistill.clients.handler`,
imported on the first train message.
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import cast

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from feddistill import protocol as P
from feddistill.blas import single_threaded_blas

single_threaded_blas()  # no OpenBLAS workers for a fork to stop mid-call (feddistill.blas)
app = ClientApp()
HANDLER = "feddistill.clients.handler"
_warm_up_started = threading.Event()


def _in_ray_actor() -> bool:
    """True in a Ray worker of a Flower simulation (Ray is initialised, and this
    module only runs handlers there, never in the driver)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _import_handler() -> None:
    importlib.import_module(HANDLER)
    # torch.optim imports torch._dynamo on the first optimizer (~0.85 s, measured);
    # taken now, not in the first round's training
    importlib.import_module("torch._dynamo")


def warm_up() -> None:
    """Import the train handler (torch, models, data) in a background thread, once.

    Called on the partition query, which the ServerApp sends before it loads its own
    modules and data: in a Ray actor the client's imports then overlap the server's
    instead of delaying the first round (issue 13). Only in a Ray actor: a SuperNode's
    ClientApp process ends after the query, and in the in-process engine the server's
    thread imports the same modules.
    """
    if _warm_up_started.is_set() or not _in_ray_actor():
        return
    _warm_up_started.set()
    threading.Thread(target=_import_handler, name="feddistill-warm-up", daemon=True).start()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Handle one FedDistill train message (:func:`feddistill.clients.handler.handle_train`)."""
    from feddistill.clients.handler import handle_train

    return handle_train(msg, context)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Report this node's partition id (the server maps node ids to partitions once)."""
    partition_id = int(cast(int, context.node_config[P.PARTITION_ID]))
    metrics = MetricRecord({P.PARTITION_ID: partition_id})
    warm_up()
    return Message(content=RecordDict({P.METRICS: metrics}), reply_to=msg)
