"""feddistill.compression: update codec, pruning, int8 export. No Flower, no Ray.

Update path (client -> server): add residual -> top-k sparsify -> quantize -> encode;
the server decodes -> dequantizes -> gets dense float32 tensors and aggregates those.

The names below load on first use (PEP 562): importing :mod:`.names` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feddistill.compression.codec import CodecError
    from feddistill.compression.pruning import (
        load_pruned,
        prune_channels,
        prune_unstructured,
        save_pruned,
    )
    from feddistill.compression.ptq import export_student, load_student, quantize_int8
    from feddistill.compression.report import compression_report, format_report
    from feddistill.compression.spec import CompressionSpec
    from feddistill.compression.update import (
        compress_update,
        decode_tensors,
        encode_state,
        encode_tensors,
    )

_LAZY = {
    "CodecError": "codec",
    "load_pruned": "pruning",
    "prune_channels": "pruning",
    "prune_unstructured": "pruning",
    "save_pruned": "pruning",
    "export_student": "ptq",
    "load_student": "ptq",
    "quantize_int8": "ptq",
    "compression_report": "report",
    "format_report": "report",
    "CompressionSpec": "spec",
    "compress_update": "update",
    "decode_tensors": "update",
    "encode_state": "update",
    "encode_tensors": "update",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"feddistill.compression.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'feddistill.compression' has no attribute {name!r}")


__all__ = [
    "CodecError",
    "CompressionSpec",
    "compress_update",
    "compression_report",
    "decode_tensors",
    "encode_state",
    "encode_tensors",
    "export_student",
    "format_report",
    "load_pruned",
    "load_student",
    "prune_channels",
    "prune_unstructured",
    "quantize_int8",
    "save_pruned",
]
