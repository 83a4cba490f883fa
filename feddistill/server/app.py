"""Flower ServerApp: parse the run config once, run the round loop, record the outcome.

The config is parsed here as given; :class:`~feddistill.server.loop.FederationRun`
(the server's entry for every engine) resolves the strategy's overrides once
(:func:`feddistill.protocol.effective_config`) and keeps the given config for the run
folder (run-config.json).
"""

from __future__ import annotations

import logging

# Flower's simulation imports the ClientApp in another thread of this process while the
# ServerApp runs. scikit-learn's submodules import each other: two threads entering it
# through different submodules can each hold a module lock the other needs, and Python
# then hands one of them a partially initialized module (ImportError, seen: 'sklearn.base').
# The ServerApp fits the proxy set's PCA with sklearn.decomposition (distill.affinity,
# which imports it lazily so that client actors reading client-data.npz never load
# scikit-learn), so it enters scikit-learn there, once, when this module loads.
import sklearn.decomposition  # noqa: F401
from flwr.app import Context
from flwr.common.logger import log as flwr_log
from flwr.serverapp import Grid, ServerApp

from feddistill.blas import single_threaded_blas
from feddistill.config import RunConfig, from_mapping
from feddistill.outdir_lock import OutDirLock
from feddistill.run_folder import CHECKPOINT_MISMATCH, OUT_DIR_HOLDS_RUN, RunFolder
from feddistill.server.loop import CheckpointMismatch, FederationRun, OutDirInUse
from feddistill.server.recorder import RunRecorder

logger = logging.getLogger(__name__)
# Ray starts its processes from this process's main thread with fork() while the
# ServerApp runs: OpenBLAS must not have worker threads to lose (feddistill.blas).
single_threaded_blas()
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run FedDistill; on failure write summary.json with status "failed" and re-raise.

    The out-dir's lock is taken first (``OutDirLocked``, naming the holder's PID, if
    another live run writes there; nothing is written then) and held for the run.

    An out-dir holding another run (:class:`OutDirInUse`) is reported as one error line
    and not raised, so ``flwr run`` shows the message without a traceback.
    """
    cfg = from_mapping(context.run_config)
    with OutDirLock(cfg.out_dir):
        _run(grid, cfg)


def _run(grid: Grid, cfg: RunConfig) -> None:
    """The ServerApp's body; every way it stops leaves an error code in the run folder
    (``server-error.json``) or a summary.json, which the engines read."""
    try:
        FederationRun(cfg).run(grid)
    except OutDirInUse as exc:
        # Flower logs the full traceback of any exception a ServerApp raises (flwr's
        # simulation runtime calls log(ERROR, traceback.format_exc())) and offers no hook
        # to mark a run failed otherwise; this error is the user's, not a bug, so log the
        # message alone and return. The previous run's summary.json is left as it is.
        code = CHECKPOINT_MISMATCH if isinstance(exc, CheckpointMismatch) else OUT_DIR_HOLDS_RUN
        RunFolder(cfg.out_dir).write_server_error(code, str(exc))
        flwr_log(logging.ERROR, "%s", exc)
        return
    except Exception as exc:
        RunRecorder(cfg).record_failure(exc)
        raise
