"""The ServerApp shares partitions and feature space with its clients (client-data.npz)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from feddistill.config import from_mapping
from feddistill.data import prepare_federated_data
from feddistill.data.client_data import read_client_data, read_federated_data
from feddistill.distill import SharedFeatureSpace
from feddistill.run_folder import RunFolder
from feddistill.server.run_data import encode_run_data, load_run_data, share_client_data

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


def test_load_run_data_computes_and_writes_the_whole_file(tmp_path: Path) -> None:
    # Prepare: no client-data.npz (flwr run straight, without feddistill run's checks)
    cfg = from_mapping({**SMALL, "out-dir": str(tmp_path)})
    # Execute
    data = load_run_data(cfg)
    # Assert: the computed data, and a file the next ServerApp (a resume) reads whole
    want = prepare_federated_data(cfg.data_spec())
    assert [p.tolist() for p in data.partitions] == [p.tolist() for p in want.partitions]
    again = read_federated_data(RunFolder(tmp_path).client_data, cfg.data_spec())
    assert again is not None
    assert again.partition_domains == want.partition_domains
    np.testing.assert_array_equal(again.test_domains, want.test_domains)


def test_serverapp_with_the_checks_file_imports_no_partitioner_libraries(tmp_path: Path) -> None:
    # Prepare: the file as `feddistill run`'s data-check child writes it (mnist5k, whose
    # loading needs no scikit-learn), then what the ServerApp's process runs
    cfg = from_mapping({**SMALL, "dataset": "mnist5k", "out-dir": str(tmp_path)})
    spec = cfg.data_spec()
    RunFolder(tmp_path).client_data.write_bytes(encode_run_data(spec, prepare_federated_data(spec)))
    code = (
        "import sys\n"
        "import feddistill.server.app, feddistill.server.loop\n"
        "from feddistill.config import from_mapping\n"
        "from feddistill.server.run_data import load_run_data\n"
        f"cfg = from_mapping({{**{SMALL!r}, 'dataset': 'mnist5k', 'out-dir': {str(tmp_path)!r}}})\n"
        "data = load_run_data(cfg)\n"
        "heavy = ('sklearn', 'scipy', 'datasets', 'flwr_datasets', 'pandas', 'pyarrow')\n"
        "print(data.num_domains, sorted(m for m in heavy if m in sys.modules))\n"
    )
    # Execute
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    # Assert: ~200 MiB of RSS the ServerApp's process no longer holds (issue 13)
    assert out.stdout.strip() == f"{prepare_federated_data(spec).num_domains} []"


def test_serverapp_computing_its_data_enters_sklearn_whole_first(tmp_path: Path) -> None:
    # Prepare: no file; the round loop's data code would otherwise import parts of
    # scikit-learn lazily (a race with another thread once gave 'sklearn.base' half-built)
    code = (
        "import sys\n"
        "import feddistill.data.federated as fed\n"
        "from feddistill.config import from_mapping\n"
        "from feddistill.server.run_data import load_run_data\n"
        "real = fed.prepare_federated_data\n"
        "def spy(spec):\n"
        "    print('sklearn.decomposition' in sys.modules, 'sklearn.base' in sys.modules)\n"
        "    return real(spec)\n"
        "fed.prepare_federated_data = spy\n"
        f"load_run_data(from_mapping({{**{SMALL!r}, 'out-dir': {str(tmp_path)!r}}}))\n"
    )
    # Execute
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    # Assert
    assert out.stdout.strip() == "True True"
