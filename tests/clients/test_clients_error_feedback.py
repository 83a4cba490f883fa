"""`error-feedback=false` really drops what top-k did not send (issue 10, bench fidelity)."""

from __future__ import annotations

from pathlib import Path

import torch

from feddistill.clients.round import load_state, run_client_round
from feddistill.config import RunConfig
from feddistill.data import prepare_federated_data
from feddistill.data.federated import FederatedData
from feddistill.models import build_model


def _residual_after_round_1(
    tmp_path: Path, error_feedback: bool, data: FederatedData | None = None
) -> tuple:
    cfg = RunConfig(
        dataset="digits",
        strategy="fedavg-compressed",
        student_model="mlp",
        num_partitions=2,
        update_density=0.05,
        update_bit_width=32,
        error_feedback=error_feedback,
        device="cpu",
    )
    data = data or prepare_federated_data(cfg.data_spec())  # the same for both: EF changes no data
    student = build_model("mlp", data.splits.in_shape, data.splits.num_classes, seed=0)
    global_state = {k: v.clone() for k, v in student.state_dict().items()}
    run_client_round(cfg, data, 0, global_state, None, 1, tmp_path, torch.device("cpu"))
    return load_state(tmp_path, 0, 2).get("residual"), data


def test_error_feedback_off_keeps_no_residual_for_the_next_round(tmp_path: Path) -> None:
    # Prepare / Execute: one top-5% round with error feedback off, and on as the control
    dropped, data = _residual_after_round_1(tmp_path / "off", error_feedback=False)
    kept, _ = _residual_after_round_1(tmp_path / "on", error_feedback=True, data=data)
    # Assert: off stores nothing for round 2; on stores the 95% not sent (non-zero)
    assert dropped is None
    assert isinstance(kept, dict) and any(bool(v.abs().sum() > 0) for v in kept.values())
