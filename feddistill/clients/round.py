"""One client's work in one round of FedDistill, as plain PyTorch (no Flower, no Ray).

Teacher round -> teacher upload (:mod:`feddistill.compression.teacher_upload`) ->
student round -> compressed student upload. Training and evaluation are
:mod:`feddistill.learn`'s; per-client state on disk is :mod:`feddistill.clients.state`'s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from feddistill.clients.attacks import attack_logits, attack_update
from feddistill.clients.state import load_state, save_state, to_storage
from feddistill.clients.teacher_freeze import TeacherFreeze
from feddistill.compression import (
    CompressionSpec,
    compress_update,
    encode_state,
)
from feddistill.compression.downlink import DownlinkPayload, receive_student
from feddistill.compression.masks import (
    attach_masks,
    decode_mask,
    detach_masks,
    maskable_keys,
    pack_unmasked,
    unpack_unmasked,
)
from feddistill.compression.pruning import resize_to_state
from feddistill.compression.teacher_upload import TeacherUpload
from feddistill.config import RunConfig
from feddistill.data import ClientData, FederatedData
from feddistill.distill import SharedFeatureSpace, domain_affinity
from feddistill.distill.coverage import COVERAGE_MODES
from feddistill.distill.kd3a import kept_samples
from feddistill.distill.subset import proxy_subset, subset_rows
from feddistill.learn import (
    KDSpec,
    KDTarget,
    SGDSpec,
    evaluate,
    predict_logits,
    train_supervised,
)
from feddistill.models import buffer_names, build_model
from feddistill.protocol import MASK_VERSION as P_MASK_VERSION
from feddistill.protocol import class_count_metrics, effective_config, plan_for
from feddistill.timing import timed

logger = logging.getLogger(__name__)


@dataclass
class ClientReply:
    """What a client sends back: payloads plus metrics (all JSON-able numbers)."""

    update: bytes
    logits: bytes
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    buffers: bytes = b""  # dense fp32 / integer buffer values (BatchNorm statistics)


def state_delta(local: dict[str, Tensor], global_: dict[str, Tensor]) -> dict[str, Tensor]:
    """The update ``local - global`` for floating tensors; integer buffers as local values.

    Integer and bool buffers (BatchNorm's ``num_batches_tracked``) have no meaningful
    difference: they travel as the client's value and are averaged server-side.
    """
    out: dict[str, Tensor] = {}
    for key, value in local.items():
        value = value.detach().cpu()
        out[key] = value - global_[key].to(value.dtype) if value.is_floating_point() else value
    return out


def _round_seed(seed: int, partition_id: int, server_round: int, salt: int) -> int:
    return (seed * 1_000_003 + partition_id * 10_007 + server_round * 101 + salt) % (2**31)


def encode_student(
    student: torch.nn.Module,
    global_state: dict[str, Tensor],
    spec: CompressionSpec,
    residual: dict[str, Tensor] | None,
    generator: torch.Generator | None = None,
    masks: dict[str, Tensor] | None = None,
) -> tuple[bytes, bytes, dict[str, Tensor]]:
    """The student's upload: compressed parameter update and dense buffer values.

    Trainable parameters travel as ``local - global``, top-k sparsified and quantized
    with error feedback (``spec``). Buffers (BatchNorm ``running_mean`` /
    ``running_var`` / ``num_batches_tracked``, any registered buffer) are state, not
    updates: they travel as their values, fp32 or integer, exactly, with no residual,
    and the server averages them by num-examples.

    Args:
        student: the locally trained student.
        global_state: the global state_dict this round started from.
        spec: compression of the parameter update.
        residual: error-feedback residual of the parameters from the client's last
            round (None for none).
        generator: random source for stochastic rounding.
        masks: the server's keep-masks (key -> bool tensor); a masked tensor travels
            as its kept entries only (1-D, row-major; top-k runs within them) and
            the residual of masked-out entries is dropped. None: no mask.

    Returns:
        (update payload, buffers payload (``b""`` if the model has none), new residual
        (dense shapes, 0 at masked-out entries)).

    Raises:
        ValueError: if a tensor holds NaN or Inf (named).
    """
    buffer_keys = buffer_names(student)
    local_state = student.state_dict()
    params = {k: v for k, v in local_state.items() if k not in buffer_keys}
    buffers = {k: v.detach().cpu() for k, v in local_state.items() if k in buffer_keys}
    delta = state_delta(params, global_state)
    if masks:
        delta = pack_unmasked(delta, masks)
        residual = pack_unmasked(residual, masks) if residual else residual
    update, new_residual = compress_update(delta, spec, residual, generator=generator)
    if masks:
        new_residual = unpack_unmasked(new_residual, masks)
    return update, encode_state(buffers) if buffers else b"", new_residual


def client_masks(
    student: torch.nn.Module, state: dict, mask_blob: bytes | None, mask_version: int
) -> dict[str, Tensor]:
    """The global mask of version ``mask_version``: from the message, else from state.

    Raises:
        ValueError: if the bitmap does not fit the student or has another version, or
            the client holds no mask of ``mask_version`` and none was sent.
    """
    if mask_version <= 0:
        return {}
    if mask_blob:
        shapes = {k: tuple(student.state_dict()[k].shape) for k in maskable_keys(student)}
        masks, version = decode_mask(mask_blob, shapes)
        if version != mask_version:
            raise ValueError(f"mask bitmap has version {version}, the round uses {mask_version}")
        return masks
    if int(state.get("mask_version", 0)) != mask_version:
        raise ValueError(
            f"the round uses mask version {mask_version}, this client holds "
            f"{int(state.get('mask_version', 0))} and no bitmap was sent"
        )
    return dict(state["mask"])


@lru_cache(maxsize=4)
def _feature_space(proxy_x: Tensor, seed: int) -> SharedFeatureSpace:
    # Cached per process by the proxy tensor's identity (data is cached the same way).
    return SharedFeatureSpace(proxy_x, seed=seed)


def run_client_round(
    cfg: RunConfig,
    data: ClientData | FederatedData,
    partition_id: int,
    global_state: dict[str, Tensor],
    consensus: Tensor | None,
    server_round: int,
    state_dir: str | Path,
    device: torch.device,
    downlink: DownlinkPayload | None = None,
    mask_blob: bytes | None = None,
    mask_version: int = 0,
    logits_held: bool = False,
) -> ClientReply:
    """Teacher round, proxy logits, student round and compressed upload of one client.

    Args:
        cfg: the run's config (its strategy's overrides are applied here,
            :func:`feddistill.protocol.effective_config`).
        data: the federation's data; this client reads only its own partition, the
            (unlabeled) proxy inputs and nothing else.
        partition_id: this client's partition, in [0, num_partitions).
        global_state: global student state_dict (float32 tensors).
        consensus: soft labels (B, K) on the proxy set from the last round, or None.
        server_round: the round, from 1.
        state_dir: where per-client state lives.
        device: where to train.
        downlink: the compressed student (delta against this client's replica); when
            given, `global_state` is ignored and rebuilt from it.
        mask_blob: the server's keep-mask bitmap when this client lacks it, else None.
        mask_version: round the global mask last changed (0: no mask).
        logits_held: the server holds this client's last teacher logits (a frozen
            teacher then sends none, :mod:`feddistill.clients.teacher_freeze`).

    Returns:
        The :class:`ClientReply` with the encoded update and logits.

    Raises:
        ValueError: if the partition id is out of range or the partition is empty.
    """
    if not 0 <= partition_id < len(data.partitions):
        raise ValueError(f"partition-id={partition_id} is out of range [0, {len(data.partitions)})")
    if partition_id in cfg.failing_partitions():
        raise RuntimeError(f"partition {partition_id}: failure injected by fail-partitions")
    cfg = effective_config(cfg)  # the strategy's settings; read only this from here on
    plan = plan_for(cfg)  # what travels
    kd_spec = KDSpec(cfg.alpha, cfg.temperature)
    attacker = partition_id in cfg.attacking_partitions()  # fault injection (attack)
    attack_gen = torch.Generator().manual_seed(_round_seed(cfg.seed, partition_id, server_round, 5))
    data = ClientData.of(data)
    splits = data.splits
    idx = torch.as_tensor(data.partitions[partition_id], dtype=torch.long)
    x, y = splits.train_x[idx], splits.train_y[idx]
    with timed("client_state_io"):
        state = load_state(state_dir, partition_id, server_round)
    new_state: dict = {}
    if downlink is not None:
        # the server's initial student: same name, shapes and seed
        template = build_model(
            cfg.student_model, splits.in_shape, splits.num_classes, seed=cfg.seed
        )
        global_state, new_state["replica"] = receive_student(
            downlink,
            state.get("replica"),
            int(state.get("replica_round", 0)),
            template.state_dict(),
            buffer_names(template),
            initial=template.state_dict(),
        )
        new_state["replica_round"] = server_round
    metrics: dict[str, float] = {}
    t0 = time.perf_counter()

    logits_payload = b""
    # this round's proxy rows (logits) and last round's (the consensus being learned)
    num_proxy = len(splits.proxy_x)
    rows_now = proxy_subset(num_proxy, cfg.logits_subset, cfg.seed, server_round)
    proxy_now = subset_rows(splits.proxy_x, rows_now)
    proxy_prev = subset_rows(
        splits.proxy_x,
        proxy_subset(num_proxy, cfg.logits_subset, cfg.seed, max(1, server_round - 1)),
    )
    if plan.uses_teachers:
        freeze = TeacherFreeze(cfg, plan, partition_id, state, server_round)
        if freeze.frozen:  # teacher-rounds or plateau: no training, no new logits
            logits_payload = freeze.frozen_round(new_state, metrics, logits_held)
        else:
            teacher = build_model(
                cfg.teacher_model_for(partition_id),
                splits.in_shape,
                splits.num_classes,
                seed=_round_seed(cfg.seed, partition_id, 0, 4),
            )
            if "teacher" in state:
                teacher.load_state_dict(state["teacher"])
            teacher_kd = None  # logits-only: the client's own model also learns the consensus
            if not plan.uploads_student and consensus is not None:
                teacher_kd = KDTarget(proxy_prev, consensus, kd_spec)
            teacher_sgd = SGDSpec(
                cfg.teacher_learning_rate,
                cfg.momentum,
                cfg.batch_size,
                epochs=cfg.teacher_epochs,
                steps=cfg.teacher_local_steps,
                seed=_round_seed(cfg.seed, partition_id, server_round, 1),
            )
            with timed("teacher_training"):
                x_teacher, y_teacher = freeze.training_rows(x, y)
                stats = train_supervised(
                    teacher, x_teacher, y_teacher, teacher_sgd, device, kd=teacher_kd
                )
            # stored in client-state-dtype (fp16 halves client-state/, issue 13)
            new_state["teacher"] = to_storage(teacher.state_dict(), cfg.client_state_dtype)
            # a teacher that may freeze caches its logits on the *whole* proxy set: its
            # frozen rounds must serve every later round's rows (logits-subset < 1)
            whole = plan.freezes_teachers and len(rows_now) < num_proxy
            with timed("logits_affinity"):
                space = (
                    SharedFeatureSpace.from_pca(*data.feature_space)  # the server's fit
                    if data.feature_space is not None
                    else _feature_space(splits.proxy_x, cfg.seed)
                )
                logits_all = predict_logits(teacher, splits.proxy_x if whole else proxy_now, device)
                features = space.transform(x)
                uploads = [
                    TeacherUpload.from_teacher(  # this round's rows (b, K), (b,)
                        logits_all[rows_now] if whole else logits_all,
                        domain_affinity(features, space.transform(proxy_now)),
                        cfg.temperature,
                    )
                ]
                if whole:  # (B, K), (B,)
                    affinity_all = domain_affinity(features, space.transform(splits.proxy_x))
                    uploads.append(
                        TeacherUpload.from_teacher(logits_all, affinity_all, cfg.temperature)
                    )
            if attacker:
                uploads = [
                    TeacherUpload(
                        *attack_logits(
                            u.logits, u.log_affinity, cfg.attack, cfg.temperature, attack_gen
                        )
                    )
                    for u in uploads
                ]
            with timed("encode"):
                payloads = [
                    u.encode(cfg.logits_bit_width, cfg.logits_top_m, cfg.temperature)
                    for u in uploads
                ]
            logits_payload, whole_payload = payloads[0], payloads[-1]
            # the running accuracy of its last epoch: a separate pass over x cost ~18% of
            # the default job's client compute (issue 13)
            metrics.update(teacher_loss=stats["loss"], teacher_train_accuracy=stats["accuracy"])
            if not plan.uploads_student:
                # measurement only: this client's model on the global test set (no training)
                with timed("evaluation"):
                    test = evaluate(teacher, splits.test_x, splits.test_y, device)
                metrics["client_test_accuracy"] = test["accuracy"]
            freeze.trained_round(teacher, x, y, device, whole_payload, new_state, metrics)
        if plan.consensus in COVERAGE_MODES:  # the coverage consensus weighs teachers by class
            metrics.update(class_count_metrics(y.tolist(), splits.num_classes))
        if not plan.uploads_student:
            save_state(state_dir, partition_id, server_round, new_state)
            metrics.update(
                update_bytes=0.0,
                logits_bytes=float(len(logits_payload)),
                client_seconds=time.perf_counter() - t0,
            )
            return ClientReply(b"", logits_payload, int(x.shape[0]), metrics)

    student = build_model(cfg.student_model, splits.in_shape, splits.num_classes)
    resize_to_state(student, global_state)  # the server may have pruned channels
    student.load_state_dict(global_state)
    masks = client_masks(student, state, mask_blob, mask_version)
    if masks:
        new_state.update(mask=masks, mask_version=mask_version)
        attach_masks(student, masks)  # masked weights get no gradient and stay 0
    t_student = time.perf_counter()
    kd = None
    if plan.uses_kd and consensus is not None:
        keep = kept_samples(consensus)  # (B,): KD3A modes drop unconfident samples (zero rows)
        if bool(keep.any()):
            kd = KDTarget(proxy_prev[keep], consensus[keep], kd_spec)
    student_sgd = SGDSpec(
        cfg.learning_rate,
        cfg.momentum,
        cfg.batch_size,
        epochs=cfg.local_epochs,
        steps=cfg.local_steps,
        seed=_round_seed(cfg.seed, partition_id, server_round, 2),
    )
    with timed("student_training"):  # the KD term's share is also timed as "kd"
        stats = train_supervised(student, x, y, student_sgd, device, kd=kd)
    student_seconds = time.perf_counter() - t_student
    if masks:
        detach_masks(student, masks)
    student_acc = stats["accuracy"]  # running, over its last local epoch
    spec = CompressionSpec(
        density=cfg.update_density,
        bit_width=cfg.update_bit_width,
        error_feedback=cfg.error_feedback,
    )
    residual = state.get("residual") if cfg.error_feedback else None
    if residual:  # after channel pruning the old residual no longer fits: dropped
        residual = {
            k: v
            for k, v in residual.items()
            if k in global_state and v.shape == global_state[k].shape
        }
    generator = torch.Generator().manual_seed(_round_seed(cfg.seed, partition_id, server_round, 3))
    with timed("encode"):
        update_payload, buffers_payload, new_residual = encode_student(
            student, global_state, spec, residual, generator, masks
        )
    if cfg.error_feedback:
        new_state["residual"] = new_residual
    if attacker:
        update_payload = attack_update(update_payload, cfg.attack, attack_gen)
    with timed("client_state_io"):
        save_state(state_dir, partition_id, server_round, new_state)

    metrics.update(
        student_loss=stats["loss"],
        student_ce=stats["ce"],
        student_kd=stats["kd"],
        student_train_accuracy=student_acc,
        update_bytes=float(len(update_payload) + len(buffers_payload)),
        logits_bytes=float(len(logits_payload)),
        client_seconds=time.perf_counter() - t0,
        student_seconds=student_seconds,
        **{P_MASK_VERSION: float(mask_version)},
    )
    return ClientReply(
        update_payload, logits_payload, int(x.shape[0]), metrics, buffers=buffers_payload
    )
