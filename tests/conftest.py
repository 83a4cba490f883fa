"""Suite-wide settings: property tests draw the same examples on every run (CI stays
deterministic); `--hypothesis-seed` or HYPOTHESIS_PROFILE=explore explore further.
Modules with slow tests are collected first (for the parallel workers of `make test`)."""

import contextlib
import os

import pytest
from hypothesis import settings

settings.register_profile("default", derandomize=True)
settings.register_profile("explore", max_examples=2000, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Ray starts its worker processes (tasks, Flower's client actors) at nice 15
# (`worker_niceness`), below its own daemons. In this suite the other pytest worker's
# processes run beside them at nice 0, and a nice-15 worker then gets a few percent of
# a core: with 8 busy loops on 2 cores the first task of a fresh Ray took 159 s instead
# of 2.4 s (CI failed on it: test_gpu_task_runs_on_the_gpu_node, 120 s timeout). Every
# Ray this suite starts (ray.init here, `ray start`, `flwr run`'s simulation) reads the
# variable from the environment its daemons inherit.
os.environ.setdefault("RAY_worker_niceness", "0")


def pytest_collection_modifyitems(items):
    """Modules holding a `slow` test run first, each module's tests kept in their order.

    Without pytest-xdist this is the run's order. ``make test`` (3 workers, ``--dist
    loadfile --no-loadscope-reorder``) hands whole files to the workers in this order,
    so the long single-test files start first instead of ending on one worker (see the
    Makefile's note). Whole modules move, so a module-scoped fixture is still set up
    once.
    """
    slow_modules = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow_modules)


@pytest.fixture
def data_checks_recorded(monkeypatch):
    """`feddistill run`'s data checks recorded instead of run: the configs they were given.

    For tests of the CLI's wiring around a faked ``run_job``: the real checks start a
    child that imports torch and loads the data (~10 s each on 2 cores); they are tested
    in tests/test_preflight.py and run for real in every e2e test.
    """
    from feddistill import preflight

    class Recorded(contextlib.nullcontext):
        def wait(self) -> None:
            pass

    seen: list = []
    monkeypatch.setattr(preflight, "run_data_checks", lambda cfg, **kw: seen.append(cfg))
    # the simulation engine's checks run while the runtime starts (start_data_checks)
    monkeypatch.setattr(
        preflight, "start_data_checks", lambda cfg, **kw: seen.append(cfg) or Recorded()
    )
    return seen
