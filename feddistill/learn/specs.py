"""Settings of local training: small frozen dataclasses, checked on construction.

:class:`SGDSpec` says how to step (optimizer, learning rate, batches, how long, seed);
:class:`KDSpec` says how much to distill (alpha, temperature); :class:`KDTarget` adds
what to distill to (proxy inputs and soft labels).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")


@dataclass(frozen=True)
class SGDSpec:
    """How a model is trained: optimizer, step size, batches and length.

    Attributes:
        lr: learning rate > 0.
        momentum: SGD momentum in [0, 1); ignored by ``adam``.
        batch_size: samples per step, >= 1.
        epochs: passes over the data, >= 0; 0 trains nothing.
        steps: if > 0, exactly this many steps (batches keep cycling through
            reshuffled epochs, the last one cut short) and ``epochs`` is ignored: the
            fixed-local-steps setting of FL papers, so tiny partitions still make
            progress each round.
        seed: seeds the batch order (a private ``torch.Generator``).
        optimizer: ``"sgd"`` (``torch.optim.SGD`` with ``momentum``) or ``"adam"``
            (``torch.optim.Adam``, FedDF's server-side choice).

    Raises:
        ValueError: on a value outside its range, naming the field, the value and
            what is allowed.
    """

    lr: float
    momentum: float = 0.0
    batch_size: int = 64
    epochs: int = 1
    steps: int = 0
    seed: int = 0
    optimizer: str = "sgd"

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs!r}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}"
            )

    def make_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The optimizer over ``params`` (``torch.optim.Adam`` or ``torch.optim.SGD``)."""
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)


@dataclass(frozen=True)
class KDSpec:
    """How strongly and how softly a student is distilled.

    Attributes:
        alpha: weight of the KD term next to cross-entropy, >= 0.
        temperature: softmax temperature T > 0.

    Raises:
        ValueError: if alpha < 0 or T <= 0 (value named).

    References:
        Hinton et al., "Distilling the Knowledge in a Neural Network", arXiv:1503.02531.
    """

    alpha: float
    temperature: float

    def __post_init__(self) -> None:
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")


@dataclass(frozen=True)
class KDTarget:
    """The distillation target of a training run.

    Attributes:
        proxy_x: proxy inputs, shape (B, C, H, W).
        soft_labels: consensus soft labels on the proxy set, shape (B, K), rows sum to 1.
        kd: alpha and temperature.
    """

    proxy_x: Tensor
    soft_labels: Tensor
    kd: KDSpec


def resolve_device(name: str, deterministic: bool = True) -> torch.device:
    """``auto`` -> cuda when present else cpu; a CUDA device is made repeatable
    (:func:`deterministic_cuda`) unless `deterministic` is False (config key
    ``deterministic``).

    Raises:
        ValueError: for ``cuda`` when ``torch.cuda.is_available()`` is False.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch.cuda.is_available() is False")
    if name == "cuda" and deterministic:
        deterministic_cuda()
    return torch.device(name)


def deterministic_cuda() -> None:
    """Same seed, same config, same metrics on a GPU too: pick deterministic CUDA kernels.

    Measured without it (``feddistill bench gpu``, H200): two runs of the default job on
    CUDA ended at 95.10% and 95.00%; with it, two runs gave identical metrics.csv, with
    rounds ~1.6x slower (median 1.64 s against 0.91-1.04 s). Without it cuDNN may pick
    non-deterministic convolution algorithms and some kernels (atomic adds in backward
    passes, cuBLAS's split reductions) vary from run to run. This sets
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (unless already set; cuBLAS reads it when the
    process first uses it), ``torch.backends.cudnn.deterministic = True``,
    ``torch.backends.cudnn.benchmark = False`` and
    ``torch.use_deterministic_algorithms(True, warn_only=True)``: an op with no
    deterministic CUDA kernel (e.g. ``adaptive_avg_pool2d``'s backward, in resnet18)
    warns instead of failing the run. Called for every CUDA run; the CPU is
    deterministic already.

    References:
        PyTorch, "Reproducibility" (notes/randomness) and
        ``torch.use_deterministic_algorithms``.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
