"""Tests of feddistill.compression.consensus_payload: the consensus downlink, both ways."""

from __future__ import annotations

import pytest
import torch

from feddistill.compression import CodecError
from feddistill.compression.codec import encode_raw, pack_payload
from feddistill.compression.consensus_payload import decode_consensus, encode_consensus


def test_consensus_at_32_bits_comes_back_exactly() -> None:
    # Prepare: rows that sum to 1 exactly in binary
    soft = torch.tensor([[0.25, 0.75], [0.5, 0.5], [0.0, 0.0]])

    # Execute
    back = decode_consensus(encode_consensus(soft, 32), num_samples=3, num_classes=2)

    # Assert: the all-zero row (a sample KD3A dropped) stays all zeros
    assert torch.equal(back, soft)


def test_decoded_rows_are_clamped_at_zero_and_renormalised() -> None:
    # Prepare: a RAW record with a negative entry, as quantization may leave one
    payload = pack_payload([encode_raw("soft-labels", torch.tensor([[-0.5, 1.0, 1.0]]))])

    # Execute
    back = decode_consensus(payload, num_samples=1, num_classes=3)

    # Assert: [0, 1, 1] / 2
    assert torch.equal(back, torch.tensor([[0.0, 0.5, 0.5]]))


def test_decode_refuses_another_shape_before_decoding() -> None:
    # Prepare: (2, 3) sent, the client expects (2, 2)
    payload = encode_consensus(torch.full((2, 3), 1 / 3), 16)

    # Execute / Assert
    with pytest.raises(CodecError, match=r"claims shape \(2, 3\), expected \(2, 2\)"):
        decode_consensus(payload, num_samples=2, num_classes=2)


def test_decode_refuses_a_payload_without_soft_labels() -> None:
    # Prepare
    payload = pack_payload([])

    # Execute / Assert
    with pytest.raises(CodecError, match="consensus payload holds no 'soft-labels' tensor"):
        decode_consensus(payload, num_samples=2, num_classes=2)
