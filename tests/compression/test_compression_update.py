"""compress_update / decode_tensors / encode_tensors: spec checks, faults, error feedback."""

from __future__ import annotations

import pytest
import torch

from feddistill.compression import (
    CompressionSpec,
    compress_update,
    decode_tensors,
    encode_tensors,
)


def test_two_int8_updates_of_100_sum_to_200_in_float32() -> None:
    # Prepare: int8 codes would overflow at 127; summing happens after decoding.
    update = {"w": torch.full((3, 4), 100.0)}
    spec = CompressionSpec(bit_width=8)

    # Execute
    a = decode_tensors(compress_update(update, spec)[0])["w"]
    b = decode_tensors(compress_update(update, spec)[0])["w"]
    total = a + b

    # Assert: step 100 / 255 -> each decodes within 2e-5 of 100.
    assert total.dtype == torch.float32
    assert torch.allclose(total, torch.full((3, 4), 200.0), atol=1e-4)


def test_int8_sum_is_exact_on_a_power_of_two_grid() -> None:
    # Prepare: range [-27.5, 100] -> scale 0.5, zero point 55: both values exact.
    update = {"w": torch.tensor([100.0, -27.5])}

    # Execute
    payload, _ = compress_update(update, CompressionSpec(bit_width=8))
    total = decode_tensors(payload)["w"] + decode_tensors(payload)["w"]

    # Assert
    assert total.tolist() == [200.0, -55.0]


def test_all_zero_weight_decodes_to_exact_zero() -> None:
    # Prepare: a conv weight pruned to zero, int8 per channel.
    update = {"conv.weight": torch.zeros(8, 1, 3, 3)}

    # Execute
    payload, residual = compress_update(update, CompressionSpec(bit_width=8))
    out = decode_tensors(payload)["conv.weight"]

    # Assert
    assert torch.equal(out, torch.zeros(8, 1, 3, 3))
    assert torch.equal(residual["conv.weight"], torch.zeros(8, 1, 3, 3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_inf_update_names_the_key(bad: float) -> None:
    # Prepare
    w = torch.ones(5)
    w[2] = bad

    # Execute / Assert
    with pytest.raises(ValueError, match=r"'fc\.bias' holds NaN or Inf"):
        compress_update({"fc.weight": torch.ones(2, 2), "fc.bias": w}, CompressionSpec())


def test_nan_residual_names_the_key() -> None:
    residual = {"w": torch.tensor([float("nan"), 0.0])}
    with pytest.raises(ValueError, match=r"residual tensor 'w'"):
        compress_update({"w": torch.ones(2)}, CompressionSpec(), residual)


def test_residual_shape_mismatch_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"residual 'w' has shape \(3,\), update has \(2,\)"):
        compress_update({"w": torch.ones(2)}, CompressionSpec(), {"w": torch.zeros(3)})


def test_nan_encode_tensors_names_the_key() -> None:
    with pytest.raises(ValueError, match="'logits'"):
        encode_tensors({"logits": torch.tensor([[float("nan")]])}, bit_width=8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bit_width": 3}, r"bit_width must be one of \{1, 2, 4, 8, 16, 32\}, got 3"),
        ({"density": 0}, r"density must be in \(0, 1\], got 0"),
        ({"density": 1.5}, r"density must be in \(0, 1\], got 1.5"),
        ({"density": "0.5"}, r"density must be a float in \(0, 1\], got '0.5'"),
        ({"k": 0}, r"k must be None or an int >= 1, got 0"),
        ({"ch_axis": 0.5}, r"ch_axis must be an int, got 0.5"),
    ],
)
def test_bad_spec_names_value_and_allowed_set(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CompressionSpec(**kwargs)


def test_ch_axis_out_of_range_for_a_tensor_names_key_and_allowed_set() -> None:
    spec = CompressionSpec(bit_width=8, ch_axis=3)
    with pytest.raises(
        ValueError, match=r"ch_axis=3 out of range for 'fc.weight'.*\[-2, -1, 0, 1\]"
    ):
        compress_update({"fc.weight": torch.ones(2, 4)}, spec)


def test_integer_and_bool_buffers_pass_through_with_dtype() -> None:
    # Prepare
    update = {
        "bn.num_batches_tracked": torch.tensor(123456789012, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "bn.weight": torch.ones(3),
    }

    # Execute
    payload, residual = compress_update(update, CompressionSpec(density=0.5, bit_width=4))
    out = decode_tensors(payload)

    # Assert: order kept, ints exact, no residual for them.
    assert list(out) == list(update)
    assert out["bn.num_batches_tracked"].dtype == torch.int64
    assert int(out["bn.num_batches_tracked"]) == 123456789012
    assert torch.equal(out["mask"], update["mask"])
    assert set(residual) == {"bn.weight"}


def test_float64_and_fp16_inputs_decode_as_float32() -> None:
    update = {"a": torch.tensor([1.5, -2.0], dtype=torch.float64), "b": torch.ones(2).half()}
    out = decode_tensors(compress_update(update, CompressionSpec(bit_width=16))[0])
    assert out["a"].dtype == torch.float32 and out["a"].tolist() == [1.5, -2.0]
    assert out["b"].dtype == torch.float32


def test_error_feedback_off_returns_empty_residual_and_ignores_input_residual() -> None:
    # Prepare
    spec = CompressionSpec(density=0.5, bit_width=8, error_feedback=False)

    # Execute
    payload, residual = compress_update({"w": torch.ones(4)}, spec, {"w": torch.full((4,), 9.0)})

    # Assert
    assert residual == {}
    assert decode_tensors(payload)["w"].max().item() == pytest.approx(1.0, abs=1e-2)


def test_top_k_keeps_the_largest_magnitudes_and_feeds_back_the_rest() -> None:
    # Prepare: k = 2 of 5; fp32 values so the sent part is exact.
    update = {"w": torch.tensor([0.1, -3.0, 0.2, 2.0, -0.3])}
    spec = CompressionSpec(k=2, bit_width=32)

    # Execute
    payload, residual = compress_update(update, spec)

    # Assert
    assert decode_tensors(payload)["w"].tolist() == [0.0, -3.0, 0.0, 2.0, 0.0]
    assert torch.allclose(residual["w"], torch.tensor([0.1, 0.0, 0.2, 0.0, -0.3]))


def test_residual_is_added_before_top_k() -> None:
    # Prepare: last round's residual makes entry 0 the largest.
    update = {"w": torch.tensor([0.1, 1.0, 0.0])}
    residual = {"w": torch.tensor([2.0, 0.0, 0.0])}

    # Execute
    payload, new_residual = compress_update(update, CompressionSpec(k=1), residual)

    # Assert
    assert decode_tensors(payload)["w"].tolist() == pytest.approx([2.1, 0.0, 0.0])
    assert new_residual["w"].tolist() == pytest.approx([0.0, 1.0, 0.0])


def test_error_feedback_loses_nothing_over_rounds() -> None:
    # Prepare: 20 rounds, 5% + int4 stochastic; sum of decoded + final residual == true sum.
    gen = torch.Generator().manual_seed(0)
    updates = [torch.randn(500, generator=gen) for _ in range(20)]
    spec = CompressionSpec(density=0.05, bit_width=4, stochastic=True)
    residual: dict[str, torch.Tensor] = {}
    received = torch.zeros(500)

    # Execute
    for u in updates:
        payload, residual = compress_update({"w": u}, spec, residual, generator=gen)
        received += decode_tensors(payload)["w"]

    # Assert
    assert torch.allclose(received + residual["w"], torch.stack(updates).sum(0), atol=1e-4)


def test_encode_tensors_logits_and_affinity() -> None:
    # Prepare: teacher logits (B=6, K=10), one scale per sample; affinity (B,).
    gen = torch.Generator().manual_seed(0)
    logits, affinity = torch.randn(6, 10, generator=gen) * 5, torch.rand(6, generator=gen)

    # Execute
    payload = encode_tensors({"logits": logits, "affinity": affinity}, bit_width=8)
    out = decode_tensors(payload)

    # Assert: step <= (row range) / 254 -> error well under 0.05 for |logits| < 25.
    assert out["logits"].shape == (6, 10) and out["affinity"].shape == (6,)
    assert (out["logits"] - logits).abs().max() < 0.05
    assert (out["affinity"] - affinity).abs().max() < 0.01


def test_encode_tensors_rejects_bad_bit_width() -> None:
    with pytest.raises(ValueError, match="got 5"):
        encode_tensors({"x": torch.ones(2)}, bit_width=5)


def test_stochastic_rounding_reproducible_with_seeded_generator() -> None:
    x = {"w": torch.randn(100, generator=torch.Generator().manual_seed(3))}
    spec = CompressionSpec(bit_width=2, stochastic=True)
    a, _ = compress_update(x, spec, generator=torch.Generator().manual_seed(7))
    b, _ = compress_update(x, spec, generator=torch.Generator().manual_seed(7))
    assert a == b


def test_stochastic_rounding_unbiased_through_the_codec() -> None:
    # Prepare: 0.37 on the 4-bit grid of [0, 1.5] (step 0.1); 200 rounds x 100 entries,
    # fixed seed. Std of the mean ~ 0.1 * 0.46 / sqrt(20000) = 3e-4.
    x = torch.full((101,), 0.37)
    x[0] = 1.5
    spec = CompressionSpec(bit_width=4, stochastic=True, error_feedback=False)
    gen = torch.Generator().manual_seed(11)

    # Execute
    means = [
        decode_tensors(compress_update({"w": x}, spec, generator=gen)[0])["w"][1:].mean()
        for _ in range(200)
    ]

    # Assert
    assert torch.stack(means).mean().item() == pytest.approx(0.37, abs=2e-3)


def test_payload_is_deterministic_bytes() -> None:
    x = {"w": torch.randn(10, 10, generator=torch.Generator().manual_seed(0))}
    spec = CompressionSpec(density=0.3, bit_width=4)
    assert compress_update(x, spec)[0] == compress_update(x, spec)[0]


def test_update_plus_residual_overflow_names_the_key() -> None:
    # Prepare: both finite, their float32 sum is Inf.
    update, residual = {"w": torch.tensor([3e38])}, {"w": torch.tensor([3e38])}

    # Execute / Assert
    with pytest.raises(ValueError, match=r"update \+ residual 'w' overflows to Inf"):
        compress_update(update, CompressionSpec(), residual)
