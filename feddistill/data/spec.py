"""The data settings of one run: what :func:`feddistill.data.prepare_federated_data` reads.

A small frozen (hashable) dataclass, so the data package needs no run config; the run
config builds one with :meth:`feddistill.config.RunConfig.data_spec`. Values are
range-checked where they are used (:func:`split_indices`, :func:`partition_train`,
:func:`load_dataset`) and, for a run, already by the run config.
"""

from __future__ import annotations

import dataclasses

from feddistill.data.names import DOMAIN_DATASET_NAMES, DOMAIN_PARTITIONER_NAMES


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Dataset, splits, partitions and domains of one run (defaults: the `make run` job).

    Attributes:
        dataset: a name of ``DATASET_NAMES`` or ``DOMAIN_DATASET_NAMES``.
        data_root: folder of the torchvision datasets.
        download: allow torchvision to download missing files.
        proxy_fraction: share of the dataset used as the unlabeled proxy set, in (0, 1).
        test_fraction: share held out for server-side evaluation, in (0, 1).
        partitioner: a name of ``PARTITIONER_NAMES`` or ``DOMAIN_PARTITIONER_NAMES``.
        num_partitions: clients (one partition each), >= 1.
        dirichlet_alpha: Dirichlet concentration of ``dirichlet`` / ``domain-dirichlet``.
        min_partition_size: smallest allowed partition, >= 1.
        seed: seed of splits, partitions and domains, >= 0.
        target_domains: domain ids held out of training, sorted, no duplicates.
        proxy_set: with target domains: ``target`` or ``public`` (``PROXY_SETS``).
        num_domains: KMeans domains of a plain dataset with target domains; 0 = auto.
    """

    dataset: str = "mnist5k"
    data_root: str = "data"
    download: bool = False
    proxy_fraction: float = 0.2
    test_fraction: float = 0.2
    partitioner: str = "kmeans"
    num_partitions: int = 4
    dirichlet_alpha: float = 0.5
    min_partition_size: int = 10
    seed: int = 0
    target_domains: tuple[int, ...] = ()
    proxy_set: str = "target"
    num_domains: int = 0


def uses_domain_path(spec: DataSpec) -> bool:
    """Named domains, target-domains or a domain partitioner: see :mod:`.target_domains`."""
    return (
        spec.dataset in DOMAIN_DATASET_NAMES
        or bool(spec.target_domains)
        or spec.partitioner in DOMAIN_PARTITIONER_NAMES
    )
