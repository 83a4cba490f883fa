"""The consensus modes :func:`feddistill.distill.consensus.consensus` runs, kept free of torch.

The run config (:mod:`feddistill.config`) checks ``consensus`` against this list without
loading torch, so ``feddistill run``'s own process stays small (issue 13).
"""

from __future__ import annotations

KD3A_MODES: tuple[str, ...] = ("knowledge-vote", "consensus-focus")  # distill.kd3a
COVERAGE_MODE = "coverage"  # distill.coverage: class-coverage-weighted teacher votes
COVERAGE_ERA_MODE = "coverage-era"  # ... sharpened as in DS-FL's ERA
COVERAGE_MODES: tuple[str, ...] = (COVERAGE_MODE, COVERAGE_ERA_MODE)
CONSENSUS_MODES: tuple[str, ...] = (
    "mean",
    "confidence",
    "entropy",
    "domain",
    "cluster-mean",
    "era",
    *KD3A_MODES,
    *COVERAGE_MODES,
)
