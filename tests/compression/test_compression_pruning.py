"""Unstructured and channel pruning; saving and loading a channel-pruned model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from feddistill.compression import (
    compression_report,
    load_pruned,
    prune_channels,
    prune_unstructured,
    save_pruned,
)
from feddistill.models.registry import build_model


def test_linear_pruned_half_keeps_keys_and_loads_strictly() -> None:
    # Prepare
    torch.manual_seed(0)
    layer = nn.Linear(4, 2)

    # Execute
    prune_unstructured(layer, 0.5)
    state = layer.state_dict()

    # Assert: no weight_orig / weight_mask, 4 of 8 weights zero, strict load works.
    assert set(state) == {"weight", "bias"}
    assert int((state["weight"] == 0).sum()) == 4
    fresh = nn.Linear(4, 2)
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh.weight, state["weight"])


def test_pruning_zeroes_the_smallest_magnitudes_by_hand() -> None:
    # Prepare: weights 1..8 with signs; 25% -> the two smallest |w| (1 and -2) go.
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, -4.0], [5.0, -6.0, 7.0, -8.0]]))

    # Execute
    prune_unstructured(layer, 0.25, scope="layer")

    # Assert
    assert layer.weight.tolist() == [[0.0, 0.0, 3.0, -4.0], [5.0, -6.0, 7.0, -8.0]]


def test_global_threshold_respects_the_per_layer_floor() -> None:
    # Prepare: layer a has tiny weights; a global 50% threshold would remove all of it.
    model = nn.Sequential(nn.Linear(10, 10, bias=False), nn.Linear(10, 10, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(0.001)
        model[1].weight.copy_(torch.arange(1.0, 101.0).reshape(10, 10))

    # Execute
    prune_unstructured(model, 0.5, scope="global", min_density_per_layer=0.1)

    # Assert: layer 0 keeps ceil(0.1 * 100) = 10 weights; layer 1 is untouched.
    assert int((model[0].weight != 0).sum()) == 10
    assert int((model[1].weight == 0).sum()) == 0


def test_global_pruning_reaches_the_requested_sparsity_on_the_cnn() -> None:
    # Prepare
    torch.manual_seed(0)
    model = build_model("cnn-small", (1, 28, 28), 10)
    keys = set(model.state_dict())

    # Execute
    prune_unstructured(model, 0.8)
    rows = compression_report(model, torch.zeros(1, 1, 28, 28))

    # Assert: weights are 80% zero overall (biases are not pruned), keys unchanged.
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.8 * sum(w.numel() for w in weights))
    assert set(model.state_dict()) == keys
    assert all(r["sparsity"] < 1.0 for r in rows)


def test_masks_from_an_earlier_pruning_are_made_permanent() -> None:
    layer = nn.Linear(4, 2)
    torch.nn.utils.prune.random_unstructured(layer, "weight", amount=0.25)
    prune_unstructured(layer, 0.5)
    assert set(layer.state_dict()) == {"weight", "bias"}


def test_zero_sparsity_changes_nothing() -> None:
    layer = nn.Linear(4, 2)
    before = layer.weight.clone()
    prune_unstructured(layer, 0.0)
    assert torch.equal(layer.weight, before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sparsity": 1.0}, r"sparsity must be in \[0, 1\), got 1.0"),
        ({"sparsity": -0.1}, r"sparsity must be in \[0, 1\), got -0.1"),
        ({"sparsity": 0.5, "scope": "local"}, r"scope must be one of .*'global'.*got 'local'"),
        ({"sparsity": 0.5, "min_density_per_layer": 0.0}, r"min_density_per_layer .*got 0.0"),
    ],
)
def test_bad_unstructured_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        prune_unstructured(nn.Linear(2, 2), **kwargs)


def test_channel_pruning_shrinks_params_and_macs_and_keeps_the_classifier() -> None:
    # Prepare
    torch.manual_seed(0)
    model = build_model("cnn-small", (1, 28, 28), 10).eval()
    x = torch.randn(2, 1, 28, 28)
    before = compression_report(model, x)[-1]

    # Execute
    prune_channels(model, x, pruning_ratio=0.5)
    after = compression_report(model, x)[-1]

    # Assert: conv 8/16 -> 4/8 channels, hidden 64 -> 32; 10 logits kept.
    assert model.features[0].out_channels == 4 and model.features[3].out_channels == 8
    assert model.classifier[1].out_features == 32
    assert model(x).shape == (2, 10)
    assert after["params"] < 0.3 * before["params"]
    assert after["macs"] < 0.35 * before["macs"]


def test_channel_pruned_model_saves_and_loads_back(tmp_path: Path) -> None:
    # Prepare
    torch.manual_seed(0)
    model = build_model("cnn-small", (1, 28, 28), 10).eval()
    x = torch.randn(3, 1, 28, 28)
    prune_channels(model, x, pruning_ratio=0.25)
    path = tmp_path / "pruned.pt"

    # Execute
    save_pruned(model, path)
    loaded = load_pruned(build_model("cnn-small", (1, 28, 28), 10), path).eval()

    # Assert
    assert torch.equal(loaded(x), model(x))
    assert loaded.features[3].in_channels == model.features[3].in_channels


def test_load_pruned_into_the_wrong_architecture_fails(tmp_path: Path) -> None:
    model = build_model("cnn-small", (1, 28, 28), 10)
    save_pruned(model, tmp_path / "m.pt")
    with pytest.raises(RuntimeError):
        load_pruned(build_model("mlp", (1, 28, 28), 10), tmp_path / "m.pt")


@pytest.mark.parametrize("ratio", [1.0, -0.5])
def test_bad_pruning_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match=rf"pruning_ratio must be in \[0, 1\), got {ratio}"):
        prune_channels(nn.Linear(2, 2), torch.zeros(1, 2), ratio)


def test_channel_pruning_needs_a_classifier() -> None:
    with pytest.raises(ValueError, match="final nn.Linear"):
        prune_channels(nn.Conv2d(1, 2, 3), torch.zeros(1, 1, 5, 5), 0.5)


def _two_unit_mlp() -> nn.Module:
    # hidden unit 0: weights (3, 0, 0, 0): L1 = 3, L2^2 = 9; unit 1: (1, 1, 1, 1): L1 = 4, L2^2 = 4
    model = nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))
        model[0].bias.zero_()
        model[2].weight.zero_()
        model[2].bias.zero_()
    return model


@pytest.mark.parametrize(
    ("norm", "kept_row"), [(1, [1.0, 1.0, 1.0, 1.0]), (2, [3.0, 0.0, 0.0, 0.0])]
)
def test_channel_norm_picks_the_unit_kept(norm: int, kept_row: list[float]) -> None:
    # Prepare
    model = _two_unit_mlp()
    # Execute: remove 1 of the 2 hidden units
    prune_channels(model, torch.zeros(1, 4), 0.5, norm=norm)
    # Assert: L1 keeps unit 1 (4 > 3), L2 keeps unit 0 (9 > 4)
    assert model[0].weight.tolist() == [kept_row]


def test_channel_norm_other_than_1_or_2_is_refused() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="norm must be 1 or 2, got 3"):
        prune_channels(_two_unit_mlp(), torch.zeros(1, 4), 0.5, norm=3)


def _four_unit_mlp() -> nn.Module:
    # fc1 rows (bias 0): unit 0 (-5, -5) is dead on x = (1, 1); unit 1 (0.1, 0.1);
    # units 2 (1, 0) and 3 (0, 1). fc2 (bias 0) reads units (0, 1, 2) and (1, 3).
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[-5.0, -5.0], [0.1, 0.1], [1.0, 0.0], [0.0, 1.0]]))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]))
        model[2].bias.zero_()
    return model


def _ce_on_ones(model: nn.Module) -> None:
    F.cross_entropy(model(torch.ones(1, 2)), torch.tensor([0])).backward()


def test_taylor_importance_removes_the_units_with_the_smallest_w_times_grad() -> None:
    # Prepare, by hand: h = relu(W1 x) = (0, 0.2, 1, 1); z = W2 h = (1.2, 1.2), so
    # softmax = (0.5, 0.5) and dL/dz = (-0.5, 0.5). dL/dW2[:, j] = dz * h_j;
    # dL/dh = W2^T dz = (-0.5, 0, -0.5, 0.5); dL/dW1[j] = dL/dh_j * relu'_j * x.
    # Scores sum |w * dL/dw| over fc1 row j and fc2 column j:
    # unit 0: 0 + 0 = 0 (dead); unit 1: 0 + (0.1 + 0.1) = 0.2;
    # unit 2: 0.5 + 0.5 = 1.0; unit 3: 0.5 + 0.5 = 1.0.
    model = _four_unit_mlp()
    # Execute: remove 2 of the 4 hidden units
    prune_channels(model, torch.ones(1, 2), 0.5, importance="taylor", gradient_fn=_ce_on_ones)
    # Assert: units 0 and 1 (scores 0 and 0.2) are gone
    assert model[0].weight.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert model[2].weight.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_taylor_importance_removes_a_dead_unit_whatever_its_weights() -> None:
    # Prepare: unit 0 has the largest weights (L2 keeps it) but Taylor score 0 (see above)
    model = _four_unit_mlp()
    # Execute: remove 1 of the 4 hidden units
    prune_channels(model, torch.ones(1, 2), 0.25, importance="taylor", gradient_fn=_ce_on_ones)
    # Assert
    expected = torch.tensor([[0.1, 0.1], [1.0, 0.0], [0.0, 1.0]])
    assert torch.equal(model[0].weight.detach(), expected)


def test_taylor_pruning_leaves_no_gradient_behind() -> None:
    # Prepare
    model = _four_unit_mlp()
    # Execute
    prune_channels(model, torch.ones(1, 2), 0.25, importance="taylor", gradient_fn=_ce_on_ones)
    # Assert
    assert all(p.grad is None for p in model.parameters())


def test_unknown_channel_importance_is_refused() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="importance must be one of magnitude, taylor, got 'l3'"):
        prune_channels(_four_unit_mlp(), torch.ones(1, 2), 0.5, importance="l3")


def test_taylor_importance_without_a_gradient_fn_is_refused() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="importance='taylor' needs a gradient_fn"):
        prune_channels(_four_unit_mlp(), torch.ones(1, 2), 0.5, importance="taylor")
