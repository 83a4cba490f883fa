"""The ServerApp's data checks for ``feddistill run``, and its wait for the go-ahead.

``feddistill run`` (simulation engine) checks the device, the dataset and the splits
before it writes the out-dir: a bad dataset must leave a previous run there untouched.
Those checks import torch and the data libraries and load the data, which the ServerApp
does anyway; run in a separate child first they put ~4 s (3.9 CPU-s) before every
run's start-up (issue 13). So the engine starts the SuperLink, ``flwr run`` and Ray at
once and the ServerApp runs the checks itself, before it touches the out-dir:

1. the engine names two files in the environment (inherited by the SuperLink,
   SuperExec and ``flwr-simulation``): ``FEDDISTILL_CHECKS_FILE`` and
   ``FEDDISTILL_ADMIT_FILE`` (and ``FEDDISTILL_CHECK_CUDA``: 0 when the run goes to a
   Ray cluster);
2. the ServerApp runs :func:`feddistill.preflight.data_check_failure` and writes the
   outcome to the first file (:func:`report_data_checks`); after a failure it stops;
3. the engine reads it (:func:`read_data_checks`): a failure is raised as the same
   error and the whole runtime is stopped; otherwise it prepares the out-dir and
   creates the second file;
4. the ServerApp, waiting for it (:func:`wait_for_admission`), starts the run.

Without the variables (in-process and deployment engines, ``flwr run`` by hand) the
ServerApp neither checks nor waits; ``feddistill run`` checks first in a child there.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

from feddistill.atomic import atomic_write_text
from feddistill.config import RunConfig

ADMIT_ENV = "FEDDISTILL_ADMIT_FILE"
CHECKS_ENV = "FEDDISTILL_CHECKS_FILE"
CHECK_CUDA_ENV = "FEDDISTILL_CHECK_CUDA"
POLL_S = 0.05
# the checks raise only these; the engine raises the same type with the same message
CHECK_ERRORS: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "FileNotFoundError": FileNotFoundError,
}


def report_data_checks(cfg: RunConfig) -> bool:
    """Run the data checks for ``feddistill run`` and write their outcome; no-op if
    ``FEDDISTILL_CHECKS_FILE`` is unset.

    Returns:
        False if a check failed (the ServerApp must stop: the engine stops the
        runtime), True otherwise.

    Raises:
        Exception: whatever else the checks raised (a bug), after writing it as a
            RuntimeError outcome for the engine.
    """
    name = os.environ.get(CHECKS_ENV)
    if not name:
        return True
    from feddistill.preflight import data_check_failure

    try:
        failure = data_check_failure(cfg, check_cuda=os.environ.get(CHECK_CUDA_ENV, "1") == "1")
    except Exception as exc:
        # the engine shows this (the runtime's own log is not kept before the admission)
        trace = traceback.format_exc()
        _write_outcome(Path(name), ("RuntimeError", f"{type(exc).__name__}: {exc}\n{trace}"))
        raise
    _write_outcome(Path(name), failure)
    return failure is None


def _write_outcome(path: Path, failure: tuple[str, str] | None) -> None:
    atomic_write_text(path, json.dumps({"failure": failure}))


def read_data_checks(path: Path) -> bool:
    """The engine's side: False while the ServerApp has not reported; True if the
    checks passed.

    Raises:
        ValueError, FileNotFoundError: the failed check's own error and message.
        RuntimeError: if the checks themselves broke (the message names the error).
    """
    if not path.is_file():
        return False
    failure = json.loads(path.read_text())["failure"]
    if failure is None:
        return True
    kind, message = failure
    raise CHECK_ERRORS.get(kind, RuntimeError)(message)


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
