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

One module owns the file in both directions. Its arrays: ``spec`` (the data spec as
JSON), ``indices`` and ``offsets`` (partition ``k`` is
``indices[offsets[k]:offsets[k + 1]]``), and ``feature_mean`` (F,) /
``feature_components`` (d, F) of the shared feature space.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
from pathlib import Path

import numpy as np

from feddistill.atomic import atomic_write_bytes
from feddistill.data.datasets import load_dataset
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


def write_client_data(
    path: str | Path,
    spec: DataSpec,
    partitions: list[np.ndarray],
    feature_space: tuple[np.ndarray, np.ndarray],
) -> None:
    """Write the run's partitions and feature space for its clients (atomically).

    Args:
        path: the file, normally ``<out-dir>/client-data.npz``; its folder must exist.
        spec: the data spec the partitions were computed from.
        partitions: per client, int indices into the training split.
        feature_space: (mean (F,), components (d, F)) of the fitted shared space.

    Raises:
        OSError: if the file cannot be written.
    """
    offsets = np.cumsum([0, *(len(p) for p in partitions)]).astype(np.int64)
    indices = np.concatenate([np.asarray(p, dtype=np.int64) for p in partitions])
    buf = io.BytesIO()
    np.savez(
        buf,
        spec=np.array(_spec_key(spec)),
        indices=indices,
        offsets=offsets,
        feature_mean=np.asarray(feature_space[0], dtype=np.float64),
        feature_components=np.asarray(feature_space[1], dtype=np.float64),
    )
    atomic_write_bytes(path, buf.getvalue())


def read_client_data(
    path: str | Path, spec: DataSpec
) -> tuple[list[np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
    """(partitions, feature space) from `path` if it was written for `spec`, else None.

    A missing file, one written for another data spec, or one that cannot be read
    gives None (the caller then computes the data itself).
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["spec"]) != _spec_key(spec):
                return None
            indices, offsets = npz["indices"], npz["offsets"]
            space = (npz["feature_mean"], npz["feature_components"])
    except (OSError, KeyError, ValueError):
        return None
    partitions = [indices[offsets[k] : offsets[k + 1]] for k in range(len(offsets) - 1)]
    return partitions, space


@functools.lru_cache(maxsize=4)
def load_client_data(spec: DataSpec, path: str) -> ClientData:
    """The client's data for `spec`: from `path` when it holds it, else computed.

    Cached per process on (spec, path). With the file, only the dataset and its splits
    are loaded (:func:`load_dataset`, :func:`split_dataset`, as
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
    if stored is None:
        from feddistill.data.federated import prepare_federated_data

        return ClientData.of(prepare_federated_data(spec))
    partitions, space = stored
    ds = load_dataset(spec.dataset, data_root=spec.data_root, download=spec.download)
    splits = split_dataset(ds, spec.proxy_fraction, spec.test_fraction, spec.seed)
    return ClientData(splits, partitions, space)
