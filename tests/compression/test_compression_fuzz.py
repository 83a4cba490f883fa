"""Fuzz the wire decoder (issue 8, section 4): byte flips, truncations, and records with
a valid checksum but hostile sizes, shapes and bit widths. Every case either raises
CodecError or decodes to tensors of the expected shapes, and the process's resident
memory never grows by more than a small bound (the server's expected shapes cap every
allocation)."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from feddistill.compression import CodecError, CompressionSpec, compress_update, decode_tensors
from feddistill.compression.codec import pack_payload

TEMPLATE = {
    "conv.weight": torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0)),
    "conv.bias": torch.randn(8, generator=torch.Generator().manual_seed(1)),
    "fc.weight": torch.randn(10, 72, generator=torch.Generator().manual_seed(2)),
    "bn.num_batches_tracked": torch.tensor(7),
}
EXPECTED = {k: tuple(v.shape) for k, v in TEMPLATE.items()}
SPECS = [
    CompressionSpec(bit_width=32),
    CompressionSpec(bit_width=16),
    CompressionSpec(bit_width=4),  # dense, per-channel scales
    CompressionSpec(bit_width=1),
    CompressionSpec(density=0.05, bit_width=4),  # Rice index
    CompressionSpec(density=0.3, bit_width=8),  # bitmap index
    CompressionSpec(density=0.05, bit_width=32),
]
PEAK_GROWTH_LIMIT = 64 * 2**20  # bytes of resident memory the fuzz may add
EXPECTED_BYTES = sum(math.prod(s) for s in EXPECTED.values()) * 8  # float32 + int64 bound
HOSTILE_DIMS = [0, 1, 3, 8, 72, 2**16, 2**28, 2**31, 2**32 - 1]
HOSTILE_BITS = [0, 1, 2, 3, 4, 8, 16, 32, 64, 255]
HOSTILE_COUNTS = [0, 1, 5, 288, 2**31, 2**63 - 1]


def _valid_payloads() -> list[bytes]:
    gen = torch.Generator().manual_seed(3)
    return [compress_update(TEMPLATE, spec, generator=gen)[0] for spec in SPECS]


def _with_crc(record: bytes) -> bytes:
    """A header with the right length and count and a valid crc32 around one record."""
    return pack_payload([record])


def _hostile_record(rng: np.random.Generator) -> bytes:
    """One record with plausible framing and hostile sizes, shapes, kinds, bit widths."""
    name = str(rng.choice([*EXPECTED, "extra"])).encode()
    if rng.random() < 0.5 and name.decode() in EXPECTED:
        shape = EXPECTED[name.decode()]
    else:
        shape = tuple(int(rng.choice(HOSTILE_DIMS)) for _ in range(int(rng.integers(0, 5))))
    kind = int(rng.choice([0, 1, 1, 1, 7]))
    head = struct.pack("<H", len(name)) + name
    head += struct.pack(f"<BB{len(shape)}IB", int(rng.integers(0, 11)), len(shape), *shape, kind)
    tail = rng.integers(0, 256, size=int(rng.integers(0, 96)), dtype=np.uint8).tobytes()
    if kind == 0:
        nbytes = int(rng.choice([len(tail), *HOSTILE_COUNTS]))
        return head + struct.pack("<Q", nbytes) + tail
    meta = struct.pack(
        "<BBBbQBI",
        int(rng.choice(HOSTILE_BITS)),
        int(rng.integers(0, 4)),
        int(rng.integers(0, 2)),
        int(rng.integers(-3, 5)),
        int(rng.choice(HOSTILE_COUNTS)),
        int(rng.integers(0, 80)),
        int(rng.choice([0, 1, 8, 10, 2**20, 2**32 - 1])),
    )
    if rng.random() < 0.5:  # a hostile index size inside the tail
        tail = struct.pack("<Q", int(rng.choice(HOSTILE_COUNTS))) + tail
    return head + meta + tail


def _check(payload: bytes, expected: dict | None = EXPECTED) -> str:
    """'error' for CodecError, 'ok' for a result of the expected shapes; anything else fails."""
    try:
        out = decode_tensors(payload, expected)
    except CodecError:
        return "error"
    for name, tensor in out.items():
        assert expected is not None and tuple(tensor.shape) == expected[name], (name, tensor.shape)
    assert sum(t.numel() * t.element_size() for t in out.values()) <= EXPECTED_BYTES
    return "ok"


def _resident_peak_reset() -> int | None:
    """Reset the kernel's peak-RSS mark (Linux); the current RSS in bytes, or None."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_bytes("VmRSS")
    except OSError:
        return None


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def test_decoder_fuzz_only_codec_errors_or_expected_tensors_in_bounded_memory() -> None:
    # Prepare: 7 valid payloads; a seeded stream of mutations.
    rng = np.random.default_rng(2024)
    payloads = _valid_payloads()
    originals = [decode_tensors(p, EXPECTED) for p in payloads]
    counts = {"flip": 0, "truncate": 0, "crc-valid-flip": 0, "hostile-record": 0}
    outcomes = {"error": 0, "ok": 0}
    rss_before = _resident_peak_reset()

    # Execute
    for _ in range(1500):  # byte flips: the checksum catches every one
        payload = bytearray(payloads[int(rng.integers(len(payloads)))])
        for pos in rng.integers(0, len(payload), size=int(rng.integers(1, 4))):
            payload[pos] ^= int(rng.integers(1, 256))
        with pytest.raises(CodecError):
            decode_tensors(bytes(payload), EXPECTED)
        counts["flip"] += 1
    for _ in range(500):  # truncations
        payload = payloads[int(rng.integers(len(payloads)))]
        with pytest.raises(CodecError):
            decode_tensors(payload[: int(rng.integers(0, len(payload)))])
        counts["truncate"] += 1
    for _ in range(2000):  # flips inside the records, checksum recomputed
        index = int(rng.integers(len(payloads)))
        body = bytearray(payloads[index][18:-4])
        for pos in rng.integers(0, len(body), size=int(rng.integers(1, 4))):
            body[pos] ^= int(rng.integers(1, 256))
        framed = payloads[index][:18] + bytes(body)
        framed += struct.pack("<I", zlib.crc32(framed))
        outcomes[_check(framed)] += 1
        counts["crc-valid-flip"] += 1
    for _ in range(2000):  # hand-built hostile records, checksum valid
        outcomes[_check(_with_crc(_hostile_record(rng)))] += 1
        counts["hostile-record"] += 1
    peak_growth = None
    if rss_before is not None:
        peak_growth = _status_bytes("VmHWM") - rss_before

    # Assert: 6,000 cases; the unmodified payloads still decode to the same tensors.
    assert sum(counts.values()) == 6000
    assert outcomes["error"] > 0
    for payload, original in zip(payloads, originals, strict=True):
        again = decode_tensors(payload, EXPECTED)
        assert all(torch.equal(again[k], original[k]) for k in original)
    if peak_growth is not None:
        assert peak_growth < PEAK_GROWTH_LIMIT, f"peak RSS grew by {peak_growth} bytes"
