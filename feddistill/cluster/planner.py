"""Resource planning: how much of a GPU each client gets, and how many run at once.

Flower's simulation gives each client ``client-resources-num-cpus`` CPUs and a
``client-resources-num-gpus`` *fraction* of a GPU. Ray uses the fraction for
scheduling only: it does not cap GPU memory, so 8 clients at 0.125 GPU on one device
each allocate as much memory as they like. The planner therefore sizes the fraction
from the memory one client's training needs (measured, or estimated from the
parameters and a forward pass) and warns when a requested fraction would over-pack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

# Training memory = weights + gradients + optimizer state + activations (+ workspace).
OPTIMIZER_STATES = {"sgd": 0, "sgd-momentum": 1, "adam": 2}
WORKSPACE_FACTOR = 1.2  # CUDA context, allocator slack and cuDNN workspace
# GPU memory each process that touches a GPU holds beyond its tensors: the CUDA context,
# the kernels of torch's CUDA libraries, cuBLAS / cuDNN workspaces and the caching
# allocator's slack. Measured (`feddistill bench gpu`, H200, torch 2.11 + CUDA 13): 14
# processes of the default job (13 client actors and the ServerApp) held 12750 MiB
# together, 911 MiB each, of which ~100 MB were the models' training memory. The old
# figure, 500 MiB, let `feddistill plan` pack 13 clients on an "8 GB" GPU that then held
# 13.4 GB.
CUDA_CONTEXT_BYTES = 900 * 1024**2


@dataclass(frozen=True)
class ResourcePlan:
    """Client resources for the Flower simulation and what to expect from them.

    Attributes:
        client_num_cpus: ``client-resources-num-cpus`` (an integer >= 1).
        client_num_gpus: ``client-resources-num-gpus``, a fraction of one GPU in [0, 1].
        concurrency: clients that can train at the same time on the cluster (>= 1).
        clients_per_gpu: clients packed onto one GPU (0 when no GPU is used).
        warnings: human-readable problems (over-packing, too few CPUs ...).
    """

    client_num_cpus: int
    client_num_gpus: float
    concurrency: int
    clients_per_gpu: int = 0
    warnings: list[str] = field(default_factory=list)

    def federation_config(self) -> str:
        """The plan as ``flwr run --federation-config`` resource options."""
        return (
            f"client-resources-num-cpus={self.client_num_cpus} "
            f"client-resources-num-gpus={self.client_num_gpus}"
        )


def training_memory_bytes(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    optimizer: str = "sgd-momentum",
    device: str | torch.device = "cpu",
) -> int:
    """Memory one training step of `model` needs, in bytes.

    On a CUDA device it is measured: the peak of ``torch.cuda.max_memory_allocated``
    over one forward + backward + optimizer step, plus the CUDA context. Elsewhere it
    is estimated as ``(1 + 1 + S) * P + 2 * A``, times the workspace factor 1.2, plus
    the CUDA context, where P is the parameter bytes, S the optimizer states per
    parameter (sgd 0, sgd-momentum 1, adam 2) and A the bytes of every module's output
    for one batch, taken with forward hooks (kept for backward, and their gradients).

    Args:
        model: the network (not modified; a step runs on a copy when measured).
        input_shape: one sample's shape, e.g. (1, 28, 28).
        batch_size: samples per step (>= 1).
        optimizer: one of "sgd", "sgd-momentum", "adam".
        device: where to measure; only "cuda" measures, anything else estimates.

    Returns:
        Bytes, an int > 0.

    Raises:
        ValueError: if `batch_size` < 1 or `optimizer` is unknown.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZER_STATES)}, got {optimizer!r}")
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return _measure_cuda(model, input_shape, batch_size, optimizer, device)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    states = OPTIMIZER_STATES[optimizer]
    activation_bytes = _activation_bytes(model, input_shape, batch_size)
    estimate = ((2 + states) * param_bytes + 2 * activation_bytes) * WORKSPACE_FACTOR
    return int(math.ceil(estimate)) + CUDA_CONTEXT_BYTES


def _activation_bytes(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> int:
    """Bytes of every leaf module's output for one batch (forward hooks, no grad)."""
    total = 0

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal total
        tensors = output if isinstance(output, tuple | list) else (output,)
        for t in tensors:
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((batch_size, *input_shape)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total


def _measure_cuda(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    optimizer: str,
    device: torch.device,
) -> int:  # pragma: no cover - needs a GPU
    import copy

    net = copy.deepcopy(model).to(device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    params = list(net.parameters())
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params)
    else:
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9 if optimizer == "sgd-momentum" else 0)
    x = torch.randn((batch_size, *input_shape), device=device)
    out = net(x)
    out.float().pow(2).mean().backward()
    opt.step()
    torch.cuda.synchronize(device)
    peak = int(torch.cuda.max_memory_allocated(device))
    del net, opt, x, out
    torch.cuda.empty_cache()
    return peak + CUDA_CONTEXT_BYTES


def plan_resources(
    cluster_cpus: int,
    cluster_gpus: int,
    gpu_memory_bytes: int,
    per_client_bytes: int,
    num_clients: int,
    requested_num_gpus: float | None = None,
    client_num_cpus: int = 1,
    server_bytes: int = 0,
) -> ResourcePlan:
    """Choose each client's GPU fraction and report how many clients run at once.

    Without a request, the fraction is ``1 / k`` with ``k = floor((gpu_memory_bytes -
    server_bytes) / per_client_bytes)`` clients per GPU (so k clients fit in one GPU's
    memory beside the server's work), capped at 1. Ray applies one fraction to every
    GPU, so the server's share is kept free on each. Concurrency is the minimum of the clients, the CPU slots
    ``floor(cluster_cpus / client_num_cpus)`` and, with GPUs, the GPU slots
    ``cluster_gpus * floor(1 / fraction)``. Ray rounds nothing: a request whose packed
    clients ``floor(1 / fraction) * per_client_bytes`` exceed a GPU's memory is
    over-packing, and the plan warns (the fraction is kept: it is what you asked for).

    Example: 2 GPUs of 80 GB, 10 GB per client, 64 CPUs, 20 clients -> fraction
    0.125 (8 per GPU) and 16 concurrent; requesting 0.05 packs 20 x 10 GB = 200 GB on an
    80 GB GPU and warns.

    Args:
        cluster_cpus: CPUs in the cluster (>= 1).
        cluster_gpus: GPUs in the cluster (>= 0); 0 plans a CPU-only run.
        gpu_memory_bytes: memory of one GPU in bytes (> 0 when `cluster_gpus` > 0).
        per_client_bytes: one client's training memory (see
            :func:`training_memory_bytes`), > 0.
        num_clients: clients (partitions) in the federation (>= 1).
        requested_num_gpus: a fraction in (0, 1] to check instead of choosing one;
            None chooses.
        client_num_cpus: CPUs per client (>= 1).
        server_bytes: GPU memory the server's own work holds on a GPU (>= 0): the
            ServerApp's process when it sees the GPU (evaluation and FedDF
            distillation of the student), or its distillation task on a GPU node.

    Returns:
        The :class:`ResourcePlan`.

    Raises:
        ValueError: if a count is out of range, a GPU memory or per-client size is not
            positive, or `requested_num_gpus` is outside (0, 1].
    """
    for name, value, low in (
        ("cluster_cpus", cluster_cpus, 1),
        ("cluster_gpus", cluster_gpus, 0),
        ("num_clients", num_clients, 1),
        ("client_num_cpus", client_num_cpus, 1),
        ("per_client_bytes", per_client_bytes, 1),
        ("server_bytes", server_bytes, 0),
    ):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if cluster_gpus > 0 and gpu_memory_bytes <= 0:
        raise ValueError(f"gpu_memory_bytes must be > 0 with GPUs, got {gpu_memory_bytes}")
    if requested_num_gpus is not None and not 0.0 < requested_num_gpus <= 1.0:
        raise ValueError(f"requested_num_gpus must be in (0, 1], got {requested_num_gpus}")
    warnings: list[str] = []
    cpu_slots = cluster_cpus // client_num_cpus
    if cpu_slots < 1:
        warnings.append(
            f"client_num_cpus={client_num_cpus} exceeds the cluster's {cluster_cpus} CPUs: "
            "no client can be scheduled"
        )
    if cluster_gpus == 0:
        if requested_num_gpus:
            warnings.append(
                f"num-gpus={requested_num_gpus} requested but the cluster has no GPU: "
                "no client can be scheduled"
            )
            return ResourcePlan(client_num_cpus, requested_num_gpus, 0, 0, warnings)
        return ResourcePlan(client_num_cpus, 0.0, max(0, min(num_clients, cpu_slots)), 0, warnings)
    free_bytes = gpu_memory_bytes - server_bytes  # what the clients may share on one GPU
    fit_per_gpu = max(0, free_bytes) // per_client_bytes
    beside = f" beside the server's {_gb(server_bytes)}" if server_bytes else ""
    if requested_num_gpus is None:
        if fit_per_gpu < 1:
            warnings.append(
                f"one client needs {_gb(per_client_bytes)} but a GPU has {_gb(gpu_memory_bytes)}"
                f"{beside}: it will run out of GPU memory; use a smaller batch or model"
            )
        fraction = 1.0 / max(1, fit_per_gpu)
    else:
        fraction = float(requested_num_gpus)
    per_gpu = int(math.floor(1.0 / fraction + 1e-9))  # what Ray packs onto one GPU
    if server_bytes >= gpu_memory_bytes:
        warnings.append(
            f"the server's work alone needs {_gb(server_bytes)} but a GPU has "
            f"{_gb(gpu_memory_bytes)}: use a larger GPU, or device=cpu"
        )
    packed = min(per_gpu, num_clients)  # a GPU never holds more clients than there are
    if requested_num_gpus is not None and packed * per_client_bytes > free_bytes:
        warnings.append(
            f"num-gpus={fraction} packs {packed} clients x {_gb(per_client_bytes)} = "
            f"{_gb(packed * per_client_bytes)} onto a {_gb(gpu_memory_bytes)} GPU{beside}: "
            "Ray does not cap GPU memory, expect CUDA out-of-memory; use num-gpus >= "
            f"{1.0 / max(1, fit_per_gpu):.4g}"
        )
    concurrency = max(0, min(num_clients, cpu_slots, cluster_gpus * per_gpu))
    if concurrency < num_clients and cpu_slots < cluster_gpus * per_gpu:
        warnings.append(
            f"CPUs limit concurrency to {cpu_slots} (GPU slots {cluster_gpus * per_gpu}); "
            "add CPUs or lower client-num-cpus"
        )
    return ResourcePlan(client_num_cpus, fraction, concurrency, per_gpu, warnings)


def _gb(num_bytes: float) -> str:
    return f"{num_bytes / 1e9:.3g} GB"
