"""The server's round loop with the real ClientApp, called in process (no Ray).

feddistill.inprocess's Grid hands each message to `feddistill.clients.app.app`, so the
loop, the strategy, the client round and the codec run exactly as under Flower,
minus the transport. The e2e tests cover the same job through Ray and a SuperLink.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from feddistill import protocol as P
from feddistill.config import from_mapping
from feddistill.inprocess import InProcessGrid
from feddistill.server.discovery import discover_partitions
from feddistill.server.loop import FederationRun, OutDirInUse
from feddistill.server.strategy import FedDistill

SMALL = {
    "dataset": "digits",
    "num-partitions": 3,
    "num-server-rounds": 2,
    "min-partition-size": 5,
    "teacher-models": "mlp",
    "student-model": "mlp",
    "batch-size": 64,
}


def make_cfg(tmp_path, **extra):
    return from_mapping({**SMALL, "out-dir": str(tmp_path), **extra})


def test_two_rounds_write_rows_with_exact_bytes(tmp_path):
    # Prepare: the full fp32 student goes down each round, so only the consensus differs
    cfg = make_cfg(tmp_path, **{"downlink-bit-width": 32, "downlink-density": 1.0})
    # Execute
    summary = FederationRun(cfg).run(InProcessGrid(cfg))
    # Assert
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert summary["status"] == "completed" and [r["round"] for r in rows] == [1, 2]
    for row in rows:
        assert row["uplink_bytes"] == row["uplink_update_bytes"] + row["uplink_logits_bytes"]
        assert row["accepted"] == 3 and row["failed"] == 0
        assert (
            0.0 <= row["worst_domain_accuracy"] <= row["accuracy"]
            or row["worst_domain_accuracy"] <= 1.0
        )
    assert rows[1]["cumulative_uplink_bytes"] == rows[0]["uplink_bytes"] + rows[1]["uplink_bytes"]
    # round 2 carries the consensus on the downlink, round 1 does not
    assert rows[1]["downlink_bytes_per_client"] > rows[0]["downlink_bytes_per_client"]
    assert summary["uplink_bytes"] == rows[1]["cumulative_uplink_bytes"]


def test_too_few_successful_clients_raise_with_reasons(tmp_path):
    cfg = make_cfg(tmp_path, **{"fail-partitions": "0,2"})
    with pytest.raises(
        RuntimeError,
        match=r"only 1 of 3 sampled clients succeeded, fewer than min-train-nodes=2.*failure injected",
    ):
        FederationRun(cfg).run(InProcessGrid(cfg))


def test_extra_nodes_beyond_num_partitions_are_ignored(tmp_path):
    cfg = make_cfg(tmp_path)
    mapping = discover_partitions(
        InProcessGrid(cfg, extra_nodes=2), cfg.num_partitions, timeout_s=5
    )
    assert sorted(mapping.values()) == [0, 1, 2]


def test_missing_nodes_time_out_with_a_clear_error(tmp_path):
    cfg = make_cfg(tmp_path)
    grid = InProcessGrid(make_cfg(tmp_path, **{"num-partitions": 2}))
    with pytest.raises(RuntimeError, match="only 2 of num-partitions=3 nodes connected within 1 s"):
        discover_partitions(grid, cfg.num_partitions, timeout_s=1)


def test_checkpoint_without_resume_is_refused_and_summary_kept(tmp_path):
    # Prepare: a finished 2-round run
    cfg = make_cfg(tmp_path)
    FederationRun(cfg).run(InProcessGrid(cfg))
    before = (tmp_path / "summary.json").read_text()
    # Execute / Assert: the same out-dir again without resume
    with pytest.raises(
        OutDirInUse, match=r"holds a previous run \(checkpoint after round 2\); set resume=true"
    ):
        FederationRun(cfg)
    assert (tmp_path / "summary.json").read_text() == before


def test_resume_with_another_student_model_is_a_clear_error(tmp_path):
    cfg = make_cfg(tmp_path)
    FederationRun(cfg).run(InProcessGrid(cfg))
    other = make_cfg(tmp_path, **{"student-model": "cnn-small", "resume": True})
    with pytest.raises(OutDirInUse, match="does not fit student-model='cnn-small'"):
        FederationRun(other)


# Issue 8, section 2: partial participation with a kill and --resume.
PARTIAL = {"num-partitions": 4, "fraction-train": 0.5, "num-server-rounds": 4}


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [
        {k: v for k, v in r.items() if k not in ("round_seconds", "wall_seconds")} for r in rows
    ]


def test_partial_participation_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    # Prepare: 2 of 4 clients per round; some client sits out a round and comes back.
    ref_cfg = make_cfg(tmp_path / "ref", **PARTIAL)
    sampler = FedDistill({}, P.plan_for(ref_cfg), 2.0, ref_cfg.seed, 0.5, 2)
    sampled = [set(sampler.sample_partitions(r, 4)) for r in range(1, 5)]
    assert any(
        p in sampled[r] and p not in sampled[r - 1] and any(p in s for s in sampled[: r - 1])
        for r in range(2, 4)
        for p in range(4)
    ), sampled
    part = tmp_path / "part"
    three = make_cfg(part, **{**PARTIAL, "num-server-rounds": 3})

    # Execute: the reference; then a run killed after its clients wrote round 3's
    # state but before round 3's checkpoint, resumed to round 4.
    FederationRun(ref_cfg).run(InProcessGrid(ref_cfg))
    FederationRun(three).run(InProcessGrid(three))
    (part / "checkpoints" / "round-3.pt").unlink()
    (part / "checkpoints" / "latest").write_text("round-2.pt")
    resumed = make_cfg(part, **PARTIAL, resume=True)
    FederationRun(resumed).run(InProcessGrid(resumed))

    # Assert: identical metrics (timing aside); every client kept state on disk.
    assert _rows(part) == _rows(tmp_path / "ref")
    for p in range(4):
        assert list((part / "client-state" / f"partition-{p}").glob("round-*.pt"))


def test_serverapp_writes_an_error_code_for_an_out_dir_holding_a_run(tmp_path):
    # Prepare: a checkpoint after round 1 and no resume
    from feddistill.run_folder import OUT_DIR_HOLDS_RUN, RunFolder
    from feddistill.server.app import _run
    from feddistill.server.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "checkpoints", 1, {"rows": []})
    cfg = make_cfg(tmp_path)
    # Execute: the ServerApp's body returns (one error line, no traceback)
    _run(InProcessGrid(cfg), cfg)  # type: ignore[arg-type]
    # Assert: the engine reads the code, not flower.log's text
    error = RunFolder(tmp_path).read_server_error()
    assert error is not None and error.code == OUT_DIR_HOLDS_RUN
    assert "holds a previous run (checkpoint after round 1)" in error.message
    assert not (tmp_path / "summary.json").exists()


def test_serverapp_failure_writes_failed_summary_and_error_code(tmp_path, monkeypatch):
    # Prepare: a round loop that fails in our own code
    from feddistill.run_folder import RUN_FAILED, RunFolder, ServerError
    from feddistill.server import app as server_app
    from feddistill.server.loop import FederationRun

    def boom(self, grid, discovery=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(FederationRun, "run", boom)
    cfg = make_cfg(tmp_path)
    # Execute
    with pytest.raises(RuntimeError, match="boom"):
        server_app._run(InProcessGrid(cfg), cfg)  # type: ignore[arg-type]
    # Assert
    folder = RunFolder(tmp_path)
    assert folder.read_server_error() == ServerError(RUN_FAILED, "RuntimeError: boom")
    summary = folder.read_summary()
    assert summary is not None and summary["status"] == "failed"
    assert summary["error"] == "RuntimeError: boom"


def test_serverapp_writes_checkpoint_mismatch_code_for_a_student_that_does_not_fit(tmp_path):
    # Prepare: a checkpoint whose student has one 2x2 weight, resumed with the mlp student
    import torch

    from feddistill.run_folder import CHECKPOINT_MISMATCH, RunFolder
    from feddistill.server.app import _run
    from feddistill.server.checkpoint import save_checkpoint

    state = {"student": {"fc.weight": torch.zeros(2, 2)}, "consensus": None, "rows": []}
    save_checkpoint(tmp_path / "checkpoints", 1, {**state, "wall_seconds": 1.0})
    cfg = make_cfg(tmp_path, resume=True)
    # Execute
    _run(InProcessGrid(cfg), cfg)  # type: ignore[arg-type]
    # Assert
    error = RunFolder(tmp_path).read_server_error()
    assert error is not None and error.code == CHECKPOINT_MISMATCH
    assert "does not fit student-model='mlp'" in error.message


def test_server_reads_the_effective_config_and_run_config_json_keeps_the_given_one(tmp_path):
    # Prepare: fedmd overrides consensus to "mean" and server distillation to 0 epochs
    cfg = make_cfg(tmp_path, strategy="fedmd", consensus="domain", **{"server-distill-epochs": 2})

    # Execute
    run = FederationRun(cfg)

    # Assert: loop, policy and strategy read the effective config ...
    assert (run.cfg.consensus, run.cfg.server_distill_epochs) == ("mean", 0)
    assert run.policy.cfg is run.cfg
    assert run.strategy.plan.consensus == "mean"
    # ... while run-config.json holds what the user asked for
    saved = json.loads((tmp_path / "run-config.json").read_text())
    assert (saved["consensus"], saved["update-bit-width"], saved["strategy"]) == (
        "domain",
        4,
        "fedmd",
    )


def test_server_distill_rounds_stops_the_server_distillation_after_round_r(tmp_path):
    # Prepare: 3 rounds, server distillation in round 1 only
    cfg = make_cfg(tmp_path, **{"num-server-rounds": 3, "server-distill-rounds": 1})
    # Execute
    FederationRun(cfg).run(InProcessGrid(cfg))
    # Assert: a distillation loss in round 1, none after it
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["server_distill_loss"] for r in rows]
    assert losses[0] > 0.0 and losses[1:] == [0.0, 0.0]


def test_server_work_runs_on_server_num_cpus_threads_and_restores_the_count(tmp_path, monkeypatch):
    # Prepare: the process runs 2 torch threads; record the count in the server's step
    cfg = make_cfg(tmp_path, **{"num-server-rounds": 1, "server-num-cpus": 1})
    seen = []
    real = FederationRun.run_round

    def recording(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(FederationRun, "run_round", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        # Execute
        FederationRun(cfg).run(InProcessGrid(cfg))
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    # Assert
    assert seen == [1]
    assert after == 2
