"""Source and target domains: hold target domains out of training, one domain per client.

The cross-domain setting (unsupervised multi-source domain adaptation, transductive):
clients hold labeled *source* domains; the *target* domains' training samples reach
nobody with their labels: their inputs (unlabeled) become the distillation proxy set
(``proxy-set = target``, the default) or are dropped (``proxy-set = public``: the
public proxy split is kept). The test set keeps every domain; target test samples give
the headline metric (``target_accuracy``).

Used by :func:`feddistill.data.prepare_federated_data` when the dataset has named
domains (:mod:`feddistill.data.domain_datasets`), ``target-domains`` is set, or the
partitioner is ``domain`` / ``domain-dirichlet``. For a plain dataset the domains are
KMeans clusters of the inputs (:func:`fit_domains`, ``num-domains`` of them; 0 means
2, the seed document's source / target split).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from feddistill.data.datasets import load_dataset
from feddistill.data.domain_datasets import DOMAIN_DATASET_NAMES, load_domain_dataset
from feddistill.data.domains import fit_domains
from feddistill.data.federated_data import FederatedData, majority_domains
from feddistill.data.names import DOMAIN_PARTITIONER_NAMES
from feddistill.data.partitioners import _dirichlet, check_partition_request, partition_train
from feddistill.data.spec import DataSpec
from feddistill.data.splits import DataSplits, split_indices

logger = logging.getLogger(__name__)

DEFAULT_KMEANS_DOMAINS = 2  # plain dataset with target-domains and num-domains = 0


def domain_partition(
    train_domains: np.ndarray,
    train_y: np.ndarray,
    num_partitions: int,
    seed: int,
    min_partition_size: int = 1,
    dirichlet_alpha: float | None = None,
) -> tuple[list[np.ndarray], list[int]]:
    """One domain per client: client ``p`` gets a share of source domain ``S[p % len(S)]``.

    ``S`` is the sorted list of domain ids present in `train_domains`. The clients of one
    domain split its samples IID (a seeded shuffle cut into near-equal parts) or, with
    `dirichlet_alpha`, by Dirichlet label proportions inside the domain.

    Args:
        train_domains: domain id of each (source) training sample, shape (N,).
        train_y: labels, shape (N,).
        num_partitions: clients, >= the number of domains present.
        seed: seed of the shuffles / Dirichlet draws.
        min_partition_size: smallest allowed partition, >= 1.
        dirichlet_alpha: Dirichlet concentration > 0 inside each domain; None = IID.

    Returns:
        ``(partitions, partition_domains)``: sorted int64 index arrays into the training
        set (a disjoint cover), and the domain of each partition.

    Raises:
        ValueError: if there are fewer partitions than domains, or a partition would be
            below `min_partition_size`.

    References:
        Multi-source domain adaptation with one source domain per client: KD3A, Feng
        et al., ICML 2021, arXiv:2011.09757.
    """
    check_partition_request(int(train_domains.shape[0]), num_partitions, min_partition_size)
    present = sorted(int(d) for d in np.unique(train_domains))
    if num_partitions < len(present):
        raise ValueError(
            f"num-partitions={num_partitions} is smaller than the {len(present)} source "
            f"domains {present}; partitioner=domain needs at least one client per domain"
        )
    owner = [present[p % len(present)] for p in range(num_partitions)]
    parts: list[np.ndarray] = [np.empty(0, np.int64)] * num_partitions
    for d in present:
        clients = [p for p in range(num_partitions) if owner[p] == d]
        rows = np.flatnonzero(train_domains == d)
        if dirichlet_alpha is not None and len(clients) > 1:
            local = _dirichlet(
                train_y[rows], len(clients), dirichlet_alpha, min_partition_size, seed + d
            )
            shares = [rows[i] for i in local]
        else:
            perm = np.random.default_rng([seed, d]).permutation(rows)
            shares = list(np.array_split(perm, len(clients)))
        for p, share in zip(clients, shares, strict=True):
            if len(share) < min_partition_size:
                raise ValueError(
                    f"domain {d} has {len(rows)} training samples for {len(clients)} clients: "
                    f"partition {p} would get {len(share)} < min-partition-size="
                    f"{min_partition_size}; lower num-partitions or min-partition-size"
                )
            parts[p] = np.sort(share).astype(np.int64)
    return parts, owner


def check_targets(targets: tuple[int, ...], num_domains: int) -> None:
    """Every target id names a domain and at least one source domain is left.

    Raises:
        ValueError: naming the bad ids and the allowed range.
    """
    bad = [t for t in targets if not 0 <= t < num_domains]
    if bad:
        raise ValueError(
            f"target-domains {bad} do not exist; this dataset has domains 0..{num_domains - 1}"
        )
    if len(targets) >= num_domains:
        raise ValueError(
            f"target-domains {list(targets)} hold out all {num_domains} domains; leave at "
            "least one source domain for the clients"
        )


def prepare_domain_data(spec: DataSpec) -> FederatedData:
    """Split by seed, hold the target domains out, partition the source samples.

    Steps: load (named domains, or a plain dataset whose domains are KMeans clusters
    fitted on its train split) -> :func:`split_indices` (the same train / proxy / test
    split as :func:`split_dataset`) -> the train rows of target domains leave the train
    set (their labels are dropped here) -> their inputs become ``proxy_x`` when
    ``proxy-set = target`` and targets exist -> the source rows are partitioned
    (``domain``, ``domain-dirichlet``, ``iid``, ``dirichlet`` or ``kmeans``).

    Args:
        spec: the run's data settings (with ``target_domains``, ``proxy_set``,
            ``num_domains``).

    Returns:
        The run's data; ``splits.train_*`` hold source samples only, ``test_domains``
        are the true domain ids, ``target_domains`` the held-out ids.

    Raises:
        ValueError: unknown target ids, all domains held out, or partitions that
            cannot be formed.
        FileNotFoundError: a torchvision domain missing under ``data-root``.
    """
    targets = spec.target_domains
    train_idx, proxy_idx, test_idx = None, None, None
    if spec.dataset in DOMAIN_DATASET_NAMES:
        dds = load_domain_dataset(spec.dataset, spec.data_root, spec.download)
        x, y, num_classes = dds.x, dds.y, dds.num_classes
        domains, names = dds.domains, dds.domain_names
        train_idx, proxy_idx, test_idx = split_indices(
            len(dds), spec.proxy_fraction, spec.test_fraction, spec.seed
        )
    else:
        ds = load_dataset(spec.dataset, spec.data_root, spec.download)
        x, y, num_classes = ds.x, ds.y, ds.num_classes
        train_idx, proxy_idx, test_idx = split_indices(
            len(ds), spec.proxy_fraction, spec.test_fraction, spec.seed
        )
        k = spec.num_domains or DEFAULT_KMEANS_DOMAINS
        domains = fit_domains(x[torch.from_numpy(train_idx)], k, spec.seed).predict(x)
        names = tuple(f"cluster{d}" for d in range(k))
    check_targets(targets, len(names))
    is_target = np.isin(domains[train_idx], np.asarray(targets, dtype=np.int64))
    source_idx, target_train_idx = train_idx[~is_target], train_idx[is_target]
    use_target_proxy = bool(targets) and spec.proxy_set == "target"
    proxy_rows = target_train_idx if use_target_proxy else proxy_idx
    as_t = torch.from_numpy
    splits = DataSplits(
        train_x=x[as_t(source_idx)],
        train_y=y[as_t(source_idx)],  # source labels only: target labels never leave here
        proxy_x=x[as_t(proxy_rows)],
        test_x=x[as_t(test_idx)],
        test_y=y[as_t(test_idx)],
        num_classes=num_classes,
        name=spec.dataset,
    )
    train_domains = domains[source_idx]
    labels = splits.train_y.numpy()
    if spec.partitioner in DOMAIN_PARTITIONER_NAMES:
        alpha = spec.dirichlet_alpha if spec.partitioner == "domain-dirichlet" else None
        partitions, partition_domains = domain_partition(
            train_domains, labels, spec.num_partitions, spec.seed, spec.min_partition_size, alpha
        )
    else:
        partitions, _ = partition_train(
            splits.train_x,
            labels,
            spec.partitioner,
            spec.num_partitions,
            spec.seed,
            min_partition_size=spec.min_partition_size,
            dirichlet_alpha=spec.dirichlet_alpha,
        )
        partition_domains = majority_domains(train_domains, partitions, len(names))
    logger.info(
        "domains %s: targets %s held out (%d train rows -> %s proxy), %d source rows",
        names,
        list(targets),
        len(target_train_idx),
        "the" if use_target_proxy else "not the",
        len(source_idx),
    )
    return FederatedData(
        splits=splits,
        partitions=partitions,
        test_domains=domains[test_idx].copy(),
        partition_domains=partition_domains,
        num_domains=len(names),
        domain_model=None,
        target_domains=targets,
        domain_names=names,
    )


def target_train_set(spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The target domains' labeled training samples: only for the *target oracle* baseline.

    Nothing in a federated run calls this; the oracle (an upper bound trained on target
    labels) in ``feddistill/benchmarks/domains.py`` does.

    Returns:
        ``(x, y)``: shapes (n, C, H, W) and (n,).

    Raises:
        ValueError: if ``spec`` holds out no target domain, or see
            :func:`prepare_domain_data`.
    """
    targets = spec.target_domains
    if not targets:
        raise ValueError("the target oracle needs target-domains; got none")
    if spec.dataset in DOMAIN_DATASET_NAMES:
        dds = load_domain_dataset(spec.dataset, spec.data_root, spec.download)
        x, y, domains, n_dom = dds.x, dds.y, dds.domains, dds.num_domains
    else:
        ds = load_dataset(spec.dataset, spec.data_root, spec.download)
        x, y = ds.x, ds.y
        n_dom = spec.num_domains or DEFAULT_KMEANS_DOMAINS
        train, _, _ = split_indices(len(ds), spec.proxy_fraction, spec.test_fraction, spec.seed)
        domains = fit_domains(x[torch.from_numpy(train)], n_dom, spec.seed).predict(x)
    check_targets(targets, n_dom)
    train_idx, _, _ = split_indices(len(y), spec.proxy_fraction, spec.test_fraction, spec.seed)
    rows = train_idx[np.isin(domains[train_idx], np.asarray(targets, dtype=np.int64))]
    return x[torch.from_numpy(rows)], y[torch.from_numpy(rows)]
