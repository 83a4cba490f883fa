"""Server-side work (FedDF distillation on the proxy set) on a GPU node of the cluster.

The ServerApp process often runs where there is no GPU (the head node, a laptop
driving a cluster). :func:`run_on_gpu_node` then ships the work to a GPU node as a Ray
task and returns its result; everywhere else it just calls the function here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import torch

logger = logging.getLogger(__name__)
T = TypeVar("T")


def should_run_remote(num_gpus: float) -> bool:
    """Whether work asking for `num_gpus` should leave this process.

    True when Ray is initialized in this process, this process sees no CUDA device,
    the cluster has a GPU (or `num_gpus` is 0, which is how tests exercise the remote
    path without one), and at least `num_gpus` GPUs are free right now. Flower's
    simulation keeps its client actors (and their GPU fractions) for the whole run, so
    a task asking for more than what the actors left free would wait for ever; then
    the work stays here and a warning says why.
    """
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        return False
    if not ray.is_initialized() or torch.cuda.is_available():
        return False
    total = float(ray.cluster_resources().get("GPU", 0.0))
    if num_gpus > 0 and total == 0:
        return False
    free = float(ray.available_resources().get("GPU", 0.0))
    if free < num_gpus:
        logger.warning(
            "server-side work stays on this process: it asks for num_gpus=%s but only %s "
            "of the cluster's %s GPUs are free (client actors hold the rest); lower "
            "client-num-gpus so that a fraction stays free",
            num_gpus,
            free,
            total,
        )
        return False
    return True


def run_on_gpu_node(
    fn: Callable[..., T],
    *args: Any,
    num_gpus: float = 1.0,
    num_cpus: float = 1.0,
    timeout_s: float | None = None,
    **kwargs: Any,
) -> T:
    """Call ``fn(*args, **kwargs)`` on a GPU node when this process has no GPU.

    When :func:`should_run_remote` holds, `fn` runs as ``ray.remote(num_gpus=...,
    num_cpus=...)`` task (arguments and result travel through Ray's object store, so
    they must be picklable; tensors come back on the CPU if `fn` moves them there)
    and the call blocks for its result. Otherwise `fn` is called here. Inside the task
    ``torch.cuda.is_available()`` is True on a GPU node, so `fn` should pick its
    device itself.

    Args:
        fn: a picklable function (module-level, not a lambda over local state).
        *args: positional arguments for `fn`.
        num_gpus: GPUs the task reserves, in [0, 1] for a fraction or an integer > 1.
        num_cpus: CPUs the task reserves (>= 0).
        timeout_s: how long to wait for the remote result (> 0), None for ever.
        deterministic: the remote task picks deterministic CUDA kernels
            (:func:`feddistill.learn.specs.deterministic_cuda`); the local path uses
            whatever `device` was resolved with.
        **kwargs: keyword arguments for `fn`.

    Returns:
        What `fn` returns.

    Raises:
        ValueError: if `num_gpus` or `num_cpus` < 0 or `timeout_s` <= 0.
        ray.exceptions.GetTimeoutError: if the remote result is not ready in time.
        Exception: whatever `fn` raises (a remote error is re-raised by Ray as
            ``ray.exceptions.RayTaskError`` wrapping the original type).
    """
    if num_gpus < 0:
        raise ValueError(f"num_gpus must be >= 0, got {num_gpus}")
    if num_cpus < 0:
        raise ValueError(f"num_cpus must be >= 0, got {num_cpus}")
    if timeout_s is not None and timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0 or None, got {timeout_s}")
    if not should_run_remote(num_gpus):
        return fn(*args, **kwargs)
    import ray

    logger.info("running %s as a Ray task (num_gpus=%s)", getattr(fn, "__name__", fn), num_gpus)
    task = ray.remote(num_gpus=num_gpus, num_cpus=num_cpus, max_retries=0)(fn)
    return ray.get(task.remote(*args, **kwargs), timeout=timeout_s)


def _distill_task(
    model: torch.nn.Module,
    proxy_x: torch.Tensor,
    soft_labels: torch.Tensor,
    kwargs: dict[str, Any],
    deterministic: bool = True,
) -> tuple[dict[str, torch.Tensor], float]:
    """Ray task body: distill a copy of `model` where it runs; CPU state dict + loss."""
    from feddistill.learn import distill_on_proxy
    from feddistill.learn.specs import resolve_device

    device = resolve_device("auto", deterministic)
    loss = distill_on_proxy(model, proxy_x, soft_labels, device=device, **kwargs)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return state, loss


def distill_on_gpu_node(
    model: torch.nn.Module,
    proxy_x: torch.Tensor,
    soft_labels: torch.Tensor,
    num_gpus: float = 1.0,
    timeout_s: float | None = None,
    deterministic: bool = True,
    **kwargs: Any,
) -> float:
    """FedDF server distillation of `model`, on a GPU node when this process has none.

    Same contract as :func:`feddistill.learn.distill_on_proxy` (the model is
    updated in place and left in eval mode, the mean KD loss of the last epoch is
    returned), but when :func:`should_run_remote` holds the training runs as a Ray
    task on a node with `num_gpus` GPUs and the trained weights are copied back into
    `model` (on its current device). Only the model, the proxy inputs and the soft
    labels travel (shapes (B, C, H, W) and (B, K)).

    Args:
        model: the global student, updated in place.
        proxy_x: proxy inputs, shape (B, C, H, W).
        soft_labels: consensus targets, shape (B, K).
        num_gpus: GPUs the remote task reserves (>= 0).
        timeout_s: how long to wait for the remote result (> 0), None for ever.
        deterministic: the remote task picks deterministic CUDA kernels
            (:func:`feddistill.learn.specs.deterministic_cuda`); the local path uses
            whatever `device` was resolved with.
        **kwargs: ``temperature`` and ``sgd`` (:class:`feddistill.learn.SGDSpec`) for
            :func:`distill_on_proxy`; with the local path also ``device``.

    Returns:
        The mean KD loss of the last epoch.

    Raises:
        ValueError: as :func:`run_on_gpu_node` and :func:`distill_on_proxy`.
    """
    if not should_run_remote(num_gpus):
        from feddistill.learn import distill_on_proxy

        return distill_on_proxy(model, proxy_x, soft_labels, **kwargs)
    kwargs.pop("device", None)  # the task picks its own device
    home = next(model.parameters()).device
    state, loss = run_on_gpu_node(
        _distill_task,
        model.cpu(),
        proxy_x.cpu(),
        soft_labels.cpu(),
        kwargs,
        deterministic,
        num_gpus=num_gpus,
        timeout_s=timeout_s,
    )
    model.load_state_dict(state)
    model.to(home).eval()
    return loss
