"""The model names :func:`feddistill.models.build_model` builds, kept free of torch.

The run config (:mod:`feddistill.config`) checks model keys against this list without
loading torch, so ``feddistill run``'s own process stays small (issue 13). The registry
holds one builder per name (checked when it is imported).
"""

from __future__ import annotations

MODEL_NAMES: tuple[str, ...] = ("cnn", "cnn-small", "mlp", "resnet18")  # sorted
