"""Checkpoints load with ``torch.load(weights_only=True)``: tensors and plain containers only."""

from __future__ import annotations

import pytest
import torch

from feddistill.server.checkpoint import load_latest_checkpoint, save_checkpoint


class NotPlainData:
    """A class a checkpoint must not hold: unpickling it could run code."""


def test_checkpoint_with_student_mask_replicas_and_rows_loads_with_weights_only(tmp_path):
    # Prepare: what FederationPolicy.checkpoint_state and RunRecorder.record_round store
    state = {
        "student": {"fc.weight": torch.ones(2, 3), "bn.num_batches_tracked": torch.tensor(4)},
        "consensus": torch.full((5, 3), 1 / 3),
        "mask": {
            "masks": {"fc.weight": torch.tensor([True, False])},
            "version": 2,
            "known": {0: 2},
        },
        "replicas": {1: (2, {"fc.weight": torch.zeros(2, 3)})},
        "rows": [{"round": 1, "accuracy": 0.5, "teacher_accuracy": None, "robust_events": []}],
        "wall_seconds": 1.5,
    }
    save_checkpoint(tmp_path, 2, state)

    # Execute
    ckpt = load_latest_checkpoint(tmp_path)

    # Assert
    assert ckpt is not None
    assert ckpt["round"] == 2
    assert torch.equal(ckpt["student"]["bn.num_batches_tracked"], torch.tensor(4))
    assert ckpt["mask"]["known"] == {0: 2}
    assert ckpt["replicas"][1][0] == 2
    assert ckpt["rows"] == state["rows"]


def test_checkpoint_holding_a_pickled_object_is_refused(tmp_path):
    # Prepare: a checkpoint whose unpickling would import and build an arbitrary class
    torch.save({"round": 1, "student": NotPlainData()}, tmp_path / "round-1.pt")
    (tmp_path / "latest").write_text("round-1.pt")

    # Execute / Assert: weights_only=True refuses it, reported as an unreadable checkpoint
    with pytest.raises(
        ValueError, match=r"round-1.pt' cannot be read: .*[Ww]eights only load failed"
    ):
        load_latest_checkpoint(tmp_path)
