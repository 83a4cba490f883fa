"""The ServerApp's admission gate and the engine's held log (data checks overlapping start-up)."""

from __future__ import annotations

import threading
import time

import pytest

from feddistill.engine import HeldLog
from feddistill.server.admission import ADMIT_ENV, wait_for_admission


def test_no_admission_file_named_means_no_wait(monkeypatch) -> None:
    monkeypatch.delenv(ADMIT_ENV, raising=False)
    wait_for_admission(timeout_s=0.0)  # returns at once


def test_the_server_waits_until_the_engine_admits_it(tmp_path, monkeypatch) -> None:
    # Prepare: the engine creates the file a little later
    admit = tmp_path / "admitted"
    monkeypatch.setenv(ADMIT_ENV, str(admit))
    timer = threading.Timer(0.3, admit.touch)
    timer.start()
    # Execute
    t0 = time.monotonic()
    wait_for_admission(timeout_s=30)
    # Assert
    assert admit.exists() and time.monotonic() - t0 >= 0.25


def test_an_admission_that_never_comes_times_out_naming_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(ADMIT_ENV, str(tmp_path / "never"))
    with pytest.raises(TimeoutError, match="never"):
        wait_for_admission(timeout_s=0.1)


def test_held_log_writes_nothing_before_it_is_given_its_file(tmp_path) -> None:
    # Prepare
    path = tmp_path / "flower.log"
    with HeldLog() as log:
        log.write(b"superlink line\n")
        # Assert: held, not written
        assert not path.exists()
        assert log.tail() == "superlink line"
        # Execute: the out-dir is ours now
        log.write_to(path)
        log.write(b"simulation line\n")
    # Assert: what was held comes first, in order
    assert path.read_bytes() == b"superlink line\nsimulation line\n"
