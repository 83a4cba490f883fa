"""Consoles for the command line: messages are never hard-wrapped.

Rich wraps printed text at the console width, and a console whose output is a pipe or
a file has a made-up width of 80 columns. A path or a command in a message must stay
copy-pastable and a round line must stay one line in a log, so every console of the
command line is made here with ``soft_wrap=True``: text goes out as printed, and only
an interactive terminal wraps long lines itself, at its real width.
"""

from __future__ import annotations

from typing import IO

from rich.console import Console

# Width of a console writing to a pipe or a file, used to lay out tables only (text is
# never wrapped): wide enough that no table of ours breaks its rows.
PIPE_WIDTH = 400


def make_console(stderr: bool = False, file: IO[str] | None = None) -> Console:
    """A rich console that never hard-wraps printed text.

    Args:
        stderr: write to standard error instead of standard output.
        file: write to this file instead (``stderr`` is then ignored).

    Returns:
        A console with ``soft_wrap=True``. Where the output is not a terminal its
        width is :data:`PIPE_WIDTH` so that tables keep one line per row; a terminal
        keeps its real width.
    """
    console = Console(stderr=stderr, file=file, soft_wrap=True)
    if not console.is_terminal:
        console = Console(stderr=stderr, file=file, soft_wrap=True, width=PIPE_WIDTH)
    return console
