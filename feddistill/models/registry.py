"""Model registry: `cnn` (the seed document's network), `cnn-small`, `mlp`, `resnet18`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from feddistill.models.names import MODEL_NAMES

InputShape = tuple[int, int, int]  # (C, H, W)


class CNN(nn.Module):
    """Two conv blocks and two fully connected layers.

    With the defaults this is the seed document's network: conv 32 -> conv 64 ->
    fc 1024 -> classes (3.24M parameters on 28x28x1 inputs). Each conv is 3x3, padding
    1, followed by ReLU and 2x2 max pooling, so the feature map is (H // 4, W // 4).

    Args:
        in_shape: input shape (C, H, W); H and W at least 4.
        num_classes: number of output logits K.
        channels: output channels of the two conv layers.
        hidden: width of the hidden fully connected layer.
    """

    def __init__(
        self,
        in_shape: InputShape,
        num_classes: int,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 1024,
    ) -> None:
        super().__init__()
        c, h, w = in_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, channels[0], kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels[0], channels[1], kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = channels[1] * (h // 4) * (w // 4)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> logits (B, K)."""
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """Flatten -> 256 -> 128 -> classes, ReLU between layers.

    Args:
        in_shape: input shape (C, H, W).
        num_classes: number of output logits K.
        hidden: widths of the hidden layers.
    """

    def __init__(
        self, in_shape: InputShape, num_classes: int, hidden: tuple[int, ...] = (256, 128)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_shape[0] * in_shape[1] * in_shape[2]
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> logits (B, K)."""
        return self.net(x)


def _resnet18(in_shape: InputShape, num_classes: int) -> nn.Module:
    """torchvision ResNet-18 adapted to small inputs (CIFAR style).

    The 7x7 stride-2 stem and the max pool are replaced by a 3x3 stride-1 conv, so a
    32x32 input keeps a 4x4 map before global pooling. Weights are random (no download).
    """
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()  # type: ignore[assignment]
    return model


_BUILDERS: dict[str, Callable[[InputShape, int], nn.Module]] = {
    "cnn": lambda s, k: CNN(s, k),
    # Student: about 1/62 of `cnn` on 28x28 (52k vs 3.24M parameters).
    "cnn-small": lambda s, k: CNN(s, k, channels=(8, 16), hidden=64),
    "mlp": lambda s, k: MLP(s, k),
    "resnet18": _resnet18,
}

assert tuple(sorted(_BUILDERS)) == MODEL_NAMES, "models.names lists one name per builder"


def build_model(
    name: str, in_shape: InputShape, num_classes: int, seed: int | None = None
) -> nn.Module:
    """Build a freshly initialised model by registry name.

    Args:
        name: one of :data:`MODEL_NAMES` (`cnn`, `cnn-small`, `mlp`, `resnet18`).
        in_shape: input shape (C, H, W) of one sample; C >= 1, H and W >= 4.
        num_classes: number of classes K >= 2.
        seed: if given, the initial weights depend on this seed only (the global RNG
            is left untouched); if None, they come from the global RNG.

    Returns:
        An ``nn.Module`` mapping (B, C, H, W) float32 to logits (B, K).

    Raises:
        ValueError: if the name is unknown (the message lists the valid names), the
            shape is not three positive sizes with H, W >= 4, or K < 2.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    if len(in_shape) != 3 or any(int(d) < 1 for d in in_shape) or min(in_shape[1:]) < 4:
        raise ValueError(
            f"in_shape must be (C, H, W) with C >= 1 and H, W >= 4, got {tuple(in_shape)}"
        )
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    shape = (int(in_shape[0]), int(in_shape[1]), int(in_shape[2]))
    if seed is None:
        return _BUILDERS[name](shape, int(num_classes))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _BUILDERS[name](shape, int(num_classes))


def buffer_names(model: nn.Module) -> frozenset[str]:
    """Keys of ``model.state_dict()`` that are buffers, not trainable parameters.

    BatchNorm's ``running_mean``, ``running_var``, ``num_batches_tracked`` and any other
    persistent registered buffer. Such state travels as values (dense, lossless) and
    is averaged, never sent as a compressed update.
    """
    params = {name for name, _ in model.named_parameters()}
    return frozenset(key for key in model.state_dict() if key not in params)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not) of `model`."""
    return sum(p.numel() for p in model.parameters())
