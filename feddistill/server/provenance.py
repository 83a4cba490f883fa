"""What a reader needs to reproduce a run: the command, the versions, the machine."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from feddistill.config import RunConfig
from feddistill.run_folder import RunFolder

COMMAND_FILE = RunFolder.COMMAND  # the command line as typed, written by `feddistill run`
PACKAGES = ("feddistill", "flwr", "torch", "ray")
# keys that say where things are on this machine, not what was run
LOCAL_KEYS = ("out-dir", "data-root", "resume")


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each package ("not installed" when missing), and Python's."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """OS, CPU model and core count, and the CUDA GPUs torch sees ("none" without)."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "os": f"{platform.system()} {platform.release()}",
        "cpu": f"{cpu_model()} ({os.cpu_count()} logical cores)",
        "gpu": ", ".join(gpus) if gpus else "none",
    }


def equivalent_command(config: Mapping[str, Any]) -> str:
    """A ``feddistill run`` command that repeats the run from its config.

    Args:
        config: the run's kebab-case config (``summary["config"]``).

    Returns:
        ``feddistill run --out DIR --set key=value ...`` with one ``--set`` per key that
        differs from the default, in key order (paths quoted for a POSIX shell).
    """
    defaults = RunConfig().to_kebab()
    parts = ["feddistill", "run", "--out", shlex.quote(str(config.get("out-dir", "")))]
    for key in sorted(config):
        if key in LOCAL_KEYS or key not in defaults or config[key] == defaults[key]:
            continue
        value = config[key]
        if isinstance(value, bool):
            literal = "true" if value else "false"
        elif isinstance(value, str):
            literal = value if _reads_back_as_string(value) else json.dumps(value)
        else:
            literal = str(value)
        parts += ["--set", shlex.quote(f"{key}={literal}")]
    return " ".join(parts)


def save_command(out_dir: Path, argv: list[str]) -> None:
    """Write the command line as typed to ``<out_dir>/command.txt``."""
    (Path(out_dir) / COMMAND_FILE).write_text(shlex.join(argv) + "\n")


def typed_command(out_dir: Path) -> str | None:
    """The command line `save_command` recorded in `out_dir`, or None."""
    path = Path(out_dir) / COMMAND_FILE
    return path.read_text().strip() if path.is_file() else None


def _reads_back_as_string(value: str) -> bool:
    """True if ``--set key=value`` gives back `value` itself (it is no TOML literal)."""
    if not value:
        return False
    try:
        tomllib.loads(f"v = {value}")
    except tomllib.TOMLDecodeError:
        return True
    return False
