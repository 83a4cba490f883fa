"""`feddistill run --engine inprocess`'s driver (feddistill.inprocess.run_inprocess_job)."""

from __future__ import annotations

from feddistill.config import from_mapping
from feddistill.inprocess import run_inprocess_job

TINY = {
    "dataset": "digits",
    "num-partitions": 2,
    "num-server-rounds": 2,
    "min-partition-size": 5,
    "teacher-models": "mlp",
    "student-model": "mlp",
    "batch-size": 64,
}


def test_rows_and_phases_reach_the_callbacks_in_order(tmp_path):
    # Prepare
    cfg = from_mapping({**TINY, "out-dir": str(tmp_path)})
    events: list[str] = []

    # Execute
    summary = run_inprocess_job(
        cfg, on_row=lambda row: events.append(f"row {row['round']}"), on_phase=events.append
    )

    # Assert: round 1's line before the "round 2/2" phase, as the simulation engine shows it
    assert summary["status"] == "completed"
    assert events.index("round 1/2") < events.index("row 1") < events.index("round 2/2")
    assert events.index("round 2/2") < events.index("row 2")
    assert (tmp_path / "timings").is_dir()


def test_a_failed_run_returns_a_failed_summary_and_logs_the_traceback(tmp_path):
    # Prepare: both clients fail, fewer than min-train-nodes=2 succeed
    cfg = from_mapping({**TINY, "out-dir": str(tmp_path), "fail-partitions": "0,1"})

    # Execute
    summary = run_inprocess_job(cfg)

    # Assert
    assert summary["status"] == "failed"
    assert "min-train-nodes" in summary["error"]
    assert "Traceback" in (tmp_path / "flower.log").read_text()
