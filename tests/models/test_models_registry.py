"""Model registry: names, shapes and sizes."""

import pytest
import torch

from feddistill.models import MODEL_NAMES, build_model, count_parameters


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_every_model_maps_batch_to_logits(name, shape):
    # Prepare
    model = build_model(name, shape, 10)
    # Execute
    out = model(torch.zeros(2, *shape))
    # Assert
    assert out.shape == (2, 10)


def test_cnn_is_the_seed_network():
    # conv(1->32): 32*9+32 = 320; conv(32->64): 64*32*9+64 = 18496;
    # fc(64*7*7 -> 1024): 3136*1024+1024 = 3212288; fc(1024 -> 10): 10250.
    assert count_parameters(build_model("cnn", (1, 28, 28), 10)) == 320 + 18496 + 3212288 + 10250


def test_student_is_at_most_one_twentieth_of_teacher():
    teacher = count_parameters(build_model("cnn", (1, 28, 28), 10))
    student = count_parameters(build_model("cnn-small", (1, 28, 28), 10))
    assert student * 20 <= teacher


def test_unknown_name_lists_valid_ones():
    with pytest.raises(
        ValueError, match=r"unknown model 'vgg'; valid models: cnn, cnn-small, mlp, resnet18"
    ):
        build_model("vgg", (1, 28, 28), 10)


@pytest.mark.parametrize(
    ("shape", "classes"), [((1, 2, 28), 10), ((0, 28, 28), 10), ((28, 28), 10)]
)
def test_bad_shape_is_rejected(shape, classes):
    with pytest.raises(ValueError, match="in_shape must be"):
        build_model("cnn", shape, classes)


def test_one_class_is_rejected():
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        build_model("mlp", (1, 8, 8), 1)


def test_seeded_build_is_reproducible_and_leaves_global_rng_alone():
    # Prepare
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    # Execute
    a = build_model("cnn-small", (1, 28, 28), 10, seed=7)
    b = build_model("cnn-small", (1, 28, 28), 10, seed=7)
    c = build_model("cnn-small", (1, 28, 28), 10, seed=8)
    # Assert
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.state_dict()["features.0.weight"], c.state_dict()["features.0.weight"])
    assert torch.equal(torch.rand(1), expected_next)
