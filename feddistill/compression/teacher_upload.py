"""The teacher upload, both ways: what a client makes of its teacher's proxy logits and
domain affinity, and what the server reads back.

Client side (:meth:`TeacherUpload.from_teacher`, :meth:`TeacherUpload.encode`):

- each logit row is shifted to max 0 and clipped at ``-8 T``: the softmax at T is
  unchanged up to ``e^-8`` per class, and the quantizer's range no longer depends on
  outliers;
- the affinity goes up as its log (floored at 1e-30): with ``logits-bit-width`` linear
  bits, far samples keep their relative weights;
- both are quantized with one scale per tensor (:func:`encode_tensors`).

Server side (:meth:`TeacherUpload.decode`, :meth:`TeacherUpload.affinity_weights`):
decode against the (B, K) and (B,) the server expects, check that both tensors are
there, shaped alike and finite, and turn the log-affinity back into consensus weights
``exp(log_affinity)``, floored at 1e-12 so no sample has all-zero weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from feddistill.compression.codec import CodecError
from feddistill.compression.update import decode_tensors, encode_tensors

LOGITS_TENSOR = "logits"  # (B, K) shifted, clipped teacher logits
AFFINITY_TENSOR = "affinity"  # (B,) log domain affinity
CLIP_TEMPERATURES = 8.0  # logits are clipped at -CLIP_TEMPERATURES * T below the row max
LOG_AFFINITY_FLOOR = 1e-30  # affinity floor before the log (client)
WEIGHT_FLOOR = 1e-12  # consensus weight floor after exp (server)


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

    def encode(self, bit_width: int) -> bytes:
        """The payload: both tensors quantized with one scale per tensor.

        Args:
            bit_width: one of {1, 2, 4, 8, 16, 32} (``logits-bit-width``).

        Returns:
            Payload bytes (``len`` is the exact upload size).

        Raises:
            ValueError: on a bad ``bit_width`` or a NaN/Inf tensor (named).
        """
        tensors = {LOGITS_TENSOR: self.logits, AFFINITY_TENSOR: self.log_affinity}
        return encode_tensors(tensors, bit_width=bit_width, per_channel=False)

    @classmethod
    def decode(
        cls, payload: bytes, num_samples: int | None = None, num_classes: int | None = None
    ) -> TeacherUpload:
        """Read a payload of :meth:`encode` from an untrusted client.

        Args:
            payload: the bytes received.
            num_samples: B, this round's proxy rows; with ``num_classes`` the sizes
                are checked before anything is allocated. None: not checked up front.
            num_classes: K, the student's classes.

        Returns:
            The upload, float32 tensors of shape (B, K) and (B,).

        Raises:
            CodecError: if the payload does not decode (truncated, corrupted, other
                names or shapes than (B, K) and (B,)), a tensor is missing, the
                shapes disagree, or a value is NaN or Inf.
        """
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
