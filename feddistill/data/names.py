"""The names the data package accepts: datasets, partitioners, proxy sets.

The one list of each, kept free of heavy imports so that the run config
(:mod:`feddistill.config`) can check a name without loading torch or the datasets.
The loaders and partitioners dispatch on these names and reject any other.
"""

from __future__ import annotations

EMBEDDED_DATASETS: tuple[str, ...] = ("mnist5k", "digits")  # ship with installed packages
TORCHVISION_DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist", "cifar10")
DATASET_NAMES: tuple[str, ...] = EMBEDDED_DATASETS + TORCHVISION_DATASETS
DOMAIN_DATASET_NAMES: tuple[str, ...] = ("digits-mix", "mnist5k-rotated", "mnist-usps")
PARTITIONER_NAMES: tuple[str, ...] = ("kmeans", "iid", "dirichlet")
DOMAIN_PARTITIONER_NAMES: tuple[str, ...] = ("domain", "domain-dirichlet")  # one domain per client
# the partitioners that read dirichlet-alpha
DIRICHLET_PARTITIONER_NAMES: tuple[str, ...] = ("dirichlet", "domain-dirichlet")
PROXY_SETS: tuple[str, ...] = ("target", "public")  # the proxy set when target domains are held out
