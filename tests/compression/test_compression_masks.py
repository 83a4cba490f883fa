"""Issue 12: the global mask's schedule, magnitude selection, bitmap and packing."""

from __future__ import annotations

import pytest
import torch

from feddistill.clients.round import encode_student
from feddistill.compression import CompressionSpec
from feddistill.compression.masks import (
    decode_mask,
    encode_mask,
    global_magnitude_mask,
    pack_unmasked,
    sparsity_at,
    unpack_unmasked,
)


def test_schedule_is_zhu_gupta_cubic_ramp_from_start_to_end_round():
    # Execute
    values = [sparsity_at(r, 0.8, start_round=2, end_round=4) for r in (1, 2, 3, 4, 5)]
    # Assert: f = 1/3, 2/3, 1 -> 0.8 * (1 - (1 - f)^3) = 0.8 * 19/27, 0.8 * 26/27, 0.8
    assert values == pytest.approx([0.0, 0.8 * 19 / 27, 0.8 * 26 / 27, 0.8, 0.8])


def test_schedule_rejects_target_of_one():
    # Execute / Assert
    with pytest.raises(ValueError, match=r"target-sparsity must be in \[0, 1\), got 1.0"):
        sparsity_at(1, 1.0, 1, 2)


def test_schedule_rejects_end_before_start():
    # Execute / Assert
    with pytest.raises(ValueError, match="got 3 and 2"):
        sparsity_at(1, 0.5, 3, 2)


def test_global_magnitude_mask_ranks_all_tensors_together():
    # Prepare: 6 weights, half pruned: the three smallest are 0.5 (b), 1 and 2 (a)
    weights = {"a": torch.tensor([1.0, -2.0, 3.0, 4.0]), "b": torch.tensor([0.5, -5.0])}
    # Execute
    masks = global_magnitude_mask(weights, 0.5, min_density_per_layer=0.01)
    # Assert
    assert masks["a"].tolist() == [False, False, True, True]
    assert masks["b"].tolist() == [False, True]


def test_per_layer_floor_keeps_the_largest_weight_of_a_small_layer():
    # Prepare: global ranking would prune all of b (0.1, 0.2); the floor keeps 1 of 2
    weights = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.1, 0.2])}
    # Execute
    masks = global_magnitude_mask(weights, 0.5, min_density_per_layer=0.5)
    # Assert
    assert masks["a"].tolist() == [True, True]
    assert masks["b"].tolist() == [False, True]


def test_mask_only_grows_a_pruned_weight_stays_pruned():
    # Prepare: 4.0 was pruned before; now 25% sparsity would keep it by magnitude
    weights = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    previous = {"a": torch.tensor([True, True, True, False])}
    # Execute
    masks = global_magnitude_mask(weights, 0.25, previous, min_density_per_layer=0.01)
    # Assert
    assert masks["a"].tolist() == [True, True, True, False]


def test_mask_rejects_sparsity_of_one():
    # Execute / Assert
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.0"):
        global_magnitude_mask({"a": torch.ones(3)}, 1.0)


def test_bitmap_is_one_bit_per_weight_after_12_byte_header_and_round_trips():
    # Prepare: 72 + 10 = 82 maskable weights -> ceil(82 / 8) = 11 bytes + 12 header
    gen = torch.Generator().manual_seed(0)
    masks = {
        "c": torch.rand(8, 1, 3, 3, generator=gen) > 0.5,
        "l": torch.rand(10, generator=gen) > 0.5,
    }
    # Execute
    blob = encode_mask(masks, version=7)
    back, version = decode_mask(blob, {"c": (8, 1, 3, 3), "l": (10,)})
    # Assert
    assert len(blob) == 23
    assert version == 7
    assert all(torch.equal(back[k], masks[k]) for k in masks)


def test_bitmap_for_other_shapes_is_rejected_naming_both_sizes():
    # Prepare
    blob = encode_mask({"l": torch.ones(10, dtype=torch.bool)}, version=1)
    # Execute / Assert
    with pytest.raises(ValueError, match="14 bytes .* 20 maskable weights: expected 15 bytes"):
        decode_mask(blob, {"l": (20,)})


def test_unpack_rejects_packed_length_other_than_kept_count():
    # Prepare
    masks = {"w": torch.tensor([True, False, True])}
    # Execute / Assert
    with pytest.raises(ValueError, match=r"packed 'w' has shape \(3,\), its mask keeps 2"):
        unpack_unmasked({"w": torch.ones(3)}, masks)


def test_pack_then_unpack_puts_zeros_at_masked_entries():
    # Prepare
    masks = {"w": torch.tensor([[True, False], [False, True]])}
    # Execute
    packed = pack_unmasked({"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.ones(2)}, masks)
    dense = unpack_unmasked(packed, masks)
    # Assert
    assert packed["w"].tolist() == [1.0, 4.0]
    assert dense["w"].tolist() == [[1.0, 0.0], [0.0, 4.0]]
    assert dense["b"].tolist() == [1.0, 1.0]


def test_masked_update_payload_size_for_a_known_mask():
    # Prepare: a Linear(4 -> 4, no bias) student; the mask keeps 5 of its 16 weights.
    student = torch.nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        student.weight.copy_(torch.arange(1.0, 17.0).reshape(4, 4))
    global_state = {"weight": torch.zeros(4, 4)}
    keep = torch.zeros(16, dtype=torch.bool)
    keep[[0, 3, 5, 10, 15]] = True
    masks = {"weight": keep.reshape(4, 4)}
    spec = CompressionSpec(density=1.0, bit_width=32, error_feedback=True)
    # Execute
    packed, _, residual = encode_student(student, global_state, spec, None, masks=masks)
    dense, _, _ = encode_student(student, global_state, spec, None)
    # Assert, by hand: payload header 18 + crc 4; record = name (2 + 6) + dtype, ndim,
    # 1 dim (4 B), kind (7) + meta 17 + index length 8 + values 5 x 4 B = 60 -> 82 B.
    # Dense: name 8 + head with 2 dims 11 + meta 17 + 8 + 16 x 4 B = 108 -> 130 B.
    assert len(packed) == 82
    assert len(dense) == 130
    assert residual["weight"].shape == (4, 4)
    assert bool((residual["weight"][~masks["weight"]] == 0).all())
