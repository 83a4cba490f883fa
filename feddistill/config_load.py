"""Loading a run config from where a user types it: a TOML file and ``--set`` pairs.

:mod:`feddistill.config` owns the keys, their types and ranges (:func:`from_mapping`);
this module only reads the file and the ``key=value`` strings and hands them on.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feddistill.config import RunConfig, from_mapping


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings (values as TOML literals, else plain strings).

    Raises:
        ValueError: if an item has no ``=``.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out


def read_config_table(path: str | Path) -> dict[str, Any]:
    """The kebab-case keys of a TOML file: top-level keys or ``[tool.flwr.app.config]``.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the file is not valid TOML (the message names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {str(p)!r} is not valid TOML: {exc}") from None
    return dict(data.get("tool", {}).get("flwr", {}).get("app", {}).get("config", data))


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), base: RunConfig | None = None
) -> RunConfig:
    """`base` (the defaults if None), then a TOML file's keys, then ``key=value`` overrides.

    Args:
        path: a TOML file (see :func:`read_config_table`), or None.
        overrides: ``key=value`` strings applied last.
        base: the config the file and overrides change.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: see :func:`read_config_table` and :func:`from_mapping`.
    """
    cfg = base or RunConfig()
    if path is not None:
        cfg = from_mapping(read_config_table(path), cfg)
    return from_mapping(parse_overrides(overrides), cfg)
