"""Write a file atomically: a reader sees the old content or the new one, never a part.

The one place that writes a temporary file next to the target and renames it over the
target (``os.replace``, atomic on POSIX within one file system). Used for every file a
run rewrites while others may read it: metrics, summary, checkpoints, client state,
timings.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename.

    The temporary file is ``.<name>.<random>.tmp`` in ``path``'s folder (so the rename
    stays on one file system) and is removed if writing fails. The folder must exist.

    Args:
        path: the file to create or replace.
        data: its new content.

    Raises:
        OSError: if the folder does not exist or cannot be written; `path` is then
            unchanged and no temporary file is left.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` of `text` encoded as UTF-8.

    Raises:
        OSError: as :func:`atomic_write_bytes`.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to `path` atomically (serialized in memory, then written).

    Raises:
        OSError: as :func:`atomic_write_bytes`.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())
