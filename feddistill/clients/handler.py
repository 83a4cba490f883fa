"""The ClientApp's train handler: unpack the message, run the client's round, pack the reply.

:mod:`feddistill.clients.app` (the ClientApp Flower loads) imports this module on the
first train message: it imports torch, the models and the data.
"""

from __future__ import annotations

import logging
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from feddistill import protocol as P
from feddistill.clients.round import run_client_round
from feddistill.compression.consensus_payload import decode_consensus
from feddistill.compression.downlink import DownlinkPayload
from feddistill.config import RunConfig, from_mapping
from feddistill.data import load_client_data
from feddistill.distill.subset import proxy_subset
from feddistill.heap import release_free_heap
from feddistill.learn import resolve_device
from feddistill.protocol import effective_config
from feddistill.run_folder import RunFolder
from feddistill.timing import flush, timed

logger = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def _config(items: tuple) -> RunConfig:
    return effective_config(from_mapping(dict(items)))


def node_run_config(context: Context) -> RunConfig:
    """The effective run config, with this node's own ``data-root`` if it has one.

    Resolved once per process and run (cached): the strategy's overrides are applied
    (:func:`feddistill.protocol.effective_config`), so the client reads one config.
    """
    items = dict(context.run_config)
    if context.node_config.get("data-root"):
        items["data-root"] = str(context.node_config["data-root"])
    return _config(tuple(sorted(items.items())))


def client_state_dir(cfg: RunConfig, context: Context) -> Path:
    """Per-client state directory: node-config ``state-dir`` if set, else <out-dir>/client-state."""
    custom = context.node_config.get("state-dir")
    return Path(str(custom)) if custom else Path(cfg.out_dir) / "client-state"


def placement() -> dict[str, str | int]:
    """Where this ClientApp runs: hostname, Ray node id and GPU ids (if under Ray), pid."""
    ray_node, gpus = "", os.environ.get("CUDA_VISIBLE_DEVICES", "")
    try:
        import ray

        if ray.is_initialized():
            ray_node = ray.get_runtime_context().get_node_id()
            gpus = ",".join(str(g) for g in ray.get_gpu_ids())
    except ImportError:  # a SuperNode without Ray
        pass
    return {
        "hostname": socket.gethostname(),
        "ray-node-id": ray_node,
        "gpu-ids": gpus,
        "pid": os.getpid(),
    }


def handle_train(msg: Message, context: Context) -> Message:
    """Handle one FedDistill train message: unpack, :func:`run_client_round`, pack the reply."""
    cfg = node_run_config(context)
    torch.set_num_threads(max(1, cfg.client_num_cpus))
    partition_id = int(cast(int, context.node_config[P.PARTITION_ID]))
    config = msg.content.config_records[P.CONFIG]
    server_round = int(cast(int, config[P.SERVER_ROUND]))
    global_state = msg.content.array_records[P.ARRAYS].to_torch_state_dict()
    downlink = None
    if P.DOWNLINK_BASE in config:
        downlink = DownlinkPayload(
            int(cast(int, config[P.DOWNLINK_BASE])),
            cast(bytes, config[P.DOWNLINK_PARAMS]),
            cast(bytes, config[P.DOWNLINK_BUFFERS]),
        )
    with timed("data_loading"):  # cached per process: only the first call loads
        data = load_client_data(cfg.data_spec(), str(RunFolder(cfg.out_dir).client_data))
    consensus = None
    if P.CONSENSUS in config:
        blob = cast(bytes, config[P.CONSENSUS])
        # built in the previous round on that round's proxy subset: (b, K)
        rows = proxy_subset(len(data.splits.proxy_x), cfg.logits_subset, cfg.seed, server_round - 1)
        shape = (len(rows), data.splits.num_classes)
        with timed("decode"):
            consensus = decode_consensus(blob, *shape)  # (b, K), rows sum to 1
    reply = run_client_round(
        cfg,
        data,
        partition_id,
        global_state,
        consensus,
        server_round,
        client_state_dir(cfg, context),
        resolve_device(cfg.device, cfg.deterministic),
        downlink,
        mask_blob=cast(bytes, config[P.MASK]) if P.MASK in config else None,
        mask_version=int(cast(int, config.get(P.MASK_VERSION, 0))),
        logits_held=str(partition_id) in str(config.get(P.LOGITS_HELD, "")).split(","),
    )
    metrics = MetricRecord(
        {P.NUM_EXAMPLES: reply.num_examples, P.PARTITION_ID: partition_id, **reply.metrics}
    )
    payload = ConfigRecord(
        {P.UPDATE: reply.update, P.LOGITS: reply.logits, P.BUFFERS: reply.buffers}
    )
    content = RecordDict(
        {P.METRICS: metrics, P.PAYLOAD: payload, P.PLACEMENT: ConfigRecord(cast(Any, placement()))}
    )
    del global_state, downlink, consensus
    release_free_heap()  # what the round freed (teacher, activations), before the next client
    try:
        flush(cfg.out_dir)  # this process's phase seconds, for `feddistill bench overhead`
    except OSError as exc:  # a SuperNode that cannot write there still trains
        logger.debug("timings not written to %s: %s", cfg.out_dir, exc)
    return Message(content=content, reply_to=msg)
