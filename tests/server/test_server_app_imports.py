"""The ServerApp module's imports (Flower loads the ClientApp in another thread meanwhile).

Regression: a lazy first import of scikit-learn in the ServerApp raced another thread's
('partially initialized module sklearn.base').
"""

from __future__ import annotations

import subprocess
import sys


def test_serverapp_imports_sklearn_when_it_loads() -> None:
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
