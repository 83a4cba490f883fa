"""Tensors to wire bytes and back: :func:`encode_tensors` / :func:`decode_tensors`.

An update takes the compressed path, residual -> top-k -> quantize -> encode
(:func:`compress_update`); logits, soft labels and dense state take
:func:`encode_tensors` / :func:`encode_state`. Every payload is decoded by
:func:`decode_tensors`: ``decode -> dequantize -> dense``, and gets float32
tensors (integer and bool tensors keep their dtype, bit for bit). Aggregation happens
after decoding, in float32, never on the integer codes.

References:
    DGC, Lin et al., arXiv:1712.01887 (top-k + local accumulation).
    EF-SGD, Karimireddy et al., arXiv:1901.09847 (error feedback).
    QSGD, Alistarh et al., arXiv:1610.02132 (stochastic rounding).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from feddistill.compression.codec import encode_float, encode_raw, pack_payload
from feddistill.compression.decode import decode_payload
from feddistill.compression.quantize import all_finite
from feddistill.compression.spec import CompressionSpec


def _check_finite(key: str, t: Tensor, what: str) -> None:
    if not all_finite(t):
        raise ValueError(f"{what} tensor {key!r} holds NaN or Inf; refusing to encode it")


def compress_update(
    update: Mapping[str, Tensor],
    spec: CompressionSpec,
    residual: Mapping[str, Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[bytes, dict[str, Tensor]]:
    """Encode an update (or a state_dict) to bytes, with error feedback.

    Order, per floating tensor: ``acc = update + residual`` -> top-k of ``|acc|`` ->
    quantize the kept values -> encode. Integer and bool tensors (and empty tensors) are
    stored losslessly with their dtype and get no residual.

    Args:
        update: name -> tensor, e.g. ``local - global`` weights; float tensors finite.
        spec: compression settings.
        residual: the residual this function returned last round (float32, same
            shapes); missing keys count as zero. Ignored when ``spec.error_feedback`` is
            False.
        generator: random source for stochastic rounding (seed it to reproduce).

    Returns:
        (payload, new_residual): ``len(payload)`` is the exact ``payload_bytes``.
        ``new_residual[key] = acc - decoded`` (float32) for every float tensor, so
        quantization error is fed back too; ``{}`` when error feedback is off.

    Raises:
        ValueError: if a tensor or residual holds NaN/Inf (the message names the key),
            a residual's shape differs, or ``ch_axis`` is out of range for a tensor.

    References:
        DGC, arXiv:1712.01887; EF-SGD, arXiv:1901.09847; QSGD, arXiv:1610.02132.
    """
    use_ef = spec.error_feedback
    residual = residual if (use_ef and residual is not None) else {}
    records: list[bytes] = []
    new_residual: dict[str, Tensor] = {}
    for key, tensor in update.items():
        if not (tensor.is_floating_point() and tensor.numel() > 0):
            records.append(encode_raw(key, tensor))
            continue
        acc = tensor.detach().cpu().float()
        if key in residual:
            res = residual[key]
            if tuple(res.shape) != tuple(tensor.shape):
                raise ValueError(
                    f"residual {key!r} has shape {tuple(res.shape)}, "
                    f"update has {tuple(tensor.shape)}"
                )
            acc = acc + res.detach().cpu().float()
        if not all_finite(acc):  # one pass; then find out which input is to blame
            _check_finite(key, tensor, "update")
            _check_finite(key, residual[key], "residual")
            raise ValueError(f"update + residual {key!r} overflows to Inf")
        record, decoded = encode_float(key, acc, spec, generator, use_ef)
        records.append(record)
        if decoded is not None:
            new_residual[key] = acc - decoded
    return pack_payload(records), new_residual


def decode_tensors(
    payload: bytes, expected: Mapping[str, tuple[int, ...]] | None = None
) -> dict[str, Tensor]:
    """Decode a payload of :func:`compress_update` or :func:`encode_tensors`.

    Args:
        payload: the exact bytes produced by the encoder.
        expected: name -> shape the receiver knows; a tensor of another name or shape
            is rejected before it is allocated (pass it for untrusted payloads).

    Returns:
        name -> dense tensor in the encoder's order: float tensors as float32 with
        their original shape, integer and bool tensors with their dtype.

    Raises:
        CodecError: (a ``ValueError``) if the payload is truncated, corrupted, not a
            payload of this codec, or holds a tensor other than ``expected``.
    """
    return decode_payload(payload, expected)


def encode_state(state: Mapping[str, Tensor]) -> bytes:
    """Model state that is not an update (buffers): dense, lossless, no residual.

    Float tensors as fp32 (exact zeros skipped when that is smaller), integer and bool
    tensors with their dtype. Nothing is sparsified or quantized, so BatchNorm
    statistics arrive exactly as the client had them.

    Args:
        state: name -> tensor, e.g. ``{"bn.running_var": (C,), ...}``; floats finite.

    Returns:
        Payload bytes; decode with :func:`decode_tensors`.

    Raises:
        ValueError: if a float tensor holds NaN or Inf (the message names the key).
    """
    return encode_tensors(state, bit_width=32, per_channel=False)


def encode_tensors(
    tensors: Mapping[str, Tensor], bit_width: int, per_channel: bool = True, ch_axis: int = 0
) -> bytes:
    """Dense quantize + encode (no sparsification, no residual), e.g. for teacher logits.

    Args:
        tensors: name -> tensor, e.g. ``{"logits": (B, K), "affinity": (B,)}``; float
            tensors finite.
        bit_width: one of {1, 2, 4, 8, 16, 32}.
        per_channel: one scale per index of ``ch_axis`` for tensors of 2+ dims (for
            logits (B, K) with ``ch_axis=0``: one scale per proxy sample).
        ch_axis: channel axis.

    Returns:
        Payload bytes; decode with :func:`decode_tensors`.

    Raises:
        ValueError: on a bad ``bit_width`` or ``ch_axis``, or a NaN/Inf tensor (named).
    """
    spec = CompressionSpec(
        bit_width=bit_width, per_channel=per_channel, ch_axis=ch_axis, error_feedback=False
    )
    payload, _ = compress_update(tensors, spec)
    return payload
