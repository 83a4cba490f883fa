"""``feddistill plan``: choose client resources for a run on a cluster.

Example::

    feddistill plan --ray-address 10.0.0.1:6379 --set num-partitions=16
    feddistill plan --cpus 64 --gpus 2 --gpu-memory-gb 80 --num-gpus 0.05 --json

Reads the run config (``--config`` / ``--set`` as ``feddistill run``), estimates one
client's training memory (its teacher and the student, at ``batch-size``), asks the
cluster (``--ray-address``, else ``RAY_ADDRESS``, else this machine) for its CPUs,
GPUs and GPU memory unless given, and prints the ``client-resources-num-gpus`` to use,
the expected concurrency and any warning (a GPU over-packed by ``--num-gpus``). With
``--json`` stdout holds one JSON object. Exit status 0, or 2 on a bad setting.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from typing import Any

from feddistill.config import RunConfig
from feddistill.config_load import load_config

MAX_GPU_MEMORY_GB = 10_000.0  # a sanity bound: no single GPU has 10 TB

# One sample's shape (C, H, W) and the classes of each dataset, without loading it.
DATASET_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "mnist5k": ((1, 28, 28), 10),
    "digits": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion-mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
}


def add_plan_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``plan`` sub-command to an ``argparse`` sub-parsers object.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        The new sub-parser; its ``func`` default is :func:`run_plan`.
    """
    parser = subparsers.add_parser(
        "plan",
        help="choose client CPU/GPU resources for a cluster",
        description=__doc__.split("Example::")[0].strip(),
    )
    parser.add_argument("--config", help="TOML file with kebab-case keys")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key")
    parser.add_argument("--ray-address", help="ask this Ray cluster (else RAY_ADDRESS / here)")
    parser.add_argument("--cpus", type=int, help="cluster CPUs (skip asking the cluster)")
    parser.add_argument("--gpus", type=int, help="cluster GPUs (skip asking the cluster)")
    parser.add_argument("--gpu-memory-gb", type=float, help="memory of one GPU, in GB (1e9 B)")
    parser.add_argument(
        "--num-gpus", type=float, help="check this client-resources-num-gpus instead of choosing"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run_plan)
    return parser


def dataset_shape(cfg: RunConfig) -> tuple[tuple[int, int, int], int]:
    """(one sample's shape, number of classes) of the config's dataset.

    Raises:
        ValueError: if the dataset has no known input shape.
    """
    if cfg.dataset not in DATASET_SHAPES:
        raise ValueError(f"dataset must be one of {sorted(DATASET_SHAPES)}, got {cfg.dataset!r}")
    return DATASET_SHAPES[cfg.dataset]


def client_memory_bytes(cfg: RunConfig) -> int:
    """Training memory of the hungriest client: its teacher plus the student, bytes.

    Both models live in the client at once; one CUDA context is counted, not two.

    Raises:
        ValueError: if the dataset has no known input shape.
    """
    from feddistill.cluster.planner import CUDA_CONTEXT_BYTES, training_memory_bytes
    from feddistill.models.registry import build_model

    in_shape, num_classes = dataset_shape(cfg)
    student = build_model(cfg.student_model, in_shape, num_classes, seed=0)
    student_bytes = training_memory_bytes(student, in_shape, cfg.batch_size)
    teacher_bytes = max(
        training_memory_bytes(
            build_model(name, in_shape, num_classes, seed=0), in_shape, cfg.batch_size
        )
        for name in set(cfg.teacher_model_list())
    )
    return teacher_bytes + student_bytes - CUDA_CONTEXT_BYTES


def server_memory_bytes(cfg: RunConfig) -> int:
    """GPU memory the server's work holds on a GPU: training the student (FedDF
    distillation) plus one CUDA context; 0 with ``device=cpu``.

    With ``device=auto`` the ServerApp uses a GPU it sees (a single-machine simulation
    shares the clients' GPU), and a ServerApp without one sends its distillation to a
    GPU node as a Ray task; either way a GPU holds this beside the clients.

    Raises:
        ValueError: if the dataset has no known input shape.
    """
    from feddistill.cluster.planner import training_memory_bytes
    from feddistill.models.registry import build_model

    if cfg.device == "cpu":
        return 0
    in_shape, num_classes = dataset_shape(cfg)
    student = build_model(cfg.student_model, in_shape, num_classes, seed=0)
    return training_memory_bytes(student, in_shape, cfg.batch_size)


def run_plan(args: argparse.Namespace) -> int:
    """Run ``feddistill plan``; print the plan (a table, or JSON with ``--json``).

    Returns:
        0 (errors surface as ValueError / RuntimeError for the CLI to report).

    Raises:
        ValueError: if ``--gpu-memory-gb`` is not positive, or a setting is out of range.
    """
    # torch comes with the planner: imported when the command runs (issue 13)
    from feddistill.cluster.planner import plan_resources
    from feddistill.cluster.probe import cluster_resources

    cfg = load_config(args.config, list(args.set or []))
    if args.gpu_memory_gb is not None and not (
        math.isfinite(args.gpu_memory_gb) and 0 < args.gpu_memory_gb <= MAX_GPU_MEMORY_GB
    ):
        raise ValueError(
            f"--gpu-memory-gb must be a number in (0, {MAX_GPU_MEMORY_GB}] (GB of one GPU), "
            f"got {args.gpu_memory_gb}"
        )
    if args.cpus is None or args.gpus is None or (args.gpus and args.gpu_memory_gb is None):
        found = cluster_resources(args.ray_address)
    else:
        found = {"CPU": args.cpus, "GPU": args.gpus, "gpu_memory_bytes": 0, "nodes": None}
    cpus = args.cpus if args.cpus is not None else int(found["CPU"])
    gpus = args.gpus if args.gpus is not None else int(found["GPU"])
    gpu_memory = (
        int(args.gpu_memory_gb * 1e9) if args.gpu_memory_gb else int(found["gpu_memory_bytes"])
    )
    if gpus > 0 and gpu_memory <= 0:
        raise ValueError(
            f"--gpus {gpus} needs --gpu-memory-gb: no GPU memory size was found "
            f"({'the cluster' if args.ray_address else 'this machine'} reports none)"
        )
    per_client = client_memory_bytes(cfg)
    server = server_memory_bytes(cfg)
    plan = plan_resources(
        cluster_cpus=cpus,
        cluster_gpus=0 if cfg.device == "cpu" else gpus,  # device=cpu: no client uses a GPU
        gpu_memory_bytes=gpu_memory,
        per_client_bytes=per_client,
        num_clients=cfg.num_partitions,
        requested_num_gpus=args.num_gpus,
        client_num_cpus=cfg.client_num_cpus,
        server_bytes=server,
    )
    report = {
        "cluster": {"cpus": cpus, "gpus": gpus, "gpu_memory_bytes": gpu_memory},
        "per_client_bytes": per_client,
        "server_bytes": server,
        "num_clients": cfg.num_partitions,
        **asdict(plan),
        "federation_config": plan.federation_config(),
    }
    if args.json:
        print(json.dumps(report))
        return 0
    rows = [
        ("cluster", f"{cpus} CPUs, {gpus} GPUs x {gpu_memory / 1e9:.3g} GB"),
        ("one client's training memory", f"{per_client / 1e9:.3g} GB"),
        ("server's GPU memory (kept free)", f"{server / 1e9:.3g} GB"),
        ("client-num-cpus", str(plan.client_num_cpus)),
        ("client-num-gpus", f"{plan.client_num_gpus:.4g}"),
        ("clients per GPU", str(plan.clients_per_gpu)),
        ("concurrent clients", f"{plan.concurrency} of {cfg.num_partitions}"),
    ]
    print("| setting | value |\n|---|---|")
    for key, value in rows:
        print(f"| {key} | {value} |")
    for warning in plan.warnings:
        print(f"warning: {warning}")
    print(f"use: --set client-num-gpus={plan.client_num_gpus:.4g}")
    return 0
