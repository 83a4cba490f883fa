"""The teacher-logits upload, both directions: all classes, or only the top-m of each row.

A client's upload holds its teacher's logits on the round's proxy rows, shape (B, K),
and the log domain affinity, shape (B,), quantized with the wire codec
(:mod:`feddistill.compression.codec`). With ``top_m`` in [1, K) each row carries only
its m largest logits and their class ids; the other K - m classes of the row share one
"fill" logit chosen so that their total softmax mass at temperature T is kept::

    fill = T * (logsumexp(rest / T) - log(K - m))

so the soft labels ``softmax(decoded / T)`` put the right mass on the top-m classes and
spread the tail evenly over the rest (Sattler et al., "CFD: Communication-efficient
federated distillation", arXiv:2012.00632, send a sparse / quantized soft-label set the
same way).

Payload (one wire-codec payload, exact bytes)::

    "logits"     (B, m) float, ``bit_width`` bits (one scale for the tensor)
    "fill"       (B,)   float, ``bit_width`` bits (top-m only)
    "affinity"   (B,)   float, ``bit_width`` bits
    "classes"    (ceil(B * m * id_bits / 8),) uint8, class ids packed at
                 ``id_bits = class_id_bits(K)`` bits, row-major (top-m only)

:func:`topm_payload_bytes` gives the exact size; the decoder checks every size against
the bytes present and every class id against K before it builds a tensor.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from feddistill.compression.codec import CodecError
from feddistill.compression.packing import PackingError, pack_codes, packed_nbytes, unpack_codes
from feddistill.compression.update import decode_update, encode_tensors

LOGITS = "logits"
AFFINITY = "affinity"
FILL = "fill"
CLASSES = "classes"
ID_BIT_WIDTHS = (1, 2, 4, 8)  # packings of class ids; K <= 256


def class_id_bits(num_classes: int) -> int:
    """Bits per class id: the smallest of 1, 2, 4, 8 with ``2**bits >= num_classes``.

    Args:
        num_classes: K, in [2, 256].

    Returns:
        1, 2, 4 or 8 (K = 10 -> 4).

    Raises:
        ValueError: if K is outside [2, 256].
    """
    if not 2 <= num_classes <= 256:
        raise ValueError(f"top-m logits need 2 <= num_classes <= 256, got {num_classes}")
    return next(b for b in ID_BIT_WIDTHS if 2**b >= num_classes)


def _check_top_m(top_m: int, num_classes: int) -> None:
    if not 0 <= top_m < num_classes:
        raise ValueError(
            f"logits-top-m must be in [0, {num_classes}) for {num_classes} classes "
            f"(0 = every class), got {top_m}"
        )


def _float_record_bytes(name: str, shape: tuple[int, ...], bit_width: int) -> int:
    """Bytes of one dense FLOAT record of the codec (one scale for the tensor)."""
    numel = math.prod(shape)
    head = 2 + len(name) + 1 + 1 + 4 * len(shape) + 1  # name_len, name, dtype, ndim, shape, kind
    meta = 17  # value_bits, layout, per_channel, ch_axis, k u64, rice_r, rows u32
    scales = 9 if bit_width <= 8 else 0  # scale f32, zero point u8, offset f32
    return head + meta + scales + 8 + packed_nbytes(numel, bit_width)


def topm_payload_bytes(num_rows: int, num_classes: int, top_m: int, bit_width: int) -> int:
    """Exact bytes of :func:`encode_logits_payload` for these sizes.

    Every row, value and id costs its bits; the fixed part is the codec's header (18
    bytes), CRC (4) and one record head per tensor. (At 16 and 32 bits the codec may
    send a tensor holding exact zeros sparsely, which can only be smaller; this gives
    the dense size.)

    Args:
        num_rows: B, proxy rows of the round.
        num_classes: K.
        top_m: classes sent per row; 0 = all K.
        bit_width: bits of the logits, fill and affinity values.

    Returns:
        Payload bytes, e.g. B=100, K=10, m=2, 4 bits: 497.
    """
    cols = top_m if top_m else num_classes
    size = 18 + 4 + _float_record_bytes(LOGITS, (num_rows, cols), bit_width)
    size += _float_record_bytes(AFFINITY, (num_rows,), bit_width)
    if top_m:
        size += _float_record_bytes(FILL, (num_rows,), bit_width)
        ids = packed_nbytes(num_rows * top_m, class_id_bits(num_classes))
        size += 2 + len(CLASSES) + 1 + 1 + 4 + 1 + 8 + ids  # one RAW uint8 record
    return size


def encode_logits_payload(
    logits: Tensor, log_affinity: Tensor, bit_width: int, top_m: int = 0, temperature: float = 1.0
) -> bytes:
    """The teacher upload: logits (all classes or the top-m of each row) and affinity.

    Args:
        logits: teacher logits on the proxy rows, shape (B, K), finite.
        log_affinity: log domain affinity per row, shape (B,), finite.
        bit_width: one of 1, 2, 4, 8, 16, 32 (values, fill and affinity).
        top_m: classes kept per row, in [0, K); 0 sends every class.
        temperature: T > 0 at which the fill keeps the tail's softmax mass.

    Returns:
        Payload bytes; :func:`decode_logits_payload` reads them.

    Raises:
        ValueError: if shapes disagree, ``top_m`` is outside [0, K), K is outside
            [2, 256] with top-m, T <= 0, or a tensor holds NaN or Inf.

    References:
        Hinton et al., arXiv:1503.02531 (soft labels at T); CFD, arXiv:2012.00632.
    """
    if logits.ndim != 2 or log_affinity.shape != logits.shape[:1]:
        raise ValueError(
            f"logits must be (B, K) and affinity (B,), got {tuple(logits.shape)} and "
            f"{tuple(log_affinity.shape)}"
        )
    num_classes = logits.shape[1]
    _check_top_m(top_m, num_classes)
    if not top_m:
        return encode_tensors(
            {LOGITS: logits, AFFINITY: log_affinity}, bit_width=bit_width, per_channel=False
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    id_bits = class_id_bits(num_classes)
    values, classes = logits.float().topk(top_m, dim=1)  # (B, K) -> (B, m), (B, m)
    rest = logits.float().scatter(1, classes, float("-inf"))  # top-m masked out
    fill = temperature * (
        torch.logsumexp(rest / temperature, dim=1) - math.log(num_classes - top_m)
    )  # (B,)
    packed = pack_codes(classes.numpy().astype(np.uint8).ravel(), id_bits)
    ids = torch.frombuffer(bytearray(packed), dtype=torch.uint8)  # integer: a RAW record
    tensors = {LOGITS: values, FILL: fill, AFFINITY: log_affinity, CLASSES: ids}
    return encode_tensors(tensors, bit_width=bit_width, per_channel=False)


def decode_logits_payload(
    payload: bytes, num_rows: int, num_classes: int, top_m: int = 0
) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`encode_logits_payload`: (logits (B, K), log affinity (B,)).

    Args:
        payload: the client's bytes (untrusted).
        num_rows: B the server expects this round.
        num_classes: K of the server's student.
        top_m: classes per row the run sends; 0 = all.

    Returns:
        Logits, float32 (B, K): the sent values at their class ids, the row's fill
        elsewhere; log affinity, float32 (B,).

    Raises:
        CodecError: (a ``ValueError``) if the payload is truncated or corrupted, holds
            other tensors or shapes, its class-id bytes do not match B * m ids, or a
            class id is >= K or repeats within a row.
    """
    _check_top_m(top_m, num_classes)
    if not top_m:
        tensors = decode_update(payload, {LOGITS: (num_rows, num_classes), AFFINITY: (num_rows,)})
        return tensors[LOGITS], tensors[AFFINITY]
    id_bits = class_id_bits(num_classes)
    id_nbytes = packed_nbytes(num_rows * top_m, id_bits)
    tensors = decode_update(
        payload,
        {
            LOGITS: (num_rows, top_m),
            FILL: (num_rows,),
            AFFINITY: (num_rows,),
            CLASSES: (id_nbytes,),
        },
    )
    if set(tensors) != {LOGITS, FILL, AFFINITY, CLASSES}:
        raise CodecError(
            f"top-m logits need {LOGITS}, {FILL}, {AFFINITY}, {CLASSES}; got {sorted(tensors)}"
        )
    raw = tensors[CLASSES]
    if raw.dtype != torch.uint8:
        raise CodecError(f"class ids must be packed uint8, got {raw.dtype}")
    try:
        codes = unpack_codes(raw.numpy().tobytes(), id_bits, num_rows * top_m)
    except PackingError as exc:
        raise CodecError(str(exc)) from None
    classes = torch.from_numpy(codes.astype(np.int64)).reshape(num_rows, top_m)  # (B, m)
    if classes.numel() and int(classes.max()) >= num_classes:
        raise CodecError(
            f"class id {int(classes.max())} out of range [0, {num_classes}) in top-m logits"
        )
    if top_m > 1 and bool((classes.sort(dim=1).values.diff(dim=1) == 0).any()):
        raise CodecError("a row of top-m logits names one class twice")
    logits = tensors[FILL].reshape(-1, 1).repeat(1, num_classes)  # (B,) -> (B, K)
    logits.scatter_(1, classes, tensors[LOGITS])
    return logits, tensors[AFFINITY]
