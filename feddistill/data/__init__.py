"""Datasets, train / proxy / test splits, client partitions and input domains.

Pure PyTorch / numpy / scikit-learn (plus flwr-datasets' partitioners, which need no
Flower runtime): nothing here imports ``flwr`` or ``ray``.

Typical use::

    data = prepare_federated_data(cfg.data_spec())   # cached per process
    x = data.splits.train_x[data.partitions[partition_id]]

The names below are loaded on first use (PEP 562), so that importing a light module of
this package (:mod:`.names`, :mod:`.spec`) does not load torch or the datasets.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from feddistill.data.names import DATASET_NAMES, PARTITIONER_NAMES
from feddistill.data.spec import DataSpec

if TYPE_CHECKING:
    from feddistill.data.client_data import ClientData, load_client_data, write_client_data
    from feddistill.data.datasets import ArrayDataset, load_dataset
    from feddistill.data.domains import DomainModel, fit_domains
    from feddistill.data.federated import prepare_federated_data
    from feddistill.data.federated_data import FederatedData
    from feddistill.data.kmeans_partitioner import KMeansPartitioner
    from feddistill.data.partitioners import partition_train
    from feddistill.data.splits import DataSplits, split_dataset

_LAZY = {
    "ArrayDataset": "datasets",
    "load_dataset": "datasets",
    "DomainModel": "domains",
    "fit_domains": "domains",
    "ClientData": "client_data",
    "load_client_data": "client_data",
    "write_client_data": "client_data",
    "FederatedData": "federated_data",
    "prepare_federated_data": "federated",
    "KMeansPartitioner": "kmeans_partitioner",
    "partition_train": "partitioners",
    "DataSplits": "splits",
    "split_dataset": "splits",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"feddistill.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'feddistill.data' has no attribute {name!r}")


__all__ = [
    "DATASET_NAMES",
    "PARTITIONER_NAMES",
    "ArrayDataset",
    "ClientData",
    "DataSpec",
    "DataSplits",
    "DomainModel",
    "FederatedData",
    "KMeansPartitioner",
    "fit_domains",
    "load_client_data",
    "load_dataset",
    "partition_train",
    "prepare_federated_data",
    "split_dataset",
    "write_client_data",
]
