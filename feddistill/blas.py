"""One OpenBLAS thread in every process that runs the apps, so a fork cannot hang BLAS.

OpenBLAS (the BLAS inside numpy's and SciPy's wheels) registers a ``pthread_atfork``
handler that stops its worker threads in the *parent* before every ``fork()``. A BLAS call
that another thread of the same process has handed to those workers then waits for them
forever (``exec_blas_async_wait`` spinning at 100% of a core). Flower's simulation runs the
ServerApp in a thread of the process that starts Ray, and ``ray.init`` starts its GCS,
raylet, dashboard and monitors with ``subprocess.Popen(preexec_fn=...)``, which is a real
``fork()``: the ServerApp's PCA of the proxy set (SciPy's QR) hung that way at
"loading data" on a 2-core machine (seen in session 23). With one thread OpenBLAS runs a
call in the calling thread and has no workers to lose.

One thread also makes numpy and SciPy results independent of the core count. The
models' own work is torch's (its MKL and OpenMP pools are not affected; torch's thread
count follows ``client-num-cpus``).
"""

from __future__ import annotations

import os

from threadpoolctl import threadpool_limits

ENV = "OPENBLAS_NUM_THREADS"


def single_threaded_blas() -> None:
    """Limit every OpenBLAS of this process to one thread, now and for those loaded later.

    Sets ``OPENBLAS_NUM_THREADS=1`` (an OpenBLAS reads it when its library loads, e.g.
    SciPy's on first import) and limits the BLAS libraries already loaded through
    threadpoolctl. Processes started afterwards inherit the variable. Idempotent.
    """
    os.environ[ENV] = "1"
    threadpool_limits(limits=1, user_api="blas")
