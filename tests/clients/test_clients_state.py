"""Issue 8, section 2: a client resumes from its newest state, however many rounds it
sat out, and a resumed run finds every client's newest state."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import feddistill.clients.round as round_module
from feddistill.clients.round import run_client_round
from feddistill.clients.state import load_state, save_state, state_path
from feddistill.config import RunConfig
from feddistill.data import prepare_federated_data
from feddistill.models import build_model


def _files(state_dir: Path, partition_id: int) -> list[str]:
    return sorted(p.name for p in (state_dir / f"partition-{partition_id}").glob("*.pt"))


def test_client_that_skipped_rounds_loads_its_newest_state_exactly(tmp_path: Path) -> None:
    # Prepare: partition 0 took part in round 1 only; partition 1 in rounds 1-4.
    residual = {"w": torch.randn(5, generator=torch.Generator().manual_seed(0))}
    save_state(tmp_path, 0, 1, {"residual": residual})
    for r in range(1, 5):
        save_state(tmp_path, 1, r, {"round": r})

    # Execute: round 5 (before the fix: the state after round 4, i.e. {} for partition 0).
    state = load_state(tmp_path, 0, 5)

    # Assert
    assert torch.equal(state["residual"]["w"], residual["w"])
    assert load_state(tmp_path, 1, 5) == {"round": 4}


def test_newest_state_is_never_deleted(tmp_path: Path) -> None:
    # Prepare / Execute: partition 0 takes part in rounds 1, 4 and 6.
    save_state(tmp_path, 0, 1, {"round": 1})
    save_state(tmp_path, 0, 4, {"round": 4})
    after_4 = _files(tmp_path, 0)
    save_state(tmp_path, 0, 6, {"round": 6})

    # Assert: this round's file and the newest before it are kept, older ones go.
    assert after_4 == ["round-1.pt", "round-4.pt"]
    assert _files(tmp_path, 0) == ["round-4.pt", "round-6.pt"]


def test_resumed_round_ignores_the_killed_runs_state_of_that_round(tmp_path: Path) -> None:
    # Prepare: the killed run wrote rounds 1 and 3 (and a stray round 5) for partition 0,
    # but its last checkpoint is round 2, so round 3 runs again.
    for r in (1, 3, 5):
        state_path(tmp_path, 0, r).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"round": r}, state_path(tmp_path, 0, r))

    # Execute
    state = load_state(tmp_path, 0, 3)
    save_state(tmp_path, 0, 3, {"round": 3, "rerun": True})

    # Assert: round 3 starts from round 1's state; the abandoned round 5 is removed.
    assert state == {"round": 1}
    assert _files(tmp_path, 0) == ["round-1.pt", "round-3.pt"]


def test_no_state_before_the_first_round(tmp_path: Path) -> None:
    # Execute / Assert
    assert load_state(tmp_path, 0, 1) == {}


@pytest.fixture(scope="module")
def digits() -> tuple[RunConfig, object]:
    cfg = RunConfig(
        dataset="digits",
        teacher_models="mlp",
        student_model="mlp",
        num_partitions=2,
        batch_size=64,
    )
    return cfg, prepare_federated_data(cfg.data_spec())


def test_rejoining_client_keeps_its_teacher_and_residual(
    tmp_path: Path, digits: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: partition 0 runs round 1, sits out rounds 2-3 and rejoins in round 4;
    # a control starts round 4 with no state (what the client got before the fix).
    cfg, data = digits
    splits = data.splits
    student = build_model("mlp", splits.in_shape, splits.num_classes, seed=0)
    global_state = {k: v.clone() for k, v in student.state_dict().items()}
    seen: list[dict] = []
    real_compress = round_module.compress_update

    def spy(update, spec, residual=None, generator=None):  # type: ignore[no-untyped-def]
        seen.append(residual)
        return real_compress(update, spec, residual, generator=generator)

    monkeypatch.setattr(round_module, "compress_update", spy)
    cpu = torch.device("cpu")

    # Execute
    first = run_client_round(cfg, data, 0, global_state, None, 1, tmp_path / "run", cpu)
    saved = load_state(tmp_path / "run", 0, 2)
    rejoin = run_client_round(cfg, data, 0, global_state, None, 4, tmp_path / "run", cpu)
    reset = run_client_round(cfg, data, 0, global_state, None, 4, tmp_path / "fresh", cpu)

    # Assert: round 4 got round 1's residual bit for bit, and its teacher kept learning.
    assert seen[0] is None and seen[2] is None
    assert seen[1].keys() == saved["residual"].keys()
    assert all(torch.equal(seen[1][k], saved["residual"][k]) for k in saved["residual"])
    teacher_acc = [m.metrics["teacher_train_accuracy"] for m in (first, rejoin, reset)]
    assert teacher_acc[1] > teacher_acc[2], teacher_acc
