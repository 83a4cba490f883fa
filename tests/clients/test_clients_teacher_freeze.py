"""Issue 11: a frozen teacher (teacher-rounds or plateau) sends no new logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from feddistill.clients.round import run_client_round
from feddistill.clients.state import load_state
from feddistill.clients.teacher_freeze import (
    LOGITS_REUSED,
    LOGITS_WHOLE_PROXY,
    Plateau,
    frozen_upload,
    teacher_frozen,
    validation_split,
)
from feddistill.compression.teacher_upload import TeacherUpload
from feddistill.config import RunConfig
from feddistill.data import prepare_federated_data
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
        teacher_rounds=1,
    )
    return cfg, prepare_federated_data(cfg)


def _global_state(data) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    student = build_model("mlp", data.splits.in_shape, data.splits.num_classes, seed=0)
    return {k: v.clone() for k, v in student.state_dict().items()}


def test_frozen_teacher_sends_no_logits_when_the_server_holds_them(
    tmp_path: Path, digits: tuple
) -> None:
    # Prepare: teacher-rounds=1, so round 2 is frozen
    cfg, data = digits
    state = _global_state(data)
    run_client_round(cfg, data, 0, state, None, 1, tmp_path, CPU)
    # Execute
    reply = run_client_round(cfg, data, 0, state, None, 2, tmp_path, CPU, logits_held=True)
    # Assert
    assert reply.logits == b""
    assert reply.metrics["logits_bytes"] == 0.0
    assert reply.metrics[LOGITS_REUSED] == 1.0


def test_frozen_teacher_resends_its_upload_when_the_server_holds_none(
    tmp_path: Path, digits: tuple
) -> None:
    # Prepare
    cfg, data = digits
    state = _global_state(data)
    first = run_client_round(cfg, data, 0, state, None, 1, tmp_path, CPU)
    # Execute
    reply = run_client_round(cfg, data, 0, state, None, 2, tmp_path, CPU, logits_held=False)
    # Assert
    assert reply.logits == first.logits
    assert reply.metrics[LOGITS_REUSED] == 0.0


def test_plateau_counts_rounds_without_a_better_validation_accuracy():
    # Prepare: 0.5 (best), 0.6 (best), 0.6 (stale 1), 0.55 (stale 2), 0.7 (best)
    plateau = Plateau()
    seen = []
    # Execute
    for accuracy in (0.5, 0.6, 0.6, 0.55, 0.7):
        plateau = plateau.step(accuracy)
        seen.append((plateau.best, plateau.stale))
    # Assert
    assert seen == [(0.5, 0), (0.6, 0), (0.6, 1), (0.6, 2), (0.7, 0)]


def test_plateau_freezes_the_teacher_after_patience_rounds():
    # Prepare: patience 2; a cached upload exists
    cfg = RunConfig(teacher_plateau_rounds=2)
    cache = {"payload": torch.zeros(3, dtype=torch.uint8), "metrics": {}}
    one = {"teacher": {}, "teacher_cache": cache, "teacher_plateau": Plateau(0.9, 1).as_state()}
    two = {"teacher": {}, "teacher_cache": cache, "teacher_plateau": Plateau(0.9, 2).as_state()}
    # Execute / Assert
    assert not teacher_frozen(cfg, one, 5)
    assert teacher_frozen(cfg, two, 5)
    assert not teacher_frozen(cfg, {"teacher_plateau": two["teacher_plateau"]}, 5)  # no cache


def test_frozen_upload_repeats_the_cached_metrics():
    # Prepare
    cache = {"payload": torch.tensor([1, 2], dtype=torch.uint8), "metrics": {"teacher_loss": 0.5}}
    # Execute
    held = frozen_upload(cache, server_holds_logits=True)
    again = frozen_upload(cache, server_holds_logits=False)
    # Assert
    assert held == (b"", {"teacher_loss": 0.5, LOGITS_REUSED: 1.0})
    assert again == (
        b"\x01\x02",
        {"teacher_loss": 0.5, LOGITS_REUSED: 0.0, LOGITS_WHOLE_PROXY: 1.0},
    )


def test_validation_split_holds_out_a_tenth():
    # Execute: 25 samples -> round(2.5) = 2 held out (banker's rounding), 23 train
    train, val = validation_split(25, seed=0, partition_id=1)
    # Assert
    assert (len(train), len(val)) == (23, 2)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(25))


def test_validation_split_rejects_fewer_than_two_samples():
    # Execute / Assert
    with pytest.raises(ValueError, match="needs >= 2 samples per client.*partition 3 has 1"):
        validation_split(1, seed=0, partition_id=3)


def test_plateau_round_reports_the_validation_accuracy_it_keeps(
    tmp_path: Path, digits: tuple
) -> None:
    # Prepare: teacher-plateau-rounds=2 (the teacher trains on 90 %, validates on 10 %)
    cfg, data = digits
    cfg = cfg.replace(teacher_rounds=0, teacher_plateau_rounds=2)
    # Execute
    reply = run_client_round(cfg, data, 0, _global_state(data), None, 1, tmp_path, CPU)
    # Assert: the first accuracy is the best so far, with no stale round; the upload is
    # cached for the rounds after a plateau
    state = load_state(tmp_path, 0, 2)
    assert 0.0 <= reply.metrics["teacher_val_accuracy"] <= 1.0
    assert state["teacher_plateau"] == {"best": reply.metrics["teacher_val_accuracy"], "stale": 0.0}
    assert state["teacher_cache"]["payload"].numpy().tobytes() == reply.logits


def test_with_a_logits_subset_the_cache_covers_the_whole_proxy_set(
    tmp_path: Path, digits: tuple
) -> None:
    # Prepare: half the proxy rows per round; teacher-rounds=1, so round 2 is frozen
    cfg, data = digits
    cfg = cfg.replace(logits_subset=0.5)
    state = _global_state(data)
    num_proxy, num_classes = len(data.splits.proxy_x), data.splits.num_classes
    # Execute
    first = run_client_round(cfg, data, 0, state, None, 1, tmp_path, CPU)
    cache = load_state(tmp_path, 0, 2)["teacher_cache"]["payload"].numpy().tobytes()
    resent = run_client_round(cfg, data, 0, state, None, 2, tmp_path, CPU, logits_held=False)
    # Assert: round 1 uploads its half; the cache and the frozen resend hold all B rows
    half = round(0.5 * num_proxy)
    assert TeacherUpload.decode(first.logits, half, num_classes).logits.shape == (half, num_classes)
    assert TeacherUpload.decode(cache, num_proxy, num_classes).logits.shape == (
        num_proxy,
        num_classes,
    )
    assert resent.logits == cache
    assert resent.metrics[LOGITS_WHOLE_PROXY] == 1.0
    assert "logits_whole_proxy" not in first.metrics


def test_teacher_rounds_count_the_clients_own_trained_rounds(tmp_path: Path, digits: tuple) -> None:
    # Prepare: teacher-rounds=2; the client is first sampled in round 4, then in 7 and 9
    cfg, data = digits
    cfg = cfg.replace(teacher_rounds=2)
    state = _global_state(data)
    # Execute
    replies = [
        run_client_round(cfg, data, 0, state, None, r, tmp_path, CPU, logits_held=True)
        for r in (4, 7, 9)
    ]
    # Assert: it trains in its first two rounds (4 and 7), then is frozen
    assert [r.metrics.get(LOGITS_REUSED, 0.0) for r in replies] == [0.0, 0.0, 1.0]
    assert load_state(tmp_path, 0, 10)["teacher_trained_rounds"] == 2
    assert "teacher" not in load_state(tmp_path, 0, 10)  # a frozen teacher keeps no weights
