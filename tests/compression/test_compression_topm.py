"""Top-m teacher logits (TeacherUpload): exact bytes, decoding, and rejection of bad payloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feddistill.compression import CodecError, encode_tensors
from feddistill.compression.packing import pack_codes
from feddistill.compression.teacher_upload import TeacherUpload, class_id_bits, upload_bytes


def _rows(b: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(b, k, generator=gen) * 3, torch.randn(b, generator=gen)


def _hostile(classes: list[int], b: int, m: int) -> bytes:
    """A top-m payload (K=10) whose class-id record holds ``classes`` as 4-bit codes."""
    ids = torch.tensor(list(pack_codes(np.array(classes, dtype=np.uint8), 4)), dtype=torch.uint8)
    return encode_tensors(
        {
            "logits": torch.zeros(b, m),
            "fill": torch.zeros(b),
            "affinity": torch.zeros(b),
            "classes": ids,
        },
        bit_width=4,
        per_channel=False,
    )


def test_topm_payload_bytes_by_hand():
    # Prepare: B=4 rows, K=10 classes, m=1, 4 bits. Header 18 + CRC 4 = 22. Each FLOAT
    # record: 2 + len(name) + dtype 1 + ndim 1 + 4 per dim + kind 1, then meta 17, scale
    # + zero point + offset 9, index length 8, values ceil(n * 4 / 8):
    # logits (4, 1): 19 + 34 + 2 = 55; fill (4,): 13 + 34 + 2 = 49; affinity (4,): 17 +
    # 34 + 2 = 53; classes RAW uint8 (2,): 16 + nbytes 8 + 2 ids bytes (4 ids x 4 bits) = 26
    logits, affinity = _rows(4, 10)
    # Execute
    payload = TeacherUpload(logits, affinity).encode(bit_width=4, top_m=1, temperature=2.0)
    # Assert
    assert len(payload) == 22 + 55 + 49 + 53 + 26 == 205
    assert upload_bytes(4, 10, top_m=1, bit_width=4) == 205


def test_all_classes_payload_bytes_by_hand():
    # Prepare: B=4, K=10, every class, 4 bits: logits (4, 10) 19 + 34 + 20 = 73,
    # affinity 53, header + CRC 22
    logits, affinity = _rows(4, 10)
    # Execute
    payload = TeacherUpload(logits, affinity).encode(bit_width=4, top_m=0)
    # Assert
    assert len(payload) == 22 + 73 + 53 == 148
    assert upload_bytes(4, 10, top_m=0, bit_width=4) == 148


def test_topm_decode_keeps_top_classes_and_tail_mass():
    # Prepare: one row [4, 2, 0, 0] at T=1, m=1, fp32: fill = log(mean(e^2, e^0, e^0))
    logits = torch.tensor([[4.0, 2.0, 0.0, 0.0]])
    fill = float(np.log((np.exp(2.0) + 2.0) / 3.0))
    # Execute
    payload = TeacherUpload(logits, torch.zeros(1)).encode(bit_width=32, top_m=1, temperature=1.0)
    upload = TeacherUpload.decode(payload, num_samples=1, num_classes=4, top_m=1)
    decoded, affinity = upload.logits, upload.log_affinity
    # Assert: class 0 keeps 4, the three others share the fill, tail mass unchanged
    assert torch.allclose(decoded, torch.tensor([[4.0, fill, fill, fill]]))
    tail = torch.softmax(decoded, 1)[0, 1:].sum()
    assert torch.isclose(tail, torch.softmax(logits, 1)[0, 1:].sum())
    assert torch.equal(affinity, torch.zeros(1))


def test_topm_decode_rejects_class_id_out_of_range():
    # Prepare: K=10, 4-bit ids, one id is 12
    payload = _hostile([3, 12], b=2, m=1)
    # Execute / Assert
    with pytest.raises(CodecError, match="class id 12 out of range"):
        TeacherUpload.decode(payload, num_samples=2, num_classes=10, top_m=1)


def test_topm_decode_rejects_a_class_named_twice_in_a_row():
    # Prepare: one row, m=2, both ids 5
    payload = _hostile([5, 5], b=1, m=2)
    # Execute / Assert
    with pytest.raises(CodecError, match="names one class twice"):
        TeacherUpload.decode(payload, num_samples=1, num_classes=10, top_m=2)


def test_topm_decode_rejects_class_bytes_that_do_not_match_the_rows():
    # Prepare: 2 rows x m=1 need 1 byte of 4-bit ids; the payload holds 3 ids (2 bytes)
    payload = _hostile([1, 2, 3], b=2, m=1)
    # Execute / Assert
    with pytest.raises(CodecError):
        TeacherUpload.decode(payload, num_samples=2, num_classes=10, top_m=1)


def test_topm_decode_rejects_a_payload_of_other_rows():
    # Prepare: encoded for 4 rows, the server expects 5
    logits, affinity = _rows(4, 10)
    payload = TeacherUpload(logits, affinity).encode(bit_width=4, top_m=2, temperature=2.0)
    # Execute / Assert
    with pytest.raises(CodecError):
        TeacherUpload.decode(payload, num_samples=5, num_classes=10, top_m=2)


def test_topm_decode_rejects_a_truncated_payload():
    # Prepare
    logits, affinity = _rows(4, 10)
    payload = TeacherUpload(logits, affinity).encode(bit_width=4, top_m=2, temperature=2.0)
    # Execute / Assert
    with pytest.raises(CodecError):
        TeacherUpload.decode(payload[:-7], num_samples=4, num_classes=10, top_m=2)


def test_encode_rejects_top_m_not_below_the_class_count():
    # Prepare
    logits, affinity = _rows(4, 10)
    # Execute / Assert
    with pytest.raises(ValueError, match=r"logits-top-m must be in \[0, 10\).*got 10"):
        TeacherUpload(logits, affinity).encode(bit_width=4, top_m=10)


def test_encode_rejects_mismatched_shapes():
    # Prepare: 4 rows of logits, 3 affinities
    logits, _ = _rows(4, 10)
    # Execute / Assert
    with pytest.raises(ValueError, match=r"logits must be \(B, K\) and affinity \(B,\)"):
        TeacherUpload(logits, torch.zeros(3)).encode(bit_width=4, top_m=1)


def test_encode_rejects_non_positive_temperature():
    # Prepare
    logits, affinity = _rows(4, 10)
    # Execute / Assert
    with pytest.raises(ValueError, match="temperature must be > 0, got 0.0"):
        TeacherUpload(logits, affinity).encode(bit_width=4, top_m=1, temperature=0.0)


def test_class_id_bits_rejects_more_than_256_classes():
    # Execute / Assert
    with pytest.raises(ValueError, match="2 <= num_classes <= 256, got 300"):
        class_id_bits(300)


def test_topm_decode_rejects_unknown_sizes():
    # Prepare: a valid top-2 payload, but the server passes no B and K
    logits, affinity = _rows(4, 10)
    payload = TeacherUpload(logits, affinity).encode(bit_width=4, top_m=2, temperature=2.0)
    # Execute / Assert
    with pytest.raises(CodecError, match="need the proxy size and class count up front"):
        TeacherUpload.decode(payload, top_m=2)


def test_topm_decode_rejects_a_payload_without_fill_and_classes():
    # Prepare: an all-classes-shaped payload whose logits are (2, 1) like top-1's
    payload = encode_tensors(
        {"logits": torch.zeros(2, 1), "affinity": torch.zeros(2)}, bit_width=32
    )
    # Execute / Assert
    with pytest.raises(CodecError, match=r"top-m logits need \['affinity', 'classes'"):
        TeacherUpload.decode(payload, num_samples=2, num_classes=10, top_m=1)


def test_topm_decode_rejects_class_ids_that_are_not_uint8():
    # Prepare: the class-id record (1 entry, as 2 rows x m=1 at 4 bits need) is int8
    payload = encode_tensors(
        {
            "logits": torch.zeros(2, 1),
            "fill": torch.zeros(2),
            "affinity": torch.zeros(2),
            "classes": torch.zeros(1, dtype=torch.int8),
        },
        bit_width=32,
    )
    # Execute / Assert
    with pytest.raises(CodecError, match="class ids must be packed uint8, got torch.int8"):
        TeacherUpload.decode(payload, num_samples=2, num_classes=10, top_m=1)
