"""Attack injection on the client side: what a malicious client uploads."""

import pytest
import torch

from feddistill.clients.attacks import attack_logits, attack_update
from feddistill.compression import CompressionSpec, compress_update, decode_tensors

DENSE = CompressionSpec(density=1.0, bit_width=32, error_feedback=False)


def honest_payload():
    update = {"w": torch.tensor([0.5, -1.0]), "n": torch.tensor([3], dtype=torch.long)}
    return compress_update(update, DENSE)[0]


@pytest.mark.parametrize(("attack", "expected"), [("scaled-update", 20.0), ("sign-flip", -4.0)])
def test_update_attack_scales_the_decoded_update(attack, expected):
    # Execute
    out = decode_tensors(attack_update(honest_payload(), attack, torch.Generator()))
    # Assert
    assert out["w"].tolist() == pytest.approx([0.5 * expected, -1.0 * expected])
    assert out["n"].tolist() == [3]  # integer buffers untouched


def test_random_update_has_20_times_the_norm():
    out = decode_tensors(
        attack_update(honest_payload(), "random-update", torch.Generator().manual_seed(0))
    )
    assert float(out["w"].norm()) == pytest.approx(20.0 * (0.5**2 + 1.0) ** 0.5, rel=1e-5)


def test_logits_attacks_leave_the_update_alone():
    payload = honest_payload()
    assert attack_update(payload, "shifted-logits", torch.Generator()) == payload


def test_shifted_logits_roll_one_class_times_3_and_claim_maximal_affinity():
    # Prepare
    logits = torch.tensor([[0.0, -1.0, -2.0]])
    # Execute
    bad, log_aff = attack_logits(
        logits, torch.tensor([-5.0]), "shifted-logits", 2.0, torch.Generator()
    )
    # Assert: class 0's score moves to class 1
    assert bad.tolist() == [[-6.0, 0.0, -3.0]] and log_aff.tolist() == [0.0]


def test_update_attacks_leave_logits_alone():
    logits, aff = torch.zeros(2, 3), torch.full((2,), -1.0)
    out = attack_logits(logits, aff, "sign-flip", 2.0, torch.Generator())
    assert out[0] is logits and out[1] is aff
