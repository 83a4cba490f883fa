"""The ServerApp module's imports (Flower loads the ClientApp in another thread meanwhile)."""

from __future__ import annotations

import subprocess
import sys


def test_serverapp_enters_sklearn_where_the_clientapp_does_when_it_loads() -> None:
    # Prepare: a fresh interpreter, as flwr-simulation loads the ServerApp
    code = (
        "import sys; import feddistill.server.app; "
        "print('sklearn.decomposition' in sys.modules, 'sklearn.base' in sys.modules)"
    )
    # Execute
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Assert: scikit-learn is fully imported before the ServerApp runs (no lazy first
    # import racing the ClientApp's in another thread: 'partially initialized sklearn.base')
    assert out.stdout.strip() == "True True"
