"""What the ServerApp and ClientApp modules import when Flower loads them.

Flower's simulation loads both apps in its driver process, under one lock, before it
starts Ray; their heavy imports (torch, the data, scikit-learn) wait until they run
(issue 13). Regression kept in view: a first import of scikit-learn racing another
thread's ('partially initialized module sklearn.base'), which is why the ServerApp
imports sklearn.decomposition first thing when it runs and the ClientApp never in the
driver.
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


def test_serverapp_body_imports_sklearn_before_the_round_loop() -> None:
    # Prepare: the ServerApp's body with a round loop that records what was loaded
    code = (
        "import sys\n"
        "import feddistill.server.loop as loop\n"
        "from feddistill.config import RunConfig\n"
        "from feddistill.server import app\n"
        "class Stop(Exception): pass\n"
        "def init(self, cfg):\n"
        "    print('sklearn.base' in sys.modules, 'sklearn.decomposition' in sys.modules)\n"
        "    raise Stop\n"
        "loop.FederationRun.__init__ = init\n"
        "import feddistill.server.recorder as rec\n"
        "rec.RunRecorder.record_failure = lambda self, exc: None\n"
        "try:\n"
        "    app._run(None, RunConfig())\n"
        "except Stop:\n"
        "    pass\n"
    )
    # Execute
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Assert: scikit-learn is fully imported before the round loop starts
    assert out.stdout.strip() == "True True"


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
