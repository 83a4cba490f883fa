"""Issue 12: a client trains the server's masked student and uploads kept entries only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import feddistill.clients.round as round_module
from feddistill.clients.round import client_masks, run_client_round
from feddistill.clients.state import load_state
from feddistill.compression.masks import (
    apply_masks,
    encode_mask,
    global_magnitude_mask,
    maskable_keys,
)
from feddistill.config import RunConfig
from feddistill.data import prepare_federated_data
from feddistill.models import build_model


@pytest.fixture(scope="module")
def digits() -> tuple[RunConfig, object]:
    cfg = RunConfig(
        dataset="digits", teacher_models="mlp", student_model="mlp", num_partitions=2, batch_size=64
    )
    return cfg, prepare_federated_data(cfg.data_spec())


def test_masked_weights_stay_exactly_zero_after_local_training(
    tmp_path: Path, digits: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: 80% of the mlp's weights masked (global magnitude), zero in the global state
    cfg, data = digits
    splits = data.splits
    student = build_model("mlp", splits.in_shape, splits.num_classes, seed=0)
    state = student.state_dict()
    keys = maskable_keys(student)
    masks = global_magnitude_mask({k: state[k] for k in keys}, 0.8)
    global_state = apply_masks(state, masks)
    trained: list[dict] = []
    real_encode = round_module.encode_student

    def spy(student, *args):  # type: ignore[no-untyped-def]
        trained.append({k: v.clone() for k, v in student.state_dict().items()})
        return real_encode(student, *args)

    monkeypatch.setattr(round_module, "encode_student", spy)
    # Execute
    run_client_round(
        cfg,
        data,
        0,
        global_state,
        None,
        3,
        tmp_path,
        torch.device("cpu"),
        mask_blob=encode_mask(masks, 3),
        mask_version=3,
    )
    # Assert: plain keys again, masked entries exactly 0, kept entries trained
    local = trained[0]
    assert set(local) == set(global_state)
    for k in keys:
        assert int((local[k][~masks[k]] != 0).sum()) == 0, k
        assert not torch.equal(local[k][masks[k]], global_state[k][masks[k]]), k
    assert load_state(tmp_path, 0, 4)["mask_version"] == 3


def test_client_without_the_rounds_mask_and_no_bitmap_refuses() -> None:
    # Prepare: the client holds version 2; the round uses 5 and sent no bitmap
    student = torch.nn.Sequential(torch.nn.Linear(3, 2))
    state = {"mask_version": 2, "mask": {"0.weight": torch.ones(2, 3, dtype=torch.bool)}}
    # Execute / Assert
    with pytest.raises(ValueError, match="uses mask version 5, this client holds 2"):
        client_masks(student, state, None, 5)


def test_bitmap_of_another_version_is_refused() -> None:
    # Prepare
    student = torch.nn.Sequential(torch.nn.Linear(3, 2))
    blob = encode_mask({"0.weight": torch.ones(2, 3, dtype=torch.bool)}, 4)
    # Execute / Assert
    with pytest.raises(ValueError, match="bitmap has version 4, the round uses 5"):
        client_masks(student, {}, blob, 5)


def test_client_that_missed_no_change_uses_its_saved_mask() -> None:
    # Prepare
    student = torch.nn.Sequential(torch.nn.Linear(3, 2))
    mask = torch.tensor([[True, False, True], [False, True, False]])
    # Execute
    masks = client_masks(student, {"mask_version": 5, "mask": {"0.weight": mask}}, None, 5)
    # Assert
    assert torch.equal(masks["0.weight"], mask)
