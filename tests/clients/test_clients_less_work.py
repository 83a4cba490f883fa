"""Issue 13: less work per round (teacher-rounds, local-steps, teacher-local-steps) and the
few-steps warning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

import feddistill.clients.round as round_module
from feddistill.clients.round import run_client_round
from feddistill.clients.state import load_state
from feddistill.config import RunConfig, from_mapping
from feddistill.data import prepare_federated_data
from feddistill.learn import SGDSpec, few_steps_warning, train_supervised
from feddistill.models import build_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits() -> tuple[RunConfig, object]:
    cfg = RunConfig(
        dataset="digits",
        teacher_models="mlp",
        student_model="mlp",
        num_partitions=2,
        batch_size=64,
        teacher_rounds=2,
    )
    return cfg, prepare_federated_data(cfg.data_spec())


def _global_state(data) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    student = build_model("mlp", data.splits.in_shape, data.splits.num_classes, seed=0)
    return {k: v.clone() for k, v in student.state_dict().items()}


def test_frozen_teacher_resends_its_cached_logits_without_training(
    tmp_path: Path, digits: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: teacher-rounds=2, so the teacher trains in rounds 1-2 and is frozen in 3
    cfg, data = digits
    calls: list[int] = []
    real_train = round_module.train_supervised

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(round_module, "train_supervised", counting)
    state = _global_state(data)

    # Execute
    replies = [run_client_round(cfg, data, 0, state, None, r, tmp_path, CPU) for r in (1, 2, 3)]

    # Assert: rounds 1-2 train teacher + student (2 calls each), round 3 the student only
    assert len(calls) == 2 + 2 + 1
    assert replies[2].logits == replies[1].logits
    assert (
        replies[2].metrics["teacher_train_accuracy"] == replies[1].metrics["teacher_train_accuracy"]
    )
    assert "teacher" not in load_state(tmp_path, 0, 4)  # frozen: only the cached logits kept


def test_teacher_rounds_zero_keeps_no_logits_cache(tmp_path: Path, digits: tuple) -> None:
    # Prepare
    cfg, data = digits
    always = dataclasses.replace(cfg, teacher_rounds=0)

    # Execute
    run_client_round(always, data, 0, _global_state(data), None, 1, tmp_path, CPU)

    # Assert
    assert set(load_state(tmp_path, 0, 2)) == {"teacher", "residual"}


def test_local_steps_make_exactly_that_many_sgd_steps() -> None:
    # Prepare: 10 samples, batch 4 -> 3 steps per epoch; 7 steps = 3 + 3 + 1
    model = nn.Linear(2, 2)
    x, y = torch.randn(10, 2), torch.zeros(10, dtype=torch.long)
    steps: list[int] = []
    opt_step = torch.optim.SGD.step

    def count(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        steps.append(1)
        return opt_step(self, *args, **kwargs)

    # Execute
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.SGD, "step", count)
        train_supervised(model, x, y, SGDSpec(0.1, 0.0, 4, epochs=5, steps=7), CPU)

    # Assert: epochs=5 ignored
    assert len(steps) == 7


def test_local_steps_zero_keeps_epoch_training_bit_for_bit() -> None:
    # Prepare: 2 epochs of 3 steps are the same 6 steps as steps=6
    x, y = torch.randn(10, 2, generator=torch.Generator().manual_seed(1)), torch.arange(10) % 2
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    b.load_state_dict(a.state_dict())

    # Execute
    train_supervised(a, x, y, SGDSpec(0.1, 0.9, 4, epochs=2), CPU)
    train_supervised(b, x, y, SGDSpec(0.1, 0.9, 4, epochs=0, steps=6), CPU)

    # Assert
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_few_steps_warning_names_clients_and_fewest_steps() -> None:
    # Execute: 30 samples / batch 32 = 1 step; 200 / 32 = 7 steps
    text = few_steps_warning([30, 200, 64], 32, local_epochs=1, local_steps=0)

    # Assert: 30 -> 1 step, 64 -> 2 steps are below 5
    assert text is not None
    assert (
        "2 of 3 clients make fewer than 5 SGD steps per round "
        "(fewest: 1 student (local-epochs=1, local-steps=0); batch-size=32)"
    ) in text
    assert "set local-steps=20, or a smaller batch-size" in text


def test_local_steps_silence_the_few_steps_warning() -> None:
    # Execute / Assert
    assert few_steps_warning([30, 64], 32, local_epochs=1, local_steps=20) is None


def test_few_steps_warning_counts_teacher_steps() -> None:
    # Prepare: students make 20 steps; teachers 1 epoch: 30 / 32 -> 1 step, 200 / 32 -> 7
    sizes = [30, 200]

    # Execute
    text = few_steps_warning(sizes, 32, local_epochs=1, local_steps=20, teacher_epochs=1)

    # Assert: one client's teacher is below 5 steps, and the teacher's keys are named
    assert text is not None
    assert (
        "1 of 2 clients make fewer than 5 SGD steps per round "
        "(fewest: 1 teacher (teacher-epochs=1, teacher-local-steps=0); batch-size=32)"
    ) in text
    assert "set teacher-local-steps=20, or a smaller batch-size" in text


def test_few_steps_warning_names_both_models_when_both_are_short() -> None:
    # Execute: 30 samples, batch 32: 1 student step, 2 teacher epochs = 2 teacher steps
    text = few_steps_warning([30], 32, local_epochs=1, teacher_epochs=2)

    # Assert
    assert text is not None
    assert (
        "fewest: 1 student (local-epochs=1, local-steps=0), "
        "2 teacher (teacher-epochs=2, teacher-local-steps=0)"
    ) in text
    assert "set local-steps=20 and teacher-local-steps=20" in text


def test_teacher_local_steps_silence_the_teacher_part_of_the_warning() -> None:
    # Execute / Assert
    assert (
        few_steps_warning(
            [30, 64], 32, local_epochs=1, local_steps=20, teacher_epochs=1, teacher_local_steps=20
        )
        is None
    )


def test_few_steps_warning_ignores_models_the_strategy_does_not_train() -> None:
    # Execute: logits-only trains no student; its teachers make 20 steps
    text = few_steps_warning([30], 32, local_epochs=None, teacher_epochs=1, teacher_local_steps=20)

    # Assert
    assert text is None


def test_teacher_local_steps_make_the_teacher_take_that_many_steps(
    tmp_path: Path, digits: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: record the SGD settings of each train_supervised call (teacher first)
    cfg, data = digits
    cfg = dataclasses.replace(cfg, teacher_local_steps=7, local_steps=3)
    specs: list[SGDSpec] = []
    real_train = round_module.train_supervised

    def recording(model, x, y, sgd, *args, **kwargs):  # type: ignore[no-untyped-def]
        specs.append(sgd)
        return real_train(model, x, y, sgd, *args, **kwargs)

    monkeypatch.setattr(round_module, "train_supervised", recording)

    # Execute
    run_client_round(cfg, data, 0, _global_state(data), None, 1, tmp_path, CPU)

    # Assert: teacher 7 steps, student 3 (fit makes exactly `steps` steps, tested above)
    assert [s.steps for s in specs] == [7, 3]


@pytest.mark.parametrize("key", ["local-steps", "teacher-local-steps", "teacher-rounds"])
def test_negative_step_and_round_counts_are_refused(key: str) -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match=rf"{key}=-1 is out of range; allowed: \[0, inf\)"):
        from_mapping({key: -1})
