"""feddistill.compression: update codec, pruning, int8 export. No Flower, no Ray.

Update path (client -> server): add residual -> top-k sparsify -> quantize -> encode;
the server decodes -> dequantizes -> gets dense float32 tensors and aggregates those.
"""

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
