"""The bit widths the quantizer accepts and the channel importances, kept free of torch.

The run config (:mod:`feddistill.config`) checks ``*-bit-width`` keys against this
list without loading torch, so ``feddistill run``'s own process stays small (issue 13).
"""

from __future__ import annotations

INT_BIT_WIDTHS: tuple[int, ...] = (1, 2, 4, 8)  # affine integer quantization
BIT_WIDTHS: tuple[int, ...] = (*INT_BIT_WIDTHS, 16, 32)  # 16 = fp16, 32 = uncompressed fp32
IMPORTANCES: tuple[str, ...] = ("magnitude", "taylor")  # what ranks channels (pruning)
