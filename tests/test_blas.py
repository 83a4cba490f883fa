"""A fork in one thread must not hang a BLAS call in another (feddistill.blas).

Each case runs in a fresh interpreter (the BLAS libraries' thread pools are
process-wide) with ``OPENBLAS_NUM_THREADS=2`` as on a 2-core machine, whatever the
core count here: a worker thread runs SciPy's QR and numpy's matrix product in a loop
while the main thread forks (``subprocess`` with ``preexec_fn``, as ``ray.init`` does).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import subprocess, sys, threading, time
    import numpy as np
    if sys.argv[1] == "apps":
        import feddistill.server.app  # noqa: F401  (applies feddistill.blas on import)
        import feddistill.clients.app  # noqa: F401
    elif sys.argv[1] == "helper":
        from feddistill.blas import single_threaded_blas
        single_threaded_blas()
    import scipy.linalg
    from threadpoolctl import threadpool_info
    print("blas threads:", sorted({i["num_threads"] for i in threadpool_info()
                                    if i["user_api"] == "blas"}), flush=True)
    calls = [0]
    def work():
        a = np.random.default_rng(0).standard_normal((600, 300))
        while True:
            scipy.linalg.qr(a, mode="economic")
            a @ a.T
            calls[0] += 1
    threading.Thread(target=work, daemon=True).start()
    for _ in range(150):
        subprocess.run(["true"], preexec_fn=lambda: None, check=True)
    seen = calls[0]
    deadline = time.monotonic() + 20
    while calls[0] < seen + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    print("calls after forks:", calls[0] - seen, flush=True)
    import os
    os._exit(0 if calls[0] >= seen + 3 else 3)
    """
)


def _run_child(mode: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    return subprocess.run(
        [sys.executable, "-c", CHILD, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("mode", ["helper", "apps"])
def test_fork_does_not_hang_blas_in_another_thread(mode: str) -> None:
    try:
        proc = _run_child(mode)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"BLAS or fork hung with mode {mode!r}: {exc.stdout!r} {exc.stderr!r}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "blas threads: [1]" in proc.stdout, proc.stdout


def test_helper_sets_env_for_libraries_loaded_later(monkeypatch: pytest.MonkeyPatch) -> None:
    from feddistill import blas

    monkeypatch.setenv(blas.ENV, "8")
    monkeypatch.setattr(blas, "threadpool_limits", lambda **kw: None)
    blas.single_threaded_blas()
    assert os.environ[blas.ENV] == "1"
