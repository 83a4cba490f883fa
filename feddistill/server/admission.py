"""The ServerApp's wait for ``feddistill run``'s go-ahead before it writes the out-dir.

``feddistill run`` (simulation engine) starts the SuperLink, ``flwr run`` and Ray while
its data checks still run in a child process (~4 s of every run's start-up, issue 13).
The out-dir may be written only once they passed: a bad dataset must leave a previous
run there untouched. The engine names a file in ``FEDDISTILL_ADMIT_FILE`` (inherited by
the SuperLink, SuperExec and ``flwr-simulation``) and creates it once the checks passed
and the out-dir is prepared; if they fail it stops the whole runtime instead. Without
the variable (in-process and deployment engines, ``flwr run`` by hand) there is no wait.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ADMIT_ENV = "FEDDISTILL_ADMIT_FILE"
POLL_S = 0.05


def wait_for_admission(timeout_s: float = 600.0) -> None:
    """Block until the file named by ``FEDDISTILL_ADMIT_FILE`` exists; no-op if unset.

    Args:
        timeout_s: seconds to wait at most (the engine stops the runtime long before
            if the checks fail; this bounds a run whose engine died).

    Raises:
        TimeoutError: if the file did not appear within `timeout_s`, naming it.
    """
    name = os.environ.get(ADMIT_ENV)
    if not name:
        return
    path = Path(name)
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{ADMIT_ENV}={name!r} did not appear within {timeout_s:.0f} s: the "
                "`feddistill run` that started this runtime did not admit the run"
            )
        time.sleep(POLL_S)
