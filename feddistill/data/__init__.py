"""Datasets, train / proxy / test splits, client partitions and input domains.

Pure PyTorch / numpy / scikit-learn (plus flwr-datasets' partitioners, which need no
Flower runtime): nothing here imports ``flwr`` or ``ray``.

Typical use::

    data = prepare_federated_data(cfg.data_spec())   # cached per process
    x = data.splits.train_x[data.partitions[partition_id]]
"""

from feddistill.data.datasets import DATASET_NAMES, ArrayDataset, load_dataset
from feddistill.data.domains import DomainModel, fit_domains
from feddistill.data.federated import FederatedData, prepare_federated_data
from feddistill.data.partitioners import PARTITIONER_NAMES, KMeansPartitioner, partition_train
from feddistill.data.spec import DataSpec
from feddistill.data.splits import DataSplits, split_dataset

__all__ = [
    "DATASET_NAMES",
    "PARTITIONER_NAMES",
    "ArrayDataset",
    "DataSpec",
    "DataSplits",
    "DomainModel",
    "FederatedData",
    "KMeansPartitioner",
    "fit_domains",
    "load_dataset",
    "partition_train",
    "prepare_federated_data",
    "split_dataset",
]
