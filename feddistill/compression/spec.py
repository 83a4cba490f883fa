"""How tensors are compressed for the wire: one spec for updates, logits and state.

:class:`CompressionSpec` is read by the encoder of every float record
(:func:`feddistill.compression.codec.encode_float`) and by the update path
(:func:`feddistill.compression.update.compress_update`), which alone uses
``error_feedback``.
"""

from __future__ import annotations

from dataclasses import dataclass

from feddistill.compression.quantize import BIT_WIDTHS, check_bit_width
from feddistill.compression.sparsify import check_density, check_k


@dataclass(frozen=True)
class CompressionSpec:
    """Sparsification and quantization of float tensors (validated on construction).

    Attributes:
        density: fraction of entries of each float tensor kept by magnitude top-k, in
            (0, 1]; ``ceil(density * numel)``, at least 1. 1.0 sends every entry.
        k: exact number of entries kept per tensor (int >= 1, capped at numel);
            overrides ``density``.
        bit_width: 1, 2, 4, 8 (uniform affine integer codes), 16 (fp16) or 32 (fp32,
            no quantization).
        per_channel: one scale per index of ``ch_axis`` for dense tensors of 2+
            dimensions. Sparse tensors (``density < 1``) and 1-D tensors use one scale
            per tensor: a few kept values per channel do not pay for a scale each.
        ch_axis: channel axis for per-channel scales; checked against each tensor.
        stochastic: unbiased stochastic rounding (QSGD) instead of round-to-nearest.
        error_feedback: :func:`~feddistill.compression.update.compress_update` returns
            a residual (what was not sent, including quantization error) for the
            caller to pass back next round.

    Raises:
        ValueError: on a value outside the allowed set, naming both.

    References:
        DGC, arXiv:1712.01887; EF-SGD, arXiv:1901.09847; QSGD, arXiv:1610.02132.
    """

    density: float = 1.0
    k: int | None = None
    bit_width: int = 32
    per_channel: bool = True
    ch_axis: int = 0
    stochastic: bool = False
    error_feedback: bool = True

    def __post_init__(self) -> None:
        check_density(self.density)
        check_k(self.k)
        check_bit_width(self.bit_width, BIT_WIDTHS)
        if isinstance(self.ch_axis, bool) or not isinstance(self.ch_axis, int):
            raise ValueError(f"ch_axis must be an int, got {self.ch_axis!r}")
