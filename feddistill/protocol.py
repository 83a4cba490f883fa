"""What the ServerApp and ClientApp exchange: record keys and the per-strategy plan.

Every key that crosses the wire is a constant here, so the two sides cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from feddistill.config import RunConfig

# --- server -> client (train message) ---
ARRAYS = "arrays"  # ArrayRecord: global student state_dict, float32
CONFIG = "config"  # ConfigRecord: server-round, consensus payload
SERVER_ROUND = "server-round"
MASK = "mask"  # bytes: global keep-mask bitmap (compression/masks.py), to clients that lack it
MASK_VERSION = (
    "mask-version"  # int: round the global mask last changed (0: none); also a reply metric
)
CONSENSUS = "consensus"  # bytes: soft labels (B, K) encoded with the wire codec; absent in round 1
# downlink compression (downlink-bit-width < 32 or downlink-density < 1): ARRAYS is empty
DOWNLINK_BASE = "downlink-base-round"  # int: replica round the delta is against; 0 = full
DOWNLINK_PARAMS = "downlink-params"  # bytes: full parameters (fp32) or compressed delta
DOWNLINK_BUFFERS = "downlink-buffers"  # bytes: dense buffer values

# --- client -> server (train reply) ---
METRICS = "metrics"  # MetricRecord: num-examples, partition-id, losses, bytes
PAYLOAD = "payload"  # ConfigRecord holding the two byte strings below
UPDATE = "update"  # bytes: compressed student update (local - global)
LOGITS = "logits"  # bytes: teacher logits (B, K) and log domain affinity (B,), quantized
BUFFERS = "buffers"  # bytes: the student's buffers (BatchNorm statistics) as dense values
PLACEMENT = "placement"  # ConfigRecord: where the client ran (hostname, ray-node-id, gpu-ids, pid)
NUM_EXAMPLES = "num-examples"
PARTITION_ID = "partition-id"

# Names inside the LOGITS payload
LOGITS_TENSOR = "logits"
AFFINITY_TENSOR = "affinity"
SOFT_LABELS_TENSOR = "soft-labels"


@dataclass(frozen=True)
class StrategyPlan:
    """What a strategy name means for clients and server.

    Attributes:
        uses_teachers: clients train a persistent teacher and upload its proxy logits.
        uses_kd: clients add alpha * KD to the consensus to their student loss.
        consensus: consensus mode used by the server (None when no logits are uploaded).
        density: top-k fraction of the student update sent (1.0 = dense).
        bit_width: bit width of the student update (32 = fp32, uncompressed).
        error_feedback: clients keep the residual of what was not sent.
        server_distill_epochs: FedDF server-side distillation epochs per round.
        uploads_student: clients train and upload the shared student; False for
            ``logits-only`` (clients upload teacher logits only, each may run its own
            architecture, nothing of the student goes down or up).
    """

    uses_teachers: bool
    uses_kd: bool
    consensus: str | None
    density: float
    bit_width: int
    error_feedback: bool
    server_distill_epochs: int
    uploads_student: bool = True


def plan_for(cfg: RunConfig) -> StrategyPlan:
    """Translate ``cfg.strategy`` into a :class:`StrategyPlan`.

    - ``feddistill``: teachers + KD to the configured consensus, compressed updates.
    - ``fedmd``: the same with an unweighted mean consensus (FedMD, arXiv:1910.03581).
    - ``fedavg``: FedAvg (arXiv:1602.05629), dense fp32 updates, no KD.
    - ``fedavg-compressed``: FedAvg with the configured update compression.
    - ``feddf``: FedAvg with fp32 updates plus server-side ensemble distillation of the
      global student on the proxy set (FedDF, arXiv:2006.07242), at least 1 epoch.
    - ``logits-only``: clients upload only their own model's logits on the proxy set
      (+ affinity) and distill that model to the last consensus (DS-FL, arXiv:2008.06180;
      FedMD); the server builds the consensus and distills the global student to it
      (FedDF's server step, at least 1 epoch). Each client may run its own architecture.
    - ``centralized``: handled outside the federation (pooled training).
    """
    density, bits, ef = cfg.update_density, cfg.update_bit_width, cfg.error_feedback
    if cfg.strategy == "feddistill":
        return StrategyPlan(True, True, cfg.consensus, density, bits, ef, cfg.server_distill_epochs)
    if cfg.strategy == "logits-only":
        epochs = max(1, cfg.server_distill_epochs)
        return StrategyPlan(True, True, cfg.consensus, 1.0, 32, False, epochs, False)
    if cfg.strategy == "fedmd":
        return StrategyPlan(True, True, "mean", density, bits, ef, 0)
    if cfg.strategy == "fedavg-compressed":
        return StrategyPlan(False, False, None, density, bits, ef, 0)
    if cfg.strategy == "feddf":
        return StrategyPlan(False, False, None, 1.0, 32, False, max(1, cfg.server_distill_epochs))
    return StrategyPlan(False, False, None, 1.0, 32, False, 0)  # fedavg (and centralized)


# --- class counts (consensus = "coverage"): client -> server, in the reply's metrics ---
CLASS_COUNT_PREFIX = "class-count-"  # metric "class-count-<k>": training examples of class k


def class_count_metrics(labels: Tensor, num_classes: int) -> dict[str, float]:
    """The reply metrics holding a client's training examples per class.

    Args:
        labels: the client's training labels, shape (n,), ints in [0, num_classes).
        num_classes: K >= 1.

    Returns:
        ``{"class-count-0": m_0, ..., "class-count-<K-1>": m_{K-1}}`` (floats).
    """
    counts = torch.bincount(torch.as_tensor(labels).long().flatten(), minlength=num_classes)
    return {f"{CLASS_COUNT_PREFIX}{k}": float(counts[k]) for k in range(num_classes)}


def read_class_counts(metrics: Mapping[str, float], num_classes: int, num_examples: int) -> Tensor:
    """A reply's class counts as a (K,) float64 tensor, checked.

    Args:
        metrics: the reply's metrics.
        num_classes: K, the student's classes.
        num_examples: the reply's num-examples, which the counts must sum to.

    Returns:
        Tensor of shape (K,).

    Raises:
        ValueError: if a count is missing, not a non-negative integer, or the counts do
            not sum to ``num_examples`` (all named).
    """
    missing = [k for k in range(num_classes) if f"{CLASS_COUNT_PREFIX}{k}" not in metrics]
    if missing:
        raise ValueError(
            f"class counts {CLASS_COUNT_PREFIX}<k> missing for k in {missing[:10]} "
            f"(consensus='coverage' needs all {num_classes})"
        )
    counts = torch.tensor(
        [float(metrics[f"{CLASS_COUNT_PREFIX}{k}"]) for k in range(num_classes)],
        dtype=torch.float64,
    )
    if (
        not bool(torch.isfinite(counts).all())
        or bool((counts < 0).any())
        or not bool(torch.equal(counts, counts.round()))
    ):
        raise ValueError(f"class counts must be non-negative integers, got {counts.tolist()}")
    if int(counts.sum()) != num_examples:
        raise ValueError(
            f"class counts sum to {int(counts.sum())}, the reply's num-examples is {num_examples}"
        )
    return counts
