"""The teacher upload, both ways: what a client makes of its teacher's proxy logits and
domain affinity, and what the server reads back.

Client side (:meth:`TeacherUpload.from_teacher`, :meth:`TeacherUpload.encode`):

- each logit row is shifted to max 0 and clipped at ``-8 T``: the softmax at T is
  unchanged up to ``e^-8`` per class, and the quantizer's range no longer depends on
  outliers;
- the affinity goes up as its log (floored at 1e-30): with ``logits-bit-width`` linear
  bits, far samples keep their relative weights;
- both are quantized with one scale per tensor (:func:`encode_tensors`);
- with ``logits-top-m`` m in [1, K) each row carries only its m largest logits and
  their class ids; the other K - m classes of the row share one "fill" logit chosen
  so that their total softmax mass at temperature T is kept::

      fill = T * (logsumexp(rest / T) - log(K - m))

  so ``softmax(decoded / T)`` puts the right mass on the top-m classes and spreads the
  tail evenly over the rest (CFD, arXiv:2012.00632, sends a sparse soft-label set).

Server side (:meth:`TeacherUpload.decode`, :meth:`TeacherUpload.affinity_weights`):
decode against the (B, K) and (B,) the server expects, check that both tensors are
there, shaped alike and finite, and turn the log-affinity back into consensus weights
``exp(log_affinity)``, floored at 1e-12 so no sample has all-zero weights.

Payload (one wire-codec payload, exact bytes)::

    "logits"     (B, K) or, top-m, (B, m) float, ``bit_width`` bits (one scale)
    "affinity"   (B,)   float, ``bit_width`` bits
    "fill"       (B,)   float, ``bit_width`` bits (top-m only)
    "classes"    (ceil(B * m * id_bits / 8),) uint8, class ids packed at
                 ``id_bits = class_id_bits(K)`` bits, row-major (top-m only)

:func:`upload_bytes` gives the exact size; the decoder checks every size against the
bytes present and every class id against K before it builds a tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from feddistill.compression.codec import CodecError
from feddistill.compression.packing import PackingError, pack_codes, packed_nbytes, unpack_codes
from feddistill.compression.update import decode_tensors, encode_tensors

LOGITS_TENSOR = "logits"  # (B, K) shifted, clipped teacher logits
AFFINITY_TENSOR = "affinity"  # (B,) log domain affinity
CLIP_TEMPERATURES = 8.0  # logits are clipped at -CLIP_TEMPERATURES * T below the row max
LOG_AFFINITY_FLOOR = 1e-30  # affinity floor before the log (client)
WEIGHT_FLOOR = 1e-12  # consensus weight floor after exp (server)
FILL_TENSOR = "fill"  # (B,) top-m: the logit of every class not sent
CLASSES_TENSOR = "classes"  # packed (B, m) class ids of the sent logits (top-m)
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


def upload_bytes(num_rows: int, num_classes: int, top_m: int, bit_width: int) -> int:
    """Exact bytes of :meth:`TeacherUpload.encode` for these sizes.

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
    size = 18 + 4 + _float_record_bytes(LOGITS_TENSOR, (num_rows, cols), bit_width)
    size += _float_record_bytes(AFFINITY_TENSOR, (num_rows,), bit_width)
    if top_m:
        size += _float_record_bytes(FILL_TENSOR, (num_rows,), bit_width)
        ids = packed_nbytes(num_rows * top_m, class_id_bits(num_classes))
        size += 2 + len(CLASSES_TENSOR) + 1 + 1 + 4 + 1 + 8 + ids  # one RAW uint8 record
    return size


@dataclass(frozen=True)
class TeacherUpload:
    """One client's teacher knowledge on this round's proxy rows, as it travels.

    Attributes:
        logits: teacher logits, shape (B, K), each row's max 0 and its entries
            >= -8 T (as made by :meth:`from_teacher`).
        log_affinity: log of the per-sample domain affinity, shape (B,), <= 0.
    """

    logits: Tensor
    log_affinity: Tensor

    @classmethod
    def from_teacher(cls, logits: Tensor, affinity: Tensor, temperature: float) -> TeacherUpload:
        """Prepare a teacher's output for upload: shift, clip, log-affinity.

        Args:
            logits: the teacher's logits on the proxy rows, shape (B, K).
            affinity: domain affinity of each proxy row to the client's data, shape
                (B,), in [0, 1].
            temperature: the run's softmax temperature T > 0.

        Returns:
            The upload: ``logits - rowmax`` clipped at ``-8 T``, ``log(max(affinity,
            1e-30))`` as float32.
        """
        shifted = logits - logits.max(dim=1, keepdim=True).values  # (B, K), row max 0
        clipped = shifted.clamp_min(-CLIP_TEMPERATURES * temperature)
        return cls(clipped, affinity.float().clamp_min(LOG_AFFINITY_FLOOR).log())

    def encode(self, bit_width: int, top_m: int = 0, temperature: float = 1.0) -> bytes:
        """The payload: the tensors quantized with one scale per tensor.

        Args:
            bit_width: one of {1, 2, 4, 8, 16, 32} (``logits-bit-width``).
            top_m: classes kept per row, in [0, K) (``logits-top-m``); 0 sends all.
            temperature: T > 0 at which the top-m fill keeps the tail's softmax mass.

        Returns:
            Payload bytes (``len`` is the exact upload size, :func:`upload_bytes`).

        Raises:
            ValueError: on a bad ``bit_width``, a NaN/Inf tensor (named), shapes other
                than (B, K) and (B,), ``top_m`` outside [0, K), K outside [2, 256]
                with top-m, or T <= 0.

        References:
            Hinton et al., arXiv:1503.02531 (soft labels at T); CFD, arXiv:2012.00632.
        """
        logits, log_affinity = self.logits, self.log_affinity
        if logits.ndim != 2 or log_affinity.shape != logits.shape[:1]:
            raise ValueError(
                f"logits must be (B, K) and affinity (B,), got {tuple(logits.shape)} and "
                f"{tuple(log_affinity.shape)}"
            )
        num_classes = logits.shape[1]
        _check_top_m(top_m, num_classes)
        if not top_m:
            tensors = {LOGITS_TENSOR: logits, AFFINITY_TENSOR: log_affinity}
            return encode_tensors(tensors, bit_width=bit_width, per_channel=False)
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
        tensors = {
            LOGITS_TENSOR: values,
            FILL_TENSOR: fill,
            AFFINITY_TENSOR: log_affinity,
            CLASSES_TENSOR: ids,
        }
        return encode_tensors(tensors, bit_width=bit_width, per_channel=False)

    @classmethod
    def decode(
        cls,
        payload: bytes,
        num_samples: int | None = None,
        num_classes: int | None = None,
        top_m: int = 0,
    ) -> TeacherUpload:
        """Read a payload of :meth:`encode` from an untrusted client.

        Args:
            payload: the bytes received.
            num_samples: B, this round's proxy rows; with ``num_classes`` the sizes
                are checked before anything is allocated. None: not checked up front.
            num_classes: K, the student's classes.
            top_m: classes per row the run sends (``logits-top-m``); 0 = all. With
                top-m, B and K must be given.

        Returns:
            The upload, float32 tensors of shape (B, K) and (B,); top-m rows hold the
            sent values at their class ids and the row's fill elsewhere.

        Raises:
            CodecError: (a ``ValueError``) if the payload does not decode (truncated,
                corrupted, other names or shapes), a tensor is missing, the shapes
                disagree, a value is NaN or Inf, top-m is asked without B and K, or a
                top-m class id is >= K or repeats within a row.
        """
        logits: Tensor | None
        log_affinity: Tensor | None
        if top_m:
            if num_samples is None or num_classes is None:
                raise CodecError("top-m logits need the proxy size and class count up front")
            _check_top_m(top_m, num_classes)
            logits, log_affinity = _decode_top_m(payload, num_samples, num_classes, top_m)
        else:
            expected = None
            if num_samples is not None and num_classes is not None:
                expected = {
                    LOGITS_TENSOR: (num_samples, num_classes),
                    AFFINITY_TENSOR: (num_samples,),
                }
            tensors = decode_tensors(payload, expected)
            logits, log_affinity = tensors.get(LOGITS_TENSOR), tensors.get(AFFINITY_TENSOR)
        if (
            logits is None
            or log_affinity is None
            or logits.ndim != 2
            or log_affinity.shape != logits.shape[:1]
        ):
            raise CodecError("teacher logits (B, K) and affinity (B,) are required")
        if not (bool(torch.isfinite(logits).all()) and bool(torch.isfinite(log_affinity).all())):
            raise CodecError("teacher logits or affinity contain NaN or Inf")
        return cls(logits, log_affinity)

    def affinity_weights(self) -> Tensor:
        """Consensus weights of the proxy rows: ``exp(log_affinity)``, floored at 1e-12.

        Returns:
            Shape (B,), every entry in [1e-12, 1].
        """
        return self.log_affinity.exp().clamp_min(WEIGHT_FLOOR)


def _decode_top_m(
    payload: bytes, num_rows: int, num_classes: int, top_m: int
) -> tuple[Tensor, Tensor]:
    """(logits (B, K), log affinity (B,)) of a top-m payload; see :meth:`TeacherUpload.decode`."""
    id_bits = class_id_bits(num_classes)
    expected = {
        LOGITS_TENSOR: (num_rows, top_m),
        FILL_TENSOR: (num_rows,),
        AFFINITY_TENSOR: (num_rows,),
        CLASSES_TENSOR: (packed_nbytes(num_rows * top_m, id_bits),),
    }
    tensors = decode_tensors(payload, expected)
    if set(tensors) != set(expected):
        raise CodecError(f"top-m logits need {sorted(expected)}; got {sorted(tensors)}")
    raw = tensors[CLASSES_TENSOR]
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
    logits = tensors[FILL_TENSOR].reshape(-1, 1).repeat(1, num_classes)  # (B,) -> (B, K)
    logits.scatter_(1, classes, tensors[LOGITS_TENSOR])
    return logits, tensors[AFFINITY_TENSOR]
