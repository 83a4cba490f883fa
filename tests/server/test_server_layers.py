"""Layers: what the ServerApp imports never loads a launcher."""

from __future__ import annotations

import subprocess
import sys

LAUNCHERS = (
    "feddistill.engine",
    "feddistill.inprocess",
    "feddistill.deployment",
    "feddistill.cli",
    "feddistill.cluster",
    "feddistill.preflight",
)


def test_serverapp_import_chain_loads_no_launcher():
    # Prepare: a fresh interpreter, so that nothing else imported them first
    code = (
        "import sys, feddistill.server.app; "
        "print(' '.join(m for m in sys.modules if m.startswith('feddistill')))"
    )
    # Execute
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    # Assert
    assert "feddistill.server.loop" in loaded
    assert [
        m for m in loaded if m in LAUNCHERS or m.startswith(tuple(f"{x}." for x in LAUNCHERS))
    ] == []
