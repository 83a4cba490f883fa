"""Knowledge distillation: KD losses, consensus of client logits, domain affinity.

Pure torch / numpy / scikit-learn; no Flower or Ray imports. The names below load on
first use (PEP 562): importing :mod:`.names` does not load torch. The consensus function
is :func:`feddistill.distill.consensus.consensus` (``feddistill.distill.consensus`` is
its module, so the package does not hand the function on under the same name).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from feddistill.distill.names import CONSENSUS_MODES

if TYPE_CHECKING:
    from feddistill.distill.affinity import SharedFeatureSpace, domain_affinity
    from feddistill.distill.consensus import largest_cluster_mask, weighted_consensus
    from feddistill.distill.losses import kd_loss, soft_labels

_LAZY = {
    "SharedFeatureSpace": "affinity",
    "domain_affinity": "affinity",
    "largest_cluster_mask": "consensus",
    "weighted_consensus": "consensus",
    "kd_loss": "losses",
    "soft_labels": "losses",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"feddistill.distill.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'feddistill.distill' has no attribute {name!r}")


__all__ = [
    "CONSENSUS_MODES",
    "SharedFeatureSpace",
    "domain_affinity",
    "kd_loss",
    "largest_cluster_mask",
    "soft_labels",
    "weighted_consensus",
]
