"""Teacher and student architectures, built by name.

Use :func:`build_model`; :data:`MODEL_NAMES` lists the registered names. The registry
loads on first use (PEP 562): importing :mod:`.names` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from feddistill.models.names import MODEL_NAMES

if TYPE_CHECKING:
    from feddistill.models.registry import buffer_names, build_model, count_parameters

_LAZY = {name: "registry" for name in ("buffer_names", "build_model", "count_parameters")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"feddistill.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'feddistill.models' has no attribute {name!r}")


__all__ = ["MODEL_NAMES", "buffer_names", "build_model", "count_parameters"]
