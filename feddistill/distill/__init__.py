"""Knowledge distillation: KD losses, consensus of client logits, domain affinity.

Pure torch / numpy / scikit-learn; no Flower or Ray imports.
"""

from feddistill.distill.affinity import SharedFeatureSpace, domain_affinity
from feddistill.distill.consensus import (
    CONSENSUS_MODES,
    consensus,
    largest_cluster_mask,
    weighted_consensus,
)
from feddistill.distill.losses import kd_loss, soft_labels

__all__ = [
    "CONSENSUS_MODES",
    "SharedFeatureSpace",
    "consensus",
    "domain_affinity",
    "kd_loss",
    "largest_cluster_mask",
    "soft_labels",
    "weighted_consensus",
]
