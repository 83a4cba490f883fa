"""Error paths of the server, client-training and engine helpers (one test per raise)."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from feddistill import protocol as P
from feddistill.config import RunConfig
from feddistill.engine import run_simulation_job
from feddistill.server.aggregate import RejectedUpdate
from feddistill.server.checkpoint import load_latest_checkpoint
from feddistill.server.discovery import discover_partitions
from feddistill.server.strategy import FedDistill, _as_bytes

TEMPLATE = {"w": torch.zeros(2)}


def test_configure_train_before_discovery_is_an_error():
    strategy = FedDistill(TEMPLATE, P.plan_for(RunConfig()), 2.0, seed=0)
    with pytest.raises(RuntimeError, match="before node_partitions was discovered"):
        strategy.configure_train(1, ArrayRecord(TEMPLATE), ConfigRecord(), grid=None)


def test_payload_that_is_not_bytes_is_rejected():
    with pytest.raises(RejectedUpdate, match=r"payload\['update'\] must be bytes, got str"):
        _as_bytes("abc", P.UPDATE)


class TwoNodesOnePartition:
    """Both nodes claim partition 0."""

    def get_node_ids(self):
        return [1, 2]

    def send_and_receive(self, messages, timeout=None):
        return [
            Message(RecordDict({P.METRICS: MetricRecord({P.PARTITION_ID: 0})}), reply_to=m)
            for m in messages
        ]


def test_two_nodes_claiming_one_partition_is_an_error():
    with pytest.raises(RuntimeError, match="two nodes claim partition 0"):
        discover_partitions(TwoNodesOnePartition(), num_partitions=2, timeout_s=5)


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "latest").write_text("round-3.pt")
    (tmp_path / "round-3.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="round-3.pt' cannot be read"):
        load_latest_checkpoint(tmp_path)


def test_zero_attempts_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="attempts must be >= 1, got 0"):
        run_simulation_job(RunConfig(out_dir=str(tmp_path)), attempts=0)
