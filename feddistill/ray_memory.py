"""Settings that keep a private, single-machine Ray instance small in memory.

Flower's simulation runtime calls ``ray.init`` itself (with ``include_dashboard=False``)
and passes only ``num_cpus``, ``num_gpus``, ``logging_level`` and ``log_to_driver``
from the federation config; everything else about Ray is set through the environment
the SuperLink (and so ``flwr-simulation`` and Ray) inherits. Measured on the 100-client
MNIST-5k job (``feddistill bench memory``, README "Memory"), Ray's own processes and idle
workers are a few hundred MiB of the tree; these settings remove what a simulation
does not use:

- ``RAY_enable_worker_prestart=0`` / ``RAY_prestart_worker_first_driver=0``: Ray
  starts one idle Python worker per CPU in advance for tasks; Flower runs only actors,
  each gets its own worker, so the idle ones are only memory;
- ``RAY_num_workers_soft_limit``: idle workers above this count are killed;
- ``RAY_enable_metrics_collection=0``: no metrics agent work nor its buffers;
- ``RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION``: the plasma store's share of RAM
  (default 0.3); Flower's messages (a student of tens of kB, logits) fit many times
  over in a small one;
- ``RAY_USAGE_STATS_ENABLED=0``: no usage-stats reporting;
- ``MALLOC_ARENA_MAX=2`` (glibc): fewer per-thread heaps (ignored by other C
  libraries).

Not set: glibc's ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``. Fixed at 64 and
128 KiB they gave freed blocks back to the OS (-70 MiB per client process after a teacher
round), but every tensor above 64 KiB was then a fresh ``mmap`` with its pages faulted
in again: 60 SGD steps of the ``cnn`` teacher took 2.1 s instead of 1.2 s (one torch
thread, either variable alone), and the actors of the default job spent ~1.8x the
in-process engine's seconds on the same teacher training (issue 13, session 25).

Attaching to an existing Ray cluster (``--ray-address``) leaves its settings alone.
"""

from __future__ import annotations

import os

from feddistill.config import RunConfig

# share of RAM for the object store; Ray's own floor is 75 MB
OBJECT_STORE_PROPORTION = 0.02


def lean_ray_env(num_actors: int) -> dict[str, str]:
    """Environment variables for a small private Ray instance.

    Args:
        num_actors: client actors the simulation runs at once (CPUs / client-num-cpus),
            >= 1; idle workers above this count are killed.

    Returns:
        Variable name -> value, to merge into the SuperLink's environment.

    Raises:
        ValueError: if num_actors < 1.
    """
    if num_actors < 1:
        raise ValueError(f"num_actors must be >= 1, got {num_actors}")
    return {
        "RAY_enable_worker_prestart": "0",
        "RAY_prestart_worker_first_driver": "0",
        "RAY_num_workers_soft_limit": str(num_actors),
        "RAY_enable_metrics_collection": "0",
        "RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION": str(OBJECT_STORE_PROPORTION),
        "RAY_USAGE_STATS_ENABLED": "0",
        "MALLOC_ARENA_MAX": "2",
    }


def num_client_actors(cfg: RunConfig, cpus: int | None = None) -> int:
    """Client actors Flower's simulation starts on this machine: CPUs // client-num-cpus.

    Args:
        cfg: the run config (``client_num_cpus`` >= 1).
        cpus: CPUs of the machine; default ``os.cpu_count()``.

    Returns:
        The actor count, at least 1.
    """
    total = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, total // cfg.client_num_cpus)
