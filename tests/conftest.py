"""Suite-wide settings: property tests draw the same examples on every run (CI stays
deterministic); `--hypothesis-seed` or HYPOTHESIS_PROFILE=explore explore further.
Test files run longest first, by tests/durations.json (for the parallel workers of
`make test`); `make durations` measures that table again."""

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("default", derandomize=True)
settings.register_profile("explore", max_examples=2000, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


DURATIONS = Path(__file__).with_name("durations.json")
# Seconds assumed for a file the table does not list yet: one holding a `slow` test is
# placed among the long ones, any other after every listed file.
UNLISTED_SLOW_S = 60.0
UNLISTED_S = 0.0


def pytest_addoption(parser):
    parser.addoption(
        "--write-durations",
        metavar="PATH",
        default=None,
        help="write each test file's seconds (setup + call + teardown, summed) to PATH as JSON",
    )


def file_order_key(seconds: dict[str, float], slow_files: set[str]):
    """Sort key of a test file: its measured seconds, longest first.

    Args:
        seconds: seconds per file path relative to the repository root (``tests/...``),
            as in tests/durations.json.
        slow_files: files holding a test marked ``slow``.

    Returns:
        A function of a file path giving a key for `sorted` (ascending: longest first);
        a file missing from `seconds` counts `UNLISTED_SLOW_S` if in `slow_files`,
        else `UNLISTED_S`.
    """

    def key(path: str) -> float:
        default = UNLISTED_SLOW_S if path in slow_files else UNLISTED_S
        return -seconds.get(path, default)

    return key


def pytest_collection_modifyitems(items):
    """Test files run longest first (tests/durations.json), each file's tests in their order.

    Under pytest-xdist (``make test``: ``--dist loadfile --no-loadscope-reorder``) files
    are handed out in this order, so the long runs start early and the short files fill
    in at the end: the workers finish close together instead of one starting a long file
    when the others are done. (Without ``--no-loadscope-reorder`` xdist re-sorts files
    by their number of tests, and the long single-test files came last.) Whole files
    move, so a module-scoped fixture is still set up once. The sort is stable: files
    of equal key keep the order they were collected in.
    """
    seconds = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    slow_files = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    key = file_order_key(seconds, slow_files)
    items.sort(key=lambda item: key(item.nodeid.split("::")[0]))


_file_seconds: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    """Add each phase's seconds to its file (with xdist: in the controller, from every worker)."""
    _file_seconds[report.nodeid.split("::")[0]] += report.duration


def pytest_sessionfinish(session):
    """With ``--write-durations PATH``: write the files' seconds there, longest first."""
    path = session.config.getoption("--write-durations")
    if path and not hasattr(session.config, "workerinput"):  # the controller only
        table = sorted(_file_seconds.items(), key=lambda kv: -kv[1])
        text = json.dumps({name: round(secs, 1) for name, secs in table}, indent=1)
        Path(path).write_text(text + "\n")


@pytest.fixture
def data_checks_recorded(monkeypatch):
    """`feddistill run`'s data checks recorded instead of run: the configs they were given.

    For tests of the CLI's wiring around a faked ``run_job``: the real checks start a
    child that imports torch and loads the data (~10 s each on 2 cores); they are tested
    in tests/test_preflight.py and run for real in every e2e test.
    """
    from feddistill import preflight

    seen: list = []
    monkeypatch.setattr(preflight, "run_data_checks", lambda cfg, **kw: seen.append(cfg))
    return seen
