"""Run configuration: one frozen dataclass, parsed once at the edge.

Keys are kebab-case everywhere a user types them (``[tool.flwr.app.config]`` in
pyproject.toml, a TOML file given to ``feddistill run --config``, ``--set key=value``,
``flwr run . --run-config``); fields are the same names in snake_case. Every value is
range-checked here, so library code takes typed arguments only.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

from feddistill.checks import check_choice as _check_choice
from feddistill.checks import check_open_unit as _check_open_unit
from feddistill.checks import check_range as _check_range
from feddistill.compression.names import BIT_WIDTHS
from feddistill.compression.names import IMPORTANCES as CHANNEL_IMPORTANCES
from feddistill.data.names import DATASET_NAMES as DATASETS
from feddistill.data.names import DOMAIN_DATASET_NAMES as DOMAIN_DATASETS
from feddistill.data.names import DOMAIN_PARTITIONER_NAMES as DOMAIN_PARTITIONERS
from feddistill.data.names import PARTITIONER_NAMES as PARTITIONERS
from feddistill.data.names import PROXY_SETS
from feddistill.data.spec import DataSpec
from feddistill.distill.names import CONSENSUS_MODES
from feddistill.models.names import MODEL_NAMES

# Names of server and client code, which import this module (tests check they agree):
STRATEGIES = (
    "feddistill",
    "fedavg",
    "fedavg-compressed",
    "feddf",
    "fedmd",
    "logits-only",
    "centralized",
)
CONSENSUS_STRATEGIES = ("feddistill", "fedmd", "logits-only")  # teachers build a consensus
DEVICES = ("auto", "cpu", "cuda")
AGGREGATORS = ("fedavg", "median", "trimmed-mean", "krum", "multi-krum")  # server.robust
CLIENT_STATE_DTYPES = ("float32", "float16")  # clients.state.to_storage
ATTACKS = ("none", "scaled-update", "sign-flip", "random-update", "shifted-logits", "random-logits")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one run needs. Defaults are the `make run` job."""

    # --- data ---
    seed: int = 0  # one seed fixes splits, partitions, init and client sampling
    dataset: str = "mnist5k"  # one of DATASETS; mnist5k and digits are embedded
    data_root: str = "data"  # torchvision datasets live (or are downloaded) here
    download: bool = False  # allow torchvision to download missing files
    proxy_fraction: float = 0.2  # share of the dataset used as the unlabeled proxy set
    test_fraction: float = 0.2  # share held out for server-side evaluation
    partitioner: str = "kmeans"  # one of PARTITIONERS
    num_partitions: int = 4  # clients (one partition each)
    dirichlet_alpha: float = 0.5  # concentration for partitioner = dirichlet
    min_partition_size: int = 10  # every partition has at least this many samples
    target_domains: str = ""  # comma list of domain ids held out of training (no labels)
    proxy_set: str = "target"  # with target-domains: "target" (their unlabeled inputs) or "public"
    num_domains: int = 0  # KMeans domains of a plain dataset with target-domains; 0 = auto
    # --- federation ---
    strategy: str = "feddistill"  # one of STRATEGIES
    num_server_rounds: int = 10
    fraction_train: float = 1.0  # share of clients sampled per round, in (0, 1]
    min_train_nodes: int = 2  # fewer successful clients than this fails the round
    client_num_cpus: int = 1  # Ray resources per client (Flower wants an integer)
    client_num_gpus: float = 0.0  # fraction of one GPU per client, in [0, 1]
    server_num_cpus: int = 1  # torch threads of the ServerApp's own work in the rounds
    device: str = "auto"  # auto = cuda when present
    deterministic: bool = True  # CUDA: deterministic kernels (same seed -> same metrics)
    # --- models and local training ---
    teacher_models: str = "cnn"  # comma list, one per client or one for all
    student_model: str = "cnn-small"
    teacher_epochs: int = 1  # local teacher epochs per round
    local_epochs: int = 1  # local student epochs per round
    local_steps: int = 0  # fixed student SGD steps per round; 0 = local-epochs decides
    teacher_local_steps: int = 0  # fixed teacher SGD steps per round; 0 = teacher-epochs decides
    # each client's teacher trains in the first R rounds the client is sampled in, then
    # its cached logits are reused; 0 = every round (the default until session 27)
    teacher_rounds: int = 5
    teacher_plateau_rounds: int = 0  # freeze a teacher after P rounds without a better val acc
    client_state_dtype: str = "float32"  # teacher weights in client-state/: float32 | float16
    batch_size: int = 32
    learning_rate: float = 0.02  # student SGD learning rate
    teacher_learning_rate: float = 0.05
    momentum: float = 0.9
    # --- distillation ---
    temperature: float = 2.0  # softmax temperature T > 0
    alpha: float = 1.0  # KD weight: loss = CE + alpha * T^2 * KL
    consensus: str = "domain"  # one of distill.consensus.CONSENSUS_MODES
    server_distill_epochs: int = 1  # server-side distillation to the consensus per round
    server_distill_rounds: int = 0  # distill on the server in rounds 1..R only; 0 = every round
    # --- compression ---
    update_density: float = 0.05  # top-k fraction of update entries sent, in (0, 1]
    update_bit_width: int = 4  # one of compression.quantize.BIT_WIDTHS
    error_feedback: bool = True  # keep what top-k did not send for the next round
    logits_bit_width: int = 4  # uploaded teacher logits, one of BIT_WIDTHS
    downlink_density: float = 1.0  # top-k fraction of the global-student delta sent down
    downlink_bit_width: int = 32  # bits of that delta; 32 with density 1: full fp32 model
    logits_subset: float = 1.0  # seeded share of the proxy set with logits each round
    logits_top_m: int = 0  # classes per logits row sent (top-m, the rest one fill value); 0 = all
    consensus_bit_width: int = 16  # bits of the soft labels sent down (measured: README)
    export_sparsity: float = 0.5  # unstructured sparsity of the exported student, [0, 1)
    # --- in-federation sparsity (server-owned global mask; 0 = off) ---
    target_sparsity: float = 0.0  # final fraction of conv / linear weights masked, [0, 1)
    sparsity_start_round: int = 1  # first round with a mask
    sparsity_end_round: int = 1  # round the target is reached (cubic ramp in between)
    channel_pruning_ratio: float = 0.0  # channels the server removes once, [0, 1); 0 = off
    channel_pruning_round: int = 1  # the removal happens at the start of this round
    channel_pruning_norm: int = 2  # filter norm ranking the channels: 1 (L1) or 2 (L2)
    channel_pruning_importance: str = "magnitude"  # "magnitude" (that norm) or "taylor"
    round_timeout_s: float = 600.0  # a sampled client that has not replied by then failed
    # --- robustness to malicious clients ---
    aggregator: str = "fedavg"  # one of AGGREGATORS, on the trainable deltas
    clip_multiple: float = 2.0  # clip updates to this x the round's median norm; 0 = off
    robust_fraction: float = 0.25  # share of clients trimmed-mean / Krum assume malicious
    robust_consensus: bool = True  # normalised affinity, agreement gate, share cap
    max_client_share: float = 0.75  # largest share of one client per proxy sample, (0, 1]
    # --- output ---
    out_dir: str = "results/latest"
    resume: bool = False  # continue from out-dir's last checkpoint (else one there is an error)
    # --- fault injection (tests, chaos drills) ---
    fail_partitions: str = ""  # comma list of partition ids whose training raises
    attack: str = "none"  # one of ATTACKS, played by the clients in attack-partitions
    attack_partitions: str = ""  # comma list of partition ids that attack

    def _check_channel_importance(self) -> None:
        """Taylor importance needs a consensus: a teacher strategy, from round 2."""
        _check_choice(
            "channel-pruning-importance", self.channel_pruning_importance, CHANNEL_IMPORTANCES
        )
        if self.channel_pruning_ratio == 0 or self.channel_pruning_importance != "taylor":
            return
        if self.strategy not in CONSENSUS_STRATEGIES:
            raise ValueError(
                f"channel-pruning-importance='taylor' takes its gradient from the consensus "
                f"soft labels; strategy={self.strategy!r} builds none (allowed: "
                f"{', '.join(CONSENSUS_STRATEGIES)})"
            )
        if self.channel_pruning_round < 2:
            raise ValueError(
                f"channel-pruning-importance='taylor' needs last round's consensus; "
                f"channel-pruning-round={self.channel_pruning_round} has none (allowed: >= 2)"
            )

    def __post_init__(self) -> None:
        _check_choice("dataset", self.dataset, DATASETS + DOMAIN_DATASETS)
        _check_choice("partitioner", self.partitioner, PARTITIONERS + DOMAIN_PARTITIONERS)
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("consensus", self.consensus, CONSENSUS_MODES)
        _check_choice("proxy-set", self.proxy_set, PROXY_SETS)
        self._check_domains()
        _check_choice("device", self.device, DEVICES)
        _check_choice("client-state-dtype", self.client_state_dtype, CLIENT_STATE_DTYPES)
        _check_choice("update-bit-width", self.update_bit_width, BIT_WIDTHS)
        _check_choice("logits-bit-width", self.logits_bit_width, BIT_WIDTHS)
        _check_choice("downlink-bit-width", self.downlink_bit_width, BIT_WIDTHS)
        _check_choice("consensus-bit-width", self.consensus_bit_width, BIT_WIDTHS)
        _check_choice("aggregator", self.aggregator, AGGREGATORS)
        _check_choice("attack", self.attack, ATTACKS)
        _check_range("clip_multiple", self.clip_multiple, low=0.0)
        _check_range("robust_fraction", self.robust_fraction, low=0.0, high=0.5, high_open=True)
        _check_range("max_client_share", self.max_client_share, low=0.0, low_open=True, high=1.0)
        self._check_attack()
        for key in (
            "num_partitions",
            "num_server_rounds",
            "min_train_nodes",
            "client_num_cpus",
            "server_num_cpus",
            "batch_size",
            "min_partition_size",
        ):
            _check_range(key, getattr(self, key), low=1)
        for key in (
            "teacher_epochs",
            "local_epochs",
            "local_steps",
            "teacher_local_steps",
            "teacher_rounds",
            "teacher_plateau_rounds",
            "logits_top_m",
            "server_distill_epochs",
            "server_distill_rounds",
            "seed",
        ):
            _check_range(key, getattr(self, key), low=0)
        for key in ("proxy_fraction", "test_fraction"):
            _check_open_unit(key, getattr(self, key))
        if self.proxy_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                "proxy-fraction + test-fraction must be < 1 (the rest is train), got "
                f"{self.proxy_fraction} + {self.test_fraction}"
            )
        _check_range("fraction_train", self.fraction_train, low=0.0, low_open=True, high=1.0)
        _check_range("update_density", self.update_density, low=0.0, low_open=True, high=1.0)
        _check_range("downlink_density", self.downlink_density, low=0.0, low_open=True, high=1.0)
        _check_range("logits_subset", self.logits_subset, low=0.0, low_open=True, high=1.0)
        _check_range("client_num_gpus", self.client_num_gpus, low=0.0, high=1.0)
        _check_range("export_sparsity", self.export_sparsity, low=0.0, high=1.0, high_open=True)
        _check_range("target_sparsity", self.target_sparsity, low=0.0, high=1.0, high_open=True)
        _check_range("sparsity_start_round", self.sparsity_start_round, low=1)
        _check_range("sparsity_end_round", self.sparsity_end_round, low=self.sparsity_start_round)
        _check_range(
            "channel_pruning_ratio", self.channel_pruning_ratio, low=0.0, high=1.0, high_open=True
        )
        _check_range("channel_pruning_round", self.channel_pruning_round, low=1)
        if self.channel_pruning_ratio > 0 and self.channel_pruning_round > self.num_server_rounds:
            raise ValueError(
                f"channel-pruning-round={self.channel_pruning_round} is after the last round "
                f"(num-server-rounds={self.num_server_rounds}); allowed: 1..{self.num_server_rounds}"
            )
        _check_choice("channel-pruning-norm", self.channel_pruning_norm, (1, 2))
        self._check_channel_importance()
        if self.channel_pruning_ratio > 0 and self.target_sparsity > 0:
            raise ValueError(
                f"channel-pruning-ratio={self.channel_pruning_ratio} and target-sparsity="
                f"{self.target_sparsity} cannot both be on (the mask would not fit the new shapes)"
            )
        downlink_compressed = self.downlink_density < 1.0 or self.downlink_bit_width < 32
        if self.channel_pruning_ratio > 0 and downlink_compressed:
            raise ValueError(
                f"channel-pruning-ratio={self.channel_pruning_ratio} needs the full downlink "
                f"(downlink-density=1.0, downlink-bit-width=32), got {self.downlink_density} / "
                f"{self.downlink_bit_width}: clients' replicas would not fit the new shapes"
            )
        for key in ("learning_rate", "teacher_learning_rate", "temperature", "dirichlet_alpha"):
            _check_range(key, getattr(self, key), low=0.0, low_open=True)
        _check_range("alpha", self.alpha, low=0.0)
        _check_range("round_timeout_s", self.round_timeout_s, low=0.0, low_open=True)
        try:
            self.failing_partitions()
        except ValueError:
            raise ValueError(
                f"fail-partitions must be a comma list of integers, got {self.fail_partitions!r}"
            ) from None
        _check_range("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        for name in self.teacher_model_list():
            _check_choice("teacher-models", name, MODEL_NAMES)
        _check_choice("student-model", self.student_model, MODEL_NAMES)
        bad_ids = sorted(p for p in self.failing_partitions() if not 0 <= p < self.num_partitions)
        if bad_ids:
            raise ValueError(
                f"fail-partitions ids {bad_ids} are outside [0, num-partitions={self.num_partitions})"
            )
        if not self.teacher_model_list():
            raise ValueError("teacher-models must name at least one model, got ''")
        if len(self.teacher_model_list()) not in (1, self.num_partitions):
            raise ValueError(
                f"teacher-models must list 1 or num-partitions={self.num_partitions} "
                f"models, got {len(self.teacher_model_list())}: {self.teacher_models!r}"
            )
        if self.min_train_nodes > self.num_partitions:
            raise ValueError(
                f"min-train-nodes={self.min_train_nodes} exceeds "
                f"num-partitions={self.num_partitions}"
            )

    def _check_domains(self) -> None:
        try:
            targets = self.target_domain_ids()
        except ValueError:
            raise ValueError(
                f"target-domains must be a comma list of integers >= 0, got {self.target_domains!r}"
            ) from None
        if any(t < 0 for t in targets):
            raise ValueError(
                f"target-domains must be a comma list of integers >= 0, got {self.target_domains!r}"
            )
        _check_range("num_domains", self.num_domains, low=0)
        if targets and self.partitioner == "kmeans":
            raise ValueError(
                "partitioner='kmeans' cannot be used with target-domains (its clusters are "
                "the clients); use partitioner=domain, domain-dirichlet, iid or dirichlet"
            )
        if self.num_domains and any(t >= self.num_domains for t in targets):
            raise ValueError(
                f"target-domains {sorted(targets)} must be < num-domains={self.num_domains}"
            )

    def target_domain_ids(self) -> tuple[int, ...]:
        """Domain ids held out of training, sorted, without duplicates."""
        return tuple(sorted({int(s) for s in self.target_domains.split(",") if s.strip()}))

    def _check_attack(self) -> None:
        try:
            ids = self.attacking_partitions()
        except ValueError:
            raise ValueError(
                f"attack-partitions must be a comma list of integers, got {self.attack_partitions!r}"
            ) from None
        bad = sorted(p for p in ids if not 0 <= p < self.num_partitions)
        if bad:
            raise ValueError(
                f"attack-partitions ids {bad} are outside [0, num-partitions={self.num_partitions})"
            )
        if (self.attack == "none") != (not ids):
            raise ValueError(
                f"attack={self.attack!r} with attack-partitions={self.attack_partitions!r}: "
                "give both (an attack and the partitions playing it) or neither"
            )

    def attacking_partitions(self) -> set[int]:
        """Partition ids whose client plays `attack` (fault injection)."""
        return {int(s) for s in self.attack_partitions.split(",") if s.strip()}

    def teacher_model_list(self) -> list[str]:
        """Teacher architecture names, one per client or one shared."""
        return [s.strip() for s in self.teacher_models.split(",") if s.strip()]

    def failing_partitions(self) -> set[int]:
        """Partition ids whose client raises on purpose (fault injection)."""
        return {int(s) for s in self.fail_partitions.split(",") if s.strip()}

    def teacher_model_for(self, partition_id: int) -> str:
        """The teacher architecture of client `partition_id`."""
        names = self.teacher_model_list()
        return names[0] if len(names) == 1 else names[partition_id]

    def data_spec(self) -> DataSpec:
        """The data settings of this run: what :mod:`feddistill.data` reads."""
        fields = {f.name for f in dataclasses.fields(DataSpec)} - {"target_domains"}
        return DataSpec(
            target_domains=self.target_domain_ids(), **{k: getattr(self, k) for k in fields}
        )

    def to_kebab(self) -> dict[str, Any]:
        """The config as kebab-case keys (for Flower's run config and summary.json)."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with `changes` (snake_case field names) applied and re-checked."""
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def _coerce(key: str, value: Any) -> Any:
    """Convert a TOML/CLI value to the field's type; error names the key."""
    field_name = key.replace("-", "_")
    default = getattr(RunConfig, field_name)
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        expected = {int: "an integer", float: "a number", bool: "true or false"}.get(kind, "text")
        raise ValueError(f"config key {key!r} expects {expected}, got {value!r}") from None


def from_mapping(values: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
    """Build a checked config from kebab-case (or snake_case) keys.

    Args:
        values: key -> value, e.g. Flower's ``context.run_config``.
        base: config whose values are kept where `values` is silent (defaults if None).

    Returns:
        A validated :class:`RunConfig`.

    Raises:
        ValueError: on an unknown key (the message lists the valid keys), a value of
            the wrong type, or a value out of its range.
    """
    changes: dict[str, Any] = {}
    for key, value in values.items():
        field_name = key.replace("-", "_")
        if field_name not in _FIELDS:
            raise ValueError(unknown_key_message(key))
        changes[field_name] = _coerce(key, value)
    return dataclasses.replace(base or RunConfig(), **changes)


def unknown_key_message(key: str) -> str:
    """The error text for an unknown key: the closest valid keys (difflib), then all."""
    keys = sorted(n.replace("_", "-") for n in _FIELDS)
    close = difflib.get_close_matches(key.replace("_", "-"), keys, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(k) for k in close)}?)" if close else ""
    return f"unknown config key {key!r}{hint}; valid keys: {', '.join(keys)}"
