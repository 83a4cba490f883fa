"""Layers (ARCHITECTURE.md, "What may import what"): imports go down, never back up.

Each test imports in a fresh interpreter, so nothing another test loaded counts.
"""

from __future__ import annotations

import subprocess
import sys

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


def loaded_modules(code: str) -> list[str]:
    """Names in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    code += "; print(' '.join(sys.modules))"
    return subprocess.run(
        [sys.executable, "-c", f"import sys; {code}"], capture_output=True, text=True, check=True
    ).stdout.split()


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
def test_app_import_chain_loads_no_launcher_and_not_the_other_app(app, other_app):
    # Execute
    loaded = loaded_modules(f"import {app}")

    # Assert
    assert app in loaded
    assert within(loaded, LAUNCHERS + (other_app,)) == []


def test_core_packages_load_no_flower_ray_app_or_launcher():
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
def test_ground_floor_core_package_loads_no_other_core_package(package):
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
