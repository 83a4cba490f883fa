"""Give the C heap's free pages back to the OS between rounds (glibc ``malloc_trim``).

glibc keeps freed heap memory in the process for reuse. Fixing its mmap and trim
thresholds low (``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``) returned it at
every ``free`` but made each tensor above the threshold a fresh ``mmap`` whose pages
were faulted in again: client training ran ~1.8x slower (issue 13, session 25). One
``malloc_trim(0)`` after a round returns what the round freed, once, at a moment the
process is idle, and costs milliseconds.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any


@functools.cache
def _libc() -> Any:
    # the symbols already loaded into this process (the C library among them): no
    # `ctypes.util.find_library`, which runs `ldconfig` in a subprocess
    lib = ctypes.CDLL(None)
    return lib if hasattr(lib, "malloc_trim") else None


def release_free_heap() -> bool:
    """Return the free pages of this process's C heap to the OS.

    Returns:
        True if glibc released memory, False if it had none to release or the C library
        has no ``malloc_trim`` (musl, macOS: nothing is done).
    """
    lib = _libc()
    return bool(lib.malloc_trim(0)) if lib is not None else False
