"""Flower ServerApp: parse the run config once, run the round loop, record the outcome.

The config is parsed here as given; :class:`~feddistill.server.loop.FederationRun`
(the server's entry for every engine) resolves the strategy's overrides once
(:func:`feddistill.protocol.effective_config`) and keeps the given config for the run
folder (run-config.json).

This module imports Flower and nothing heavy; the round loop (torch, the models, the
data, scikit-learn) is imported when the ServerApp runs. Flower's simulation loads the
ServerApp and the ClientApp (under one lock) before it starts Ray, so with those
imports here every run's start-up waited ~3 s more for Ray (issue 13).
"""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.common.logger import log as flwr_log
from flwr.serverapp import Grid, ServerApp

from feddistill.blas import single_threaded_blas
from feddistill.config import RunConfig, from_mapping
from feddistill.outdir_lock import OutDirLock
from feddistill.run_folder import CHECKPOINT_MISMATCH, OUT_DIR_HOLDS_RUN, RunFolder
from feddistill.server.admission import wait_for_admission
from feddistill.server.discovery import Discovery

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
    # the clients start (Ray's actors, their imports) while this thread imports the
    # round loop and `feddistill run`'s data checks end (issue 13); the grid is not
    # used until discovery is done, the out-dir not before the admission
    discovery = Discovery(grid, cfg.num_partitions, cfg.round_timeout_s) if grid else None
    _import_round_loop()
    wait_for_admission()  # the out-dir is ours once `feddistill run`'s data checks passed
    with OutDirLock(cfg.out_dir):
        _run(grid, cfg, discovery)


def _import_round_loop() -> None:
    """The round loop (torch, the models, the data code), while the clients start.

    scikit-learn and flwr-datasets are not imported here: the ServerApp reads its data
    from ``client-data.npz`` when ``feddistill run``'s data checks wrote it, and imports
    them only to compute the data itself (:func:`feddistill.server.run_data.load_run_data`).
    """
    # torch.optim imports torch._dynamo on the first optimizer: ~0.85 s of the server's
    # first distillation, while the clients wait; taken here, during start-up
    import torch._dynamo  # noqa: F401

    import feddistill.server.loop  # noqa: F401


def _run(grid: Grid, cfg: RunConfig, discovery: Discovery | None = None) -> None:
    """The ServerApp's body; every way it stops leaves an error code in the run folder
    (``server-error.json``) or a summary.json, which the engines read.

    ``discovery``: the node -> partition query, if :func:`main` started it already.
    """
    _import_round_loop()
    from feddistill.server.loop import CheckpointMismatch, FederationRun, OutDirInUse
    from feddistill.server.recorder import RunRecorder

    try:
        FederationRun(cfg).run(grid, discovery)
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
