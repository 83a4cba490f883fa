"""Datasets, train / proxy / test splits, client partitions and input domains.

Pure PyTorch / numpy / scikit-learn (plus flwr-datasets' partitioners, which need no
Flower runtime): nothing here imports ``flwr`` or ``ray``.

Typical use::

    data = prepare_federated_data(cfg)        # cached per process
    x = data.splits.train_x[data.partitions[partition_id]]
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feddistill.data.datasets import DATASET_NAMES, ArrayDataset, load_dataset
    from feddistill.data.domains import DomainModel, fit_domains
    from feddistill.data.federated import FederatedData, prepare_federated_data
    from feddistill.data.partitioners import (
        PARTITIONER_NAMES,
        KMeansPartitioner,
        partition_indices,
    )
    from feddistill.data.splits import DataSplits, split_dataset

# Names load on first use (PEP 562): importing a submodule such as ``cli_partition``
# (the `feddistill` parser) imports no torch, so `feddistill run`'s own process stays
# small while the run happens in other processes (issue 13).
_SOURCES = {
    "DATASET_NAMES": "datasets",
    "ArrayDataset": "datasets",
    "load_dataset": "datasets",
    "DomainModel": "domains",
    "fit_domains": "domains",
    "FederatedData": "federated",
    "prepare_federated_data": "federated",
    "PARTITIONER_NAMES": "partitioners",
    "KMeansPartitioner": "partitioners",
    "partition_indices": "partitioners",
    "DataSplits": "splits",
    "split_dataset": "splits",
}


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module 'feddistill.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"feddistill.data.{_SOURCES[name]}"), name)


__all__ = [
    "DATASET_NAMES",
    "PARTITIONER_NAMES",
    "ArrayDataset",
    "DataSplits",
    "DomainModel",
    "FederatedData",
    "KMeansPartitioner",
    "fit_domains",
    "load_dataset",
    "partition_indices",
    "prepare_federated_data",
    "split_dataset",
]
