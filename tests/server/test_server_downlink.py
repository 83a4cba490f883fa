"""The round loop with downlink deltas: replicas on both sides, exact downlink bytes."""

from __future__ import annotations

import torch

from feddistill.clients.state import load_state
from feddistill.config import from_mapping
from feddistill.inprocess import run_rounds
from feddistill.server.checkpoint import load_latest_checkpoint

JOB = {
    "dataset": "digits",
    "num-partitions": 4,
    "fraction-train": 0.5,
    "num-server-rounds": 4,
    "min-partition-size": 5,
    "teacher-models": "mlp",
    "student-model": "mlp",
    "batch-size": 64,
    "downlink-density": 0.1,
    "downlink-bit-width": 4,
}


def test_every_clients_replica_equals_the_servers_after_partial_participation(tmp_path):
    # Prepare
    cfg = from_mapping({**JOB, "out-dir": str(tmp_path)})
    # Execute
    run_rounds(cfg)
    # Assert: the server's replica of each client is the one the client stored
    ckpt = load_latest_checkpoint(tmp_path / "checkpoints")
    assert ckpt is not None
    replicas = ckpt["replicas"]
    assert len(replicas) == 4  # 2 of 4 per round over 4 rounds reached everyone
    for pid, (server_round, server_replica) in replicas.items():
        state = load_state(tmp_path / "client-state", pid, cfg.num_server_rounds + 1)
        assert state["replica_round"] == server_round
        for key, value in server_replica.items():
            assert torch.equal(state["replica"][key], value), (pid, key)


def test_round_one_sends_a_delta_against_the_seeded_initial_model_not_the_full_one(tmp_path):
    # Prepare
    cfg = from_mapping({**JOB, "out-dir": str(tmp_path), "num-server-rounds": 1})
    # Execute
    rows = run_rounds(cfg)
    # Assert: the full fp32 mlp would be 203608 B per client (50826 floats of 4 B,
    # 3 weight records of 50 B, 3 bias records of 44 B, header 18, crc 4); the delta
    # against the initial model every client builds from the seed is all zeros (top-k
    # still codes k zero entries at 4 bits with their positions: 5846 B measured)
    full = 4 * 50826 + 3 * 50 + 3 * 44 + 18 + 4
    assert full == 203608
    assert rows[0]["accepted"] == 2
    assert rows[0]["downlink_bytes_per_client"] < full // 30


def test_report_states_the_total_ratio_vs_fp32_fedavg(tmp_path):
    # Prepare: a summary whose up + down bytes are 21.34x below fp32 FedAvg's
    from feddistill.server.results import write_report

    summary = {
        "strategy": "feddistill",
        "status": "completed",
        "rounds": 1,
        "total_ratio_vs_fedavg_fp32": 21.34,
        "config": {"dataset": "digits"},
    }
    row = {"round": 1, "accuracy": 0.5, "uplink_bytes": 10, "downlink_bytes": 20}
    # Execute
    write_report(tmp_path, summary, [row])
    # Assert
    text = (tmp_path / "report.md").read_text()
    assert "Uplink + downlink: 21.3x smaller than fp32 FedAvg." in text
    assert "| total_ratio_vs_fedavg_fp32 | 21.34 |" in text


def test_logits_subset_shrinks_each_upload_by_the_dropped_rows(tmp_path):
    # Prepare: one round, 4-bit logits (B, 10) and log-affinity (B,), B or b rows
    from feddistill.data import prepare_federated_data

    base = {**JOB, "num-server-rounds": 1, "fraction-train": 1.0}
    full_cfg = from_mapping({**base, "out-dir": str(tmp_path / "full")})
    half_cfg = from_mapping({**base, "out-dir": str(tmp_path / "half"), "logits-subset": 0.5})
    proxy = len(prepare_federated_data(full_cfg.data_spec()).splits.proxy_x)
    half = round(0.5 * proxy)
    # Execute
    full_row = run_rounds(full_cfg)[0]
    half_row = run_rounds(half_cfg)[0]
    # Assert: per client, 4-bit codes of B*10 + B values become b*10 + b, headers equal
    saved = (proxy * 10 + 1) // 2 + (proxy + 1) // 2 - ((half * 10 + 1) // 2 + (half + 1) // 2)
    assert full_row["uplink_logits_bytes"] - half_row["uplink_logits_bytes"] == 4 * saved


def test_consensus_of_a_proxy_subset_is_learned_the_round_after(tmp_path):
    # Prepare: round 2 clients decode round 1's (b, K) consensus and distill on its rows
    cfg = from_mapping(
        {**JOB, "out-dir": str(tmp_path), "num-server-rounds": 2, "logits-subset": 0.3}
    )
    # Execute
    rows = run_rounds(cfg)
    # Assert: every sampled client succeeded in both rounds
    assert [(r["accepted"], r["failed"]) for r in rows] == [(2, 0), (2, 0)]
