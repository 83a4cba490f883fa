"""release_free_heap: glibc's malloc_trim after a round gives freed heap pages back."""

from __future__ import annotations

import ctypes

import pytest

from feddistill import heap


def test_freed_heap_memory_is_released() -> None:
    lib = heap._libc()
    if lib is None:
        pytest.skip("this C library has no malloc_trim (not glibc)")
    # Prepare: 64 MiB in 64 KiB blocks (below glibc's mmap threshold: heap memory), freed
    lib.malloc.restype = ctypes.c_void_p
    lib.free.argtypes = [ctypes.c_void_p]
    blocks = [lib.malloc(64 * 1024) for _ in range(1024)]
    assert all(blocks)
    for block in blocks:
        lib.free(block)
    # Execute / Assert: glibc reports that it gave memory back
    assert heap.release_free_heap() is True


def test_without_malloc_trim_nothing_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_libc", lambda: None)
    assert heap.release_free_heap() is False
