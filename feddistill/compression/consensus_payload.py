"""The consensus on the downlink, both ways: soft labels encoded by the server, read
back by each client.

Server (:func:`encode_consensus`): the (b, K) soft labels at ``consensus-bit-width``
(16 by default: soft labels need finer steps than 8 bits give), one scale per proxy
row. Client (:func:`decode_consensus`): decode against the (b, K) it expects, clamp the
quantization's small negatives to 0 and renormalise each row to sum 1.
"""

from __future__ import annotations

from torch import Tensor

from feddistill.compression.codec import CodecError
from feddistill.compression.update import decode_tensors, encode_tensors

SOFT_LABELS_TENSOR = "soft-labels"  # (b, K) consensus soft labels


def encode_consensus(soft_labels: Tensor, bit_width: int) -> bytes:
    """The server's consensus payload.

    Args:
        soft_labels: consensus on this round's proxy rows, shape (b, K), rows sum to 1
            (a row a KD3A mode dropped is all zeros).
        bit_width: one of {1, 2, 4, 8, 16, 32} (``consensus-bit-width``).

    Returns:
        Payload bytes (``len`` is the exact downlink size per client).

    Raises:
        ValueError: on a bad ``bit_width`` or a NaN/Inf entry.
    """
    return encode_tensors({SOFT_LABELS_TENSOR: soft_labels}, bit_width=bit_width)


def decode_consensus(payload: bytes, num_samples: int, num_classes: int) -> Tensor:
    """A client's reading of :func:`encode_consensus`.

    Args:
        payload: the bytes received.
        num_samples: b, the proxy rows the consensus was built on.
        num_classes: K.

    Returns:
        Soft labels, shape (b, K), float32, entries >= 0; each row sums to 1 (an
        all-zero row stays all zeros).

    Raises:
        CodecError: if the payload does not decode, holds another name or shape than
            (b, K), or holds no soft labels.
    """
    soft = decode_tensors(payload, {SOFT_LABELS_TENSOR: (num_samples, num_classes)})
    if SOFT_LABELS_TENSOR not in soft:
        raise CodecError(f"consensus payload holds no {SOFT_LABELS_TENSOR!r} tensor")
    rows = soft[SOFT_LABELS_TENSOR].clamp_min(0)  # (b, K)
    return rows / rows.sum(dim=1, keepdim=True).clamp_min(1e-12)
