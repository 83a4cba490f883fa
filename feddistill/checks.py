"""Value checks with error messages that name the key, the value and what is allowed."""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Any


def check_choice(key: str, value: Any, allowed: Sequence[Any]) -> None:
    """Check that `value` is one of `allowed`.

    Raises:
        ValueError: ``key=value is not allowed; choose one of: ...``, with the closest
            allowed names when `value` looks like a misspelling of one of them.
    """
    if value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=2, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise ValueError(
            f"{key}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}{hint}"
        )


def check_range(
    key: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Check that `value` is finite and in the interval; `*_open` excludes that end.

    Args:
        key: the config key (snake_case or kebab-case; the message uses kebab-case).
        value: the number to check.
        low: the lower end, or None for -inf.
        high: the upper end, or None for inf.
        low_open: exclude `low` itself.
        high_open: exclude `high` itself.

    Raises:
        ValueError: ``key=value is not a finite number`` or ``key=value is out of
            range; allowed: [low, high)`` (brackets as the ends are in or out).
    """
    name = key.replace("_", "-")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name}={value!r} is not a finite number")
    bad = (low is not None and (value < low or (low_open and value == low))) or (
        high is not None and (value > high or (high_open and value == high))
    )
    if bad:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        interval = (
            f"{'(' if low_open else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        )
        raise ValueError(f"{name}={value!r} is out of range; allowed: {interval}")


def check_open_unit(key: str, value: float) -> None:
    """:func:`check_range` on the open interval (0, 1).

    Raises:
        ValueError: as :func:`check_range`.
    """
    check_range(key, value, low=0.0, high=1.0, low_open=True, high_open=True)
