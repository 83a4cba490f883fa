"""The ServerApp shares partitions and feature space with its clients (client-data.npz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from feddistill.config import from_mapping
from feddistill.data import prepare_federated_data
from feddistill.data.client_data import read_client_data
from feddistill.distill import SharedFeatureSpace
from feddistill.run_folder import RunFolder
from feddistill.server.loop import share_client_data

SMALL = {"dataset": "digits", "num-partitions": 3, "min-partition-size": 5, "partitioner": "iid"}


def test_share_client_data_writes_the_runs_partitions_and_feature_space(tmp_path: Path) -> None:
    # Prepare
    cfg = from_mapping({**SMALL, "out-dir": str(tmp_path)})
    data = prepare_federated_data(cfg.data_spec())
    # Execute
    share_client_data(cfg, data)
    # Assert: what a client reads is the server's partitions and the clients' own PCA fit
    stored = read_client_data(RunFolder(tmp_path).client_data, cfg.data_spec())
    assert stored is not None
    partitions, (mean, components) = stored
    assert [p.tolist() for p in partitions] == [p.tolist() for p in data.partitions]
    fitted = SharedFeatureSpace(data.splits.proxy_x, seed=cfg.seed)
    np.testing.assert_array_equal(components, fitted.components)
    np.testing.assert_array_equal(mean, fitted.mean)


def test_share_client_data_writes_nothing_for_named_domains(tmp_path: Path) -> None:
    # Prepare: digits-mix has named domains; its clients compute their own data
    cfg = from_mapping(
        {**SMALL, "dataset": "digits-mix", "partitioner": "domain", "out-dir": str(tmp_path)}
    )
    data = prepare_federated_data(cfg.data_spec())
    # Execute
    share_client_data(cfg, data)
    # Assert
    assert not RunFolder(tmp_path).client_data.exists()
