"""What a client needs of the run's data, read without the partitioners' libraries.

A client trains on ``splits.train_x[partitions[k]]`` and projects inputs into the
shared feature space of the proxy set (:class:`~feddistill.distill.SharedFeatureSpace`);
it needs neither the domains nor the test split. Computing the partitions needs
flwr-datasets (Hugging Face ``datasets``, pandas, pyarrow) and the feature space
scikit-learn: ~200 MiB of RSS in every process that imports them, i.e. in every Ray
client actor. So the server, which computes both anyway, writes them once per run to
``<out-dir>/client-data.npz`` (:func:`write_client_data`), and a client that finds that
file for its own data spec (:func:`load_client_data`) only reloads the dataset and its
splits (torch / numpy). Without the file (a SuperNode on another machine, a dataset
with named domains) the client computes everything itself, as before; both ways give
the same arrays, so the same metrics.

The server needs more of the data: the input domains (a KMeans fit in a PCA space,
:class:`~feddistill.data.DomainModel`) and the domain of each test sample and
partition. When the file also holds those (written from a whole
:class:`~feddistill.data.FederatedData`, as ``feddistill run``'s data-check child does
while the runtime starts), :func:`read_federated_data` gives the server its data
without scikit-learn or flwr-datasets too.

One module owns the file in both directions. Its arrays: ``spec`` (the data spec as
JSON), ``indices`` and ``offsets`` (partition ``k`` is
``indices[offsets[k]:offsets[k + 1]]``), ``feature_mean`` (F,) /
``feature_components`` (d, F) of the shared feature space, and optionally the domains:
``test_domains`` (N_test,), ``partition_domains`` (num_partitions,), and the domain
model's ``domain_mean`` (D,), ``domain_components`` (P, D), ``domain_centroids`` (K, P)
and ``domain_fit_sizes`` (K,).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from feddistill.atomic import atomic_write_bytes
from feddistill.data.datasets import load_dataset
from feddistill.data.domains import DomainModel
from feddistill.data.federated_data import FederatedData
from feddistill.data.spec import DataSpec, uses_domain_path
from feddistill.data.splits import DataSplits, split_dataset

CLIENT_DATA_FILE = "client-data.npz"


@dataclasses.dataclass(frozen=True)
class ClientData:
    """The part of a run's data that clients use.

    Attributes:
        splits: train / proxy / test tensors (shared: do not modify them in place).
        partitions: per client, sorted int64 indices into ``splits.train_x``.
        feature_space: (mean (F,), components (d, F)) of the proxy set's shared
            feature space as the server fitted it, or None (the client fits it).
    """

    splits: DataSplits
    partitions: list[np.ndarray]
    feature_space: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def of(cls, data: FederatedData | ClientData) -> ClientData:
        """`data` itself, or the client's part of a :class:`FederatedData`."""
        if isinstance(data, ClientData):
            return data
        return cls(data.splits, data.partitions)


def _spec_key(spec: DataSpec) -> str:
    return json.dumps(dataclasses.asdict(spec), sort_keys=True)


def encode_client_data(
    spec: DataSpec,
    partitions: list[np.ndarray],
    feature_space: tuple[np.ndarray, np.ndarray],
    domains: FederatedData | None = None,
) -> bytes:
    """The file's bytes (an ``.npz``) for `spec`'s partitions and feature space.

    Args:
        spec: the data spec the partitions were computed from.
        partitions: per client, int indices into the training split.
        feature_space: (mean (F,), components (d, F)) of the fitted shared space.
        domains: the whole data, whose domain fields (test and partition domains, the
            domain model) are stored too, for :func:`read_federated_data`; None stores
            only what clients read. Its partitions must be `partitions`.

    Raises:
        ValueError: if `domains` has no domain model (named domains) or other partitions.
    """
    offsets = np.cumsum([0, *(len(p) for p in partitions)]).astype(np.int64)
    indices = np.concatenate([np.asarray(p, dtype=np.int64) for p in partitions])
    arrays: dict[str, np.ndarray] = {
        "spec": np.array(_spec_key(spec)),
        "indices": indices,
        "offsets": offsets,
        "feature_mean": np.asarray(feature_space[0], dtype=np.float64),
        "feature_components": np.asarray(feature_space[1], dtype=np.float64),
    }
    if domains is not None:
        model = domains.domain_model
        if model is None:
            raise ValueError("domains must have a domain_model (KMeans domains), got None")
        if len(domains.partitions) != len(partitions) or not all(
            np.array_equal(a, b) for a, b in zip(domains.partitions, partitions, strict=True)
        ):
            raise ValueError("domains.partitions differ from the partitions given")
        arrays.update(
            test_domains=np.asarray(domains.test_domains, dtype=np.int64),
            partition_domains=np.asarray(domains.partition_domains, dtype=np.int64),
            domain_mean=model.mean,
            domain_components=model.components,
            domain_centroids=model.centroids,
            domain_fit_sizes=model.fit_sizes,
        )
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # keys are array names, not allow_pickle
    return buf.getvalue()


def write_client_data(
    path: str | Path,
    spec: DataSpec,
    partitions: list[np.ndarray],
    feature_space: tuple[np.ndarray, np.ndarray],
    domains: FederatedData | None = None,
) -> None:
    """Write the run's partitions and feature space for its clients (atomically).

    Args:
        path: the file, normally ``<out-dir>/client-data.npz``; its folder must exist.
        spec, partitions, feature_space, domains: as :func:`encode_client_data`.

    Raises:
        OSError: if the file cannot be written.
        ValueError: as :func:`encode_client_data`.
    """
    atomic_write_bytes(path, encode_client_data(spec, partitions, feature_space, domains))


# what np.load and reading its arrays raise for a file that is not a whole, intact npz
# (missing, truncated or empty: OSError / EOFError / BadZipFile; a damaged member: a
# BadZipFile "Bad CRC-32" when the array is read; an array that is not one: ValueError)
_UNREADABLE = (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile)


def _partitions(indices: np.ndarray, offsets: np.ndarray) -> list[np.ndarray] | None:
    """Partition ``k`` = ``indices[offsets[k]:offsets[k + 1]]``; None if they do not fit."""
    if (
        indices.ndim != 1
        or offsets.ndim != 1
        or len(offsets) < 1
        or not np.issubdtype(indices.dtype, np.integer)
        or not np.issubdtype(offsets.dtype, np.integer)
        or offsets[0] != 0
        or offsets[-1] != len(indices)
        or bool(np.any(np.diff(offsets) < 0))
    ):
        return None
    return [indices[offsets[k] : offsets[k + 1]] for k in range(len(offsets) - 1)]


def _fit_the_split(partitions: list[np.ndarray], num_partitions: int, n_train: int) -> bool:
    """True if there are `num_partitions` partitions, every index in ``[0, n_train)``."""
    flat = np.concatenate(partitions) if partitions else np.empty(0, dtype=np.int64)
    return len(partitions) == num_partitions and (
        not len(flat) or (flat.min() >= 0 and flat.max() < n_train)
    )


def read_client_data(
    path: str | Path, spec: DataSpec
) -> tuple[list[np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
    """(partitions, feature space) from `path` if it was written for `spec`, else None.

    A missing file, one written for another data spec, one that cannot be read (cut
    short, empty, a damaged array) or whose arrays do not fit together gives None (the
    caller then computes the data itself).
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["spec"]) != _spec_key(spec):
                return None
            indices, offsets = npz["indices"], npz["offsets"]
            space = (npz["feature_mean"], npz["feature_components"])
    except _UNREADABLE:
        return None
    partitions = _partitions(indices, offsets)
    mean, components = space
    if partitions is None or mean.ndim != 1 or components.shape[1:] != mean.shape:
        return None
    return partitions, space


_DOMAIN_KEYS = (
    "test_domains",
    "partition_domains",
    "domain_mean",
    "domain_components",
    "domain_centroids",
    "domain_fit_sizes",
)


def read_federated_data(path: str | Path, spec: DataSpec) -> FederatedData | None:
    """The whole data of `spec` from `path`, if the file holds its domains too, else None.

    Only the dataset and its splits are loaded (torch / numpy, as
    :func:`load_client_data` does); partitions, domains and the domain model come from
    the file, so neither scikit-learn nor flwr-datasets is imported. A missing file,
    one for another spec, one without the domain arrays or with arrays that do not fit
    the splits gives None (the caller then computes the data). Specs with named or
    target domains always give None.

    Args:
        path: ``<out-dir>/client-data.npz``.
        spec: the run's data settings.

    Returns:
        The same :class:`FederatedData` as
        :func:`~feddistill.data.prepare_federated_data` for `spec`, or None.

    Raises:
        ValueError, FileNotFoundError, RuntimeError: as :func:`load_dataset`.
    """
    if uses_domain_path(spec):
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["spec"]) != _spec_key(spec) or not all(k in npz for k in _DOMAIN_KEYS):
                return None
            indices, offsets = npz["indices"], npz["offsets"]
            stored = {k: npz[k] for k in _DOMAIN_KEYS}
    except _UNREADABLE:
        return None
    partitions = _partitions(indices, offsets)
    if partitions is None:
        return None
    model = DomainModel(
        stored["domain_mean"],
        stored["domain_components"],
        stored["domain_centroids"],
        stored["domain_fit_sizes"],
    )
    ds = load_dataset(spec.dataset, data_root=spec.data_root, download=spec.download)
    splits = split_dataset(ds, spec.proxy_fraction, spec.test_fraction, spec.seed)
    test_domains, partition_domains = stored["test_domains"], stored["partition_domains"]
    if test_domains.ndim != 1 or partition_domains.ndim != 1 or model.components.ndim != 2:
        return None
    ids = np.concatenate([test_domains, partition_domains])
    if (
        not _fit_the_split(partitions, spec.num_partitions, len(splits.train_y))
        or len(partition_domains) != len(partitions)
        or len(test_domains) != len(splits.test_y)
        or (len(ids) and (ids.min() < 0 or ids.max() >= model.n_domains))
        or model.components.shape[1:] != model.mean.shape
        or model.centroids.shape[1:] != model.components.shape[:1]
    ):
        return None
    return FederatedData(
        splits=splits,
        partitions=partitions,
        test_domains=test_domains,
        partition_domains=[int(d) for d in partition_domains],
        num_domains=model.n_domains,
        domain_model=model,
    )


@functools.lru_cache(maxsize=4)
def load_client_data(spec: DataSpec, path: str) -> ClientData:
    """The client's data for `spec`: from `path` when it holds it, else computed.

    Cached per process on (spec, path). A file that :func:`read_client_data` refuses, or
    whose partitions are not `spec`'s count or point outside the training split, is
    not used. With the file, only the dataset and its splits are loaded
    (:func:`load_dataset`, :func:`split_dataset`, as
    :func:`~feddistill.data.prepare_federated_data` does); without it, or for a spec
    with named or target domains, :func:`~feddistill.data.prepare_federated_data`
    computes everything.

    Args:
        spec: the run's data settings.
        path: ``<out-dir>/client-data.npz`` as a string.

    Returns:
        The splits, the partitions and, from the file, the fitted feature space.

    Raises:
        ValueError, FileNotFoundError, RuntimeError: as
            :func:`~feddistill.data.prepare_federated_data`.
    """
    stored = None if uses_domain_path(spec) else read_client_data(path, spec)
    if stored is not None:
        partitions, space = stored
        ds = load_dataset(spec.dataset, data_root=spec.data_root, download=spec.download)
        splits = split_dataset(ds, spec.proxy_fraction, spec.test_fraction, spec.seed)
        if _fit_the_split(partitions, spec.num_partitions, len(splits.train_y)):
            return ClientData(splits, partitions, space)
    from feddistill.data.federated import prepare_federated_data

    return ClientData.of(prepare_federated_data(spec))
