"""Layers (ARCHITECTURE.md, "What may import what"): imports go down, never back up.

Each check imports in a fresh process, so nothing another test loaded counts: a child
interpreter that has loaded only the standard library, torch and numpy (every check loads
them; none is about them) forks once per check, so torch is imported once per module,
not once per check.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

LAUNCHERS = (
    "feddistill.engine",
    "feddistill.inprocess",
    "feddistill.deployment",
    "feddistill.cli",
    "feddistill.cluster",
    "feddistill.preflight",
    "feddistill.benchmarks",
)
CORE = (
    "feddistill.compression",
    "feddistill.distill",
    "feddistill.models",
    "feddistill.data",
    "feddistill.learn",
)
APPS = ("feddistill.server", "feddistill.clients")


# The child: loads torch and numpy, then for each line of code on stdin forks; the fork
# runs the code and writes its `sys.modules` names (or the error) as one JSON line.
FORK_SERVER = """
import json, os, sys
import numpy, torch
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            exec(json.loads(line), {"__name__": "__check__"})
            reply = {"modules": list(sys.modules)}
        except BaseException as exc:
            reply = {"error": repr(exc)}
        sys.stdout.write(json.dumps(reply) + "\\n")
        sys.stdout.flush()
        os._exit(0)
    os.waitpid(pid, 0)
"""


@pytest.fixture(scope="module")
def loaded_modules() -> Iterator[Callable[[str], list[str]]]:
    """``loaded_modules(code)``: names in ``sys.modules`` after running ``code`` in a fork."""
    child = subprocess.Popen(
        [sys.executable, "-c", FORK_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    stdin, stdout = child.stdin, child.stdout

    def run(code: str) -> list[str]:
        stdin.write(json.dumps(code) + "\n")
        stdin.flush()
        reply = json.loads(stdout.readline())
        assert "error" not in reply, f"{code!r} raised {reply.get('error')}"
        return reply["modules"]

    try:
        yield run
    finally:
        stdin.close()
        child.wait(timeout=60)


def within(names: list[str], packages: tuple[str, ...]) -> list[str]:
    """The names that are one of `packages` or inside one of them."""
    return sorted(
        m for m in names if m in packages or m.startswith(tuple(f"{p}." for p in packages))
    )


@pytest.mark.parametrize(
    ("app", "other_app"),
    [
        ("feddistill.server.app", "feddistill.clients"),
        ("feddistill.clients.app", "feddistill.server"),
    ],
)
def test_app_import_chain_loads_no_launcher_and_not_the_other_app(loaded_modules, app, other_app):
    # Execute
    loaded = loaded_modules(f"import {app}")

    # Assert
    assert app in loaded
    assert within(loaded, LAUNCHERS + (other_app,)) == []


def test_core_packages_load_no_flower_ray_app_or_launcher(loaded_modules):
    # Prepare: every module of the core packages, then the config and the protocol keys
    code = (
        "import importlib, pkgutil; "
        f"[importlib.import_module(i.name) for p in {CORE!r} "
        "for i in pkgutil.walk_packages(importlib.import_module(p).__path__, p + '.')]; "
        "import feddistill.config, feddistill.protocol"
    )

    # Execute
    loaded = loaded_modules(code)

    # Assert: flwr_datasets (the partitioners' interface) is allowed, the Flower runtime not
    assert "feddistill.compression.ptq" in loaded and "feddistill.learn.fit" in loaded
    assert within(loaded, ("flwr", "ray")) == []
    assert within(loaded, APPS + LAUNCHERS) == []


@pytest.mark.parametrize(
    "package",
    ["feddistill.compression", "feddistill.distill", "feddistill.models", "feddistill.data"],
)
def test_ground_floor_core_package_loads_no_other_core_package(loaded_modules, package):
    # Prepare: every module of `package`
    code = (
        "import importlib, pkgutil; "
        f"[importlib.import_module(i.name) for i in pkgutil.walk_packages("
        f"importlib.import_module({package!r}).__path__, {package!r} + '.')]"
    )

    # Execute
    loaded = loaded_modules(code)

    # Assert: compression, distill, models and data stand side by side below learn
    others = tuple(p for p in CORE if p != package)
    assert within(loaded, others) == []
