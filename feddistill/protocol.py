"""What the ServerApp and ClientApp exchange: record keys and the per-strategy plan.

Every key that crosses the wire is a constant here, so the two sides cannot drift.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from feddistill.config import RunConfig

# --- server -> client (train message) ---
ARRAYS = "arrays"  # ArrayRecord: global student state_dict, float32
CONFIG = "config"  # ConfigRecord: server-round, consensus payload
SERVER_ROUND = "server-round"
MASK = "mask"  # bytes: global keep-mask bitmap (compression/masks.py), to clients that lack it
MASK_VERSION = (
    "mask-version"  # int: round the global mask last changed (0: none); also a reply metric
)
CONSENSUS = "consensus"  # bytes: soft labels (compression/consensus_payload.py); absent in round 1
# downlink compression (downlink-bit-width < 32 or downlink-density < 1): ARRAYS is empty
DOWNLINK_BASE = "downlink-base-round"  # int: replica round the delta is against; 0 = full
DOWNLINK_PARAMS = "downlink-params"  # bytes: full parameters (fp32) or compressed delta
DOWNLINK_BUFFERS = "downlink-buffers"  # bytes: dense buffer values
# str: comma list of partitions whose last teacher logits the server holds (a frozen
# teacher of those sends none); only with teacher-rounds / teacher-plateau-rounds
LOGITS_HELD = "logits-held"

# --- client -> server (train reply) ---
METRICS = "metrics"  # MetricRecord: num-examples, partition-id, losses, bytes, class counts
PAYLOAD = "payload"  # ConfigRecord holding the two byte strings below
UPDATE = "update"  # bytes: compressed student update (local - global)
LOGITS = "logits"  # bytes: teacher logits, log affinity (compression/teacher_upload.py)
BUFFERS = "buffers"  # bytes: the student's buffers (BatchNorm statistics) as dense values
PLACEMENT = "placement"  # ConfigRecord: where the client ran (hostname, ray-node-id, gpu-ids, pid)
NUM_EXAMPLES = "num-examples"
PARTITION_ID = "partition-id"
LOGITS_REUSED = "logits_reused"  # metric 1.0: a frozen teacher sent no logits on purpose
# metric 1.0: the logits payload covers the whole proxy set, not this round's rows
# (a frozen teacher resending its cache; differs only with logits-subset < 1)
LOGITS_WHOLE_PROXY = "logits_whole_proxy"


@dataclass(frozen=True)
class StrategyPlan:
    """What a strategy name means for clients and server.

    Built by :func:`plan_for` from the effective config (:func:`effective_config`), so
    its numbers are that config's numbers: read either, they agree.

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
        freezes_teachers: teachers stop training (``teacher-rounds`` or
            ``teacher-plateau-rounds``); the server then names the partitions whose
            logits it holds (:data:`LOGITS_HELD`) and a frozen teacher sends none.
    """

    uses_teachers: bool
    uses_kd: bool
    consensus: str | None
    density: float
    bit_width: int
    error_feedback: bool
    server_distill_epochs: int
    uploads_student: bool = True
    freezes_teachers: bool = False


TEACHER_STRATEGIES = ("feddistill", "fedmd", "logits-only")  # clients train teachers + KD
DENSE_FP32_STRATEGIES = ("fedavg", "feddf", "logits-only", "centralized")


def effective_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` with what its strategy overrides applied: the settings the run really uses.

    - ``feddistill``: teachers + KD to the configured consensus, compressed updates.
    - ``fedmd``: the same with an unweighted ``mean`` consensus (FedMD, arXiv:1910.03581).
    - ``fedavg``: FedAvg (arXiv:1602.05629), dense fp32 updates (density 1, 32 bits,
      no error feedback), no server distillation.
    - ``fedavg-compressed``: FedAvg with the configured update compression, no server
      distillation.
    - ``feddf``: FedAvg with fp32 updates plus server-side ensemble distillation of the
      global student on the proxy set (FedDF, arXiv:2006.07242), at least 1 epoch.
    - ``logits-only``: clients upload only their own model's logits on the proxy set
      (+ affinity) and distill that model to the last consensus (DS-FL, arXiv:2008.06180;
      FedMD); the server builds the consensus and distills the global student to it
      (FedDF's server step, at least 1 epoch). Nothing of the student is uploaded, so
      the update settings are fp32 and dense. Each client may run its own architecture.
    - ``centralized``: handled outside the federation (pooled training); as ``fedavg``.

    Idempotent: ``effective_config(effective_config(c)) == effective_config(c)``. Resolve
    it once where the config enters (ClientApp, ServerApp) and read only the result.

    Args:
        cfg: the run's config as given.

    Returns:
        A checked copy with ``consensus``, ``update_density``, ``update_bit_width``,
        ``error_feedback``, ``server_distill_epochs`` and ``server_distill_rounds`` as the
        strategy runs them.
    """
    changes: dict[str, object] = {}
    if cfg.strategy == "fedmd":
        changes.update(consensus="mean", server_distill_epochs=0)
    if cfg.strategy in DENSE_FP32_STRATEGIES:
        changes.update(update_density=1.0, update_bit_width=32, error_feedback=False)
    if cfg.strategy in ("feddf", "logits-only"):
        changes["server_distill_epochs"] = max(1, cfg.server_distill_epochs)
    if cfg.strategy == "logits-only":  # its server student learns by distillation only
        changes["server_distill_rounds"] = 0
    elif cfg.strategy in ("fedavg", "fedavg-compressed", "centralized"):
        changes["server_distill_epochs"] = 0
    changed = {k: v for k, v in changes.items() if getattr(cfg, k) != v}
    return cfg.replace(**changed) if changed else cfg


def plan_for(cfg: RunConfig) -> StrategyPlan:
    """What ``cfg.strategy`` sends and does, with the numbers of :func:`effective_config`.

    Args:
        cfg: the run's config (as given, or already effective: the result is the same).

    Returns:
        The :class:`StrategyPlan`.
    """
    eff = effective_config(cfg)
    teachers = eff.strategy in TEACHER_STRATEGIES
    return StrategyPlan(
        uses_teachers=teachers,
        uses_kd=teachers,
        consensus=eff.consensus if teachers else None,
        density=eff.update_density,
        bit_width=eff.update_bit_width,
        error_feedback=eff.error_feedback,
        server_distill_epochs=eff.server_distill_epochs,
        uploads_student=eff.strategy != "logits-only",
        freezes_teachers=teachers and bool(eff.teacher_rounds or eff.teacher_plateau_rounds),
    )


# --- class counts (consensus = "coverage" / "coverage-era"): client -> server, in METRICS ---
CLASS_COUNT_PREFIX = "class-count-"  # metric "class-count-<k>": training examples of class k


def class_count_metrics(labels: Iterable[int], num_classes: int) -> dict[str, float]:
    """The reply metrics holding a client's training examples per class.

    Args:
        labels: the client's training labels, n ints in [0, num_classes) (a list, or
            a 1-D tensor's ``tolist()``); labels outside that range are not counted.
        num_classes: K >= 1.

    Returns:
        ``{"class-count-0": m_0, ..., "class-count-<K-1>": m_{K-1}}`` (floats).
    """
    counts = Counter(int(v) for v in labels)
    return {f"{CLASS_COUNT_PREFIX}{k}": float(counts[k]) for k in range(num_classes)}


# bytes of one metric value as Flower's MetricRecord carries it (a float64)
METRIC_VALUE_BYTES = 8


def class_counts_bytes(metrics: Mapping[str, float]) -> int:
    """Uplink bytes of the class counts a reply carries, for the byte accounting.

    Each ``class-count-<k>`` entry costs its key's UTF-8 bytes plus one float64 value
    (:data:`METRIC_VALUE_BYTES`); the record's framing is not counted, as for the
    payload's bytes.

    Args:
        metrics: the reply's metrics; entries without the class-count prefix are ignored.

    Returns:
        Bytes, >= 0; 0 when the reply sends no class counts.
    """
    return sum(
        len(key.encode()) + METRIC_VALUE_BYTES
        for key in metrics
        if key.startswith(CLASS_COUNT_PREFIX)
    )


def read_class_counts(
    metrics: Mapping[str, float], num_classes: int, num_examples: int
) -> tuple[int, ...]:
    """A reply's class counts, checked; the inverse of :func:`class_count_metrics`.

    Args:
        metrics: the reply's metrics.
        num_classes: K, the student's classes.
        num_examples: the reply's num-examples, which the counts must sum to.

    Returns:
        The K counts, in class order.

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
    values = [float(metrics[f"{CLASS_COUNT_PREFIX}{k}"]) for k in range(num_classes)]
    if not all(math.isfinite(v) and v >= 0 and v.is_integer() for v in values):
        raise ValueError(f"class counts must be non-negative integers, got {values}")
    counts = tuple(int(v) for v in values)
    if sum(counts) != num_examples:
        raise ValueError(
            f"class counts sum to {sum(counts)}, the reply's num-examples is {num_examples}"
        )
    return counts
