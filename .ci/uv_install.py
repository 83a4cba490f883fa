"""Install requirements into this interpreter's environment with uv, configured as pip is.

`make`'s set-up runs ``.venv/bin/python .ci/uv_install.py -e '.[dev]'``: the same
packages as ``pip install -e '.[dev]'`` (measured on the 2-core CI machine: the same
143 versions), in about 30 s instead of about 2 minutes (uv unpacks wheels in parallel
and skips the bytecode pass; Python writes the ``.pyc`` files of what it imports).

uv does not read pip's configuration, so the options pip would use here (its config
files and ``PIP_*`` variables: index URLs, find-links, constraints, certificate, trusted
hosts) are read from pip itself at run time and passed to uv, with
``--index-strategy unsafe-best-match``, pip's rule (the best version over all indexes).
Nothing machine-specific is written down here. uv's cache is ``UV_CACHE_DIR`` when set,
else ``<venv>/.uv-cache``: on the venv's file system, so files are hard-linked, not copied.

The Makefile falls back to ``pip install`` when this exits non-zero (uv missing or
failing), so a machine where uv cannot run still gets its environment.

References:
    pip's configuration: https://pip.pypa.io/en/stable/topics/configuration/
    uv's pip interface: https://docs.astral.sh/uv/pip/compatibility/
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def pip_install_options() -> Any:
    """pip's effective ``install`` options: its config files and ``PIP_*`` variables merged.

    Returns:
        The options object of ``pip install`` parsed from no arguments (attributes
        ``index_url``, ``extra_index_urls``, ``find_links``, ``constraints``, ``cert``,
        ``no_index``, ``trusted_hosts``).
    """
    from pip._internal.commands import create_command

    options, _ = create_command("install").parse_args([])
    return options


def uv_arguments(options: Any) -> list[str]:
    """uv ``pip install`` arguments that give uv pip's sources and constraints.

    Args:
        options: pip's install options (as from `pip_install_options`).

    Returns:
        Arguments for ``uv pip install``: ``--index-url``, one ``--extra-index-url`` and
        ``--find-links`` per entry, ``--constraint`` per file, ``--no-index`` when set,
        ``--allow-insecure-host`` per trusted host, and pip's index strategy.
    """
    args = ["--index-strategy", "unsafe-best-match"]
    if options.no_index:
        args.append("--no-index")
    elif options.index_url:
        args += ["--index-url", options.index_url]
    for url in options.extra_index_urls or []:
        args += ["--extra-index-url", url]
    for location in options.find_links or []:
        args += ["--find-links", location]
    for path in options.constraints or []:
        args += ["--constraint", path]
    for host in options.trusted_hosts or []:
        args += ["--allow-insecure-host", host]
    return args


def uv_environment(options: Any, environ: dict[str, str], venv: Path) -> dict[str, str]:
    """The environment uv runs in: pip's certificate bundle and a cache beside the venv.

    Args:
        options: pip's install options (``cert``: a CA bundle path or None).
        environ: the current environment; values already set there are kept.
        venv: the virtual environment being installed into.

    Returns:
        A copy of `environ` with ``SSL_CERT_FILE`` (pip's ``cert``, when pip has one and
        it is not set) and ``UV_CACHE_DIR`` (``venv/.uv-cache`` when not set).
    """
    env = dict(environ)
    if options.cert and "SSL_CERT_FILE" not in env:
        env["SSL_CERT_FILE"] = options.cert
    env.setdefault("UV_CACHE_DIR", str(venv / ".uv-cache"))
    return env


def main(argv: list[str]) -> int:
    """Run ``uv pip install *argv`` into this interpreter's environment; uv's exit code."""
    options = pip_install_options()
    venv = Path(sys.prefix)
    command = [sys.executable, "-m", "uv", "pip", "install", "--python", sys.executable]
    command += uv_arguments(options) + argv
    return subprocess.call(command, env=uv_environment(options, dict(os.environ), venv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
