"""The consensus modes :func:`feddistill.distill.consensus.consensus` runs, kept free of torch.

The run config (:mod:`feddistill.config`) checks ``consensus`` against this list without
loading torch, so ``feddistill run``'s own process stays small (issue 13).
"""

from __future__ import annotations

KD3A_MODES: tuple[str, ...] = ("knowledge-vote", "consensus-focus")  # distill.kd3a
CONSENSUS_MODES: tuple[str, ...] = (
    "mean",
    "confidence",
    "entropy",
    "domain",
    "cluster-mean",
    "era",
    *KD3A_MODES,
)
