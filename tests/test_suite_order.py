"""tests/conftest.py: test files are ordered longest first by the measured table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")


def load_conftest():
    spec = importlib.util.spec_from_file_location("suite_conftest", CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_files_sort_longest_first_with_unlisted_slow_files_among_the_long_ones():
    # Prepare: a 100 s and a 10 s file listed; an unlisted slow file counts 60 s, an
    # unlisted other file 0 s
    conftest = load_conftest()
    seconds = {"tests/a.py": 10.0, "tests/b.py": 100.0}
    key = conftest.file_order_key(seconds, slow_files={"tests/new_slow.py"})
    files = ["tests/new_fast.py", "tests/a.py", "tests/new_slow.py", "tests/b.py"]
    # Execute
    ordered = sorted(files, key=key)
    # Assert
    assert ordered == ["tests/b.py", "tests/new_slow.py", "tests/a.py", "tests/new_fast.py"]


def test_durations_table_lists_only_existing_test_files():
    # Prepare: the checked-in table (a renamed file would silently lose its place)
    conftest = load_conftest()
    root = CONFTEST.parent.parent
    table = conftest.json.loads(conftest.DURATIONS.read_text())
    # Execute
    missing = [name for name in table if not (root / name).is_file()]
    # Assert
    assert missing == []
