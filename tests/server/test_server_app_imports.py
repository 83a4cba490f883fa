"""What the ServerApp and ClientApp modules import when Flower loads them.

Flower's simulation loads both apps in its driver process, under one lock, before it
starts Ray; their heavy imports (torch, the data, scikit-learn) wait until they run
(issue 13). Regression kept in view: a first import of scikit-learn racing another
thread's ('partially initialized module sklearn.base'), which is why the ServerApp
enters it through sklearn.decomposition, whole, when it computes its data
(tests/server/test_server_client_data.py), and the ClientApp never in the driver.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "sklearn", "scipy", "flwr_datasets")


@pytest.mark.parametrize("module", ["feddistill.server.app", "feddistill.clients.app"])
def test_app_module_loads_without_torch_or_sklearn(module: str) -> None:
    # Prepare: a fresh interpreter, as flwr-simulation loads the apps
    code = f"import sys; import {module}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    # Execute
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Assert
    assert out.stdout.strip() == "[]"


def test_a_kmeans_run_loads_no_flwr_datasets() -> None:
    # Prepare: the round loop and a kmeans split, as the ServerApp and the check child
    # do them; flwr-datasets (with Hugging Face datasets) cost ~1 CPU-s and 61 MiB
    # per process and are needed only for iid / dirichlet (scikit-learn
    # imports pandas and pyarrow itself)
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import feddistill.server.loop\n"
        "from feddistill.data.partitioners import partition_train\n"
        "x = np.random.default_rng(0).normal(size=(40, 1, 4, 4)).astype('float32')\n"
        "parts, _ = partition_train(x, np.arange(40) % 3, 'kmeans', 2, seed=0)\n"
        "print(sum(map(len, parts)), [m for m in ('flwr_datasets', 'datasets') "
        "if m in sys.modules])\n"
    )
    # Execute
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Assert
    assert out.stdout.strip() == "40 []"
