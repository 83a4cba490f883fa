"""Tests of feddistill.compression.teacher_upload: the teacher upload, both ways."""

from __future__ import annotations

import math

import pytest
import torch

from feddistill.compression import CodecError
from feddistill.compression.codec import encode_raw, pack_payload
from feddistill.compression.teacher_upload import TeacherUpload


def test_from_teacher_shifts_rows_to_max_zero_and_clips_at_minus_8t() -> None:
    # Prepare: T = 2 -> clip at -16; row [1, 2, -30] - 2 = [-1, 0, -32] -> [-1, 0, -16]
    logits = torch.tensor([[1.0, 2.0, -30.0], [5.0, 5.0, 4.0]])

    # Execute
    upload = TeacherUpload.from_teacher(logits, torch.ones(2), temperature=2.0)

    # Assert
    assert torch.equal(upload.logits, torch.tensor([[-1.0, 0.0, -16.0], [0.0, 0.0, -1.0]]))


def test_from_teacher_sends_log_affinity_floored_at_1e_30() -> None:
    # Prepare: affinity 1 -> log 0; affinity 0 -> log(1e-30) = -69.0776 (float32)
    affinity = torch.tensor([1.0, 0.0])

    # Execute
    upload = TeacherUpload.from_teacher(torch.zeros(2, 3), affinity, temperature=1.0)

    # Assert
    assert upload.log_affinity[0] == 0.0
    assert upload.log_affinity[1].item() == pytest.approx(math.log(1e-30), rel=1e-6)


def test_encode_then_decode_at_32_bits_is_exact() -> None:
    # Prepare
    upload = TeacherUpload(torch.tensor([[0.0, -1.5], [-3.25, 0.0]]), torch.tensor([-0.5, 0.0]))

    # Execute
    back = TeacherUpload.decode(upload.encode(32), num_samples=2, num_classes=2)

    # Assert
    assert torch.equal(back.logits, upload.logits)
    assert torch.equal(back.log_affinity, upload.log_affinity)


def test_decode_refuses_another_class_count_before_decoding() -> None:
    # Prepare: logits (2, 3), the server expects K = 2
    payload = TeacherUpload(torch.zeros(2, 3), torch.zeros(2)).encode(8)

    # Execute / Assert
    with pytest.raises(
        CodecError, match=r"tensor 'logits' claims shape \(2, 3\), expected \(2, 2\)"
    ):
        TeacherUpload.decode(payload, num_samples=2, num_classes=2)


def test_decode_refuses_a_payload_without_affinity() -> None:
    # Prepare
    payload = pack_payload([encode_raw("logits", torch.zeros(2, 3))])

    # Execute / Assert
    with pytest.raises(
        CodecError, match=r"teacher logits \(B, K\) and affinity \(B,\) are required"
    ):
        TeacherUpload.decode(payload)


def test_decode_refuses_non_finite_logits() -> None:
    # Prepare: RAW records carry a NaN the encoder itself would refuse
    nan_logits = torch.tensor([[0.0, float("nan")]])
    payload = pack_payload(
        [encode_raw("logits", nan_logits), encode_raw("affinity", torch.zeros(1))]
    )

    # Execute / Assert
    with pytest.raises(CodecError, match="teacher logits or affinity contain NaN or Inf"):
        TeacherUpload.decode(payload)


def test_affinity_weights_undo_the_log_with_a_floor_of_1e_12() -> None:
    # Prepare: exp(0) = 1, exp(-0.5) = 0.60653, exp(-100) = 3.7e-44 -> 1e-12
    upload = TeacherUpload(torch.zeros(3, 2), torch.tensor([0.0, -0.5, -100.0]))

    # Execute
    weights = upload.affinity_weights()

    # Assert
    assert weights[0] == 1.0
    assert weights[1].item() == pytest.approx(0.60653066, rel=1e-6)
    assert weights[2].item() == pytest.approx(1e-12, rel=1e-6)
