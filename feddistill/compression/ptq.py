"""int8 post-training quantization and export of the deployable student (CPU).

Choice of flow (torch 2.14.1, no network): ``torch.ao.quantization`` FX graph mode with
the ``x86`` backend (fbgemm / oneDNN int8 kernels), calibrated on the proxy set, then
traced, frozen and saved as one TorchScript file.

* It runs with what the project already depends on; torchao (PT2E, its successor)
  would be a new dependency.
* The converted model executes real int8 kernels in eager mode, so it is faster than
  fp32 without compiling; PT2E's converted model only speeds up after
  ``torch.compile`` with inductor freezing (a C++ toolchain and tens of seconds on 2
  cores) and otherwise runs dequantize -> fp32 ops.
* The saved file holds only packed int8 weights (+ fp32 biases and scales); a PT2E
  export keeps the fp32 weights next to the int8 ones unless they are stripped.
* The file is self-contained: :func:`load_student` needs no model code.

Its cost: ``torch.ao.quantization`` and ``torch.jit`` are deprecated and warn on every
call. Only those specific messages are silenced, and only around the calls here, so
that a user's log is not flooded by warnings about an internal choice they cannot act
on; other warnings still show. Moving to torchao PT2E is the planned migration once
``torch.ao.quantization`` is removed.

References:
    Jacob et al., Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference, arXiv:1712.05877.
    Han et al., Deep Compression, arXiv:1510.00149.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import statistics
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from feddistill.compression.pruning import prune_unstructured
from feddistill.compression.report import state_dict_bytes
from feddistill.threads import torch_threads

STUDENT_FILE = "student_int8.pt"
STUDENT_ZLIB_FILE = "student_int8.pt.zlib"  # the same file, zlib level 9 (sparse exports)
METADATA_FILE = "metadata.json"
README_FILE = "README.md"

# Deprecation notices of torch.ao.quantization / torch.jit / quantized tensors (see above).
_SILENCED = (
    (DeprecationWarning, r"torch\.ao\.quantization is deprecated"),
    (UserWarning, r"Please use quant_min and quant_max"),
    (UserWarning, r"torch\.quantize_per_tensor, torch\.quantize_per_channel"),
    (FutureWarning, r"`torch\.jit\.\w+` is deprecated"),
)


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    with warnings.catch_warnings():
        for category, message in _SILENCED:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def _set_engine() -> str:
    engines = torch.backends.quantized.supported_engines
    engine = next((e for e in ("x86", "fbgemm", "onednn", "qnnpack") if e in engines), None)
    if engine is None:
        raise RuntimeError(f"no int8 CPU backend among {engines}")
    torch.backends.quantized.engine = engine
    return engine


def quantize_int8(model: nn.Module, proxy_x: Tensor, batch_size: int = 256) -> nn.Module:
    """Static int8 PTQ (weights per channel, activations per tensor), FX graph mode.

    Args:
        model: fp32 network; not modified (a copy is quantized).
        proxy_x: calibration inputs, shape (N, C, H, W); labels are not needed.
        batch_size: calibration batch size.

    Returns:
        The converted ``GraphModule`` (CPU, eval mode) running int8 kernels.

    Raises:
        RuntimeError: if torch has no int8 CPU backend.

    References:
        Jacob et al., arXiv:1712.05877.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engine = _set_engine()
    fp32 = copy.deepcopy(model).cpu().eval()
    with _quiet_deprecations(), torch.no_grad():
        prepared = prepare_fx(fp32, get_default_qconfig_mapping(engine), (proxy_x[:1],))
        for start in range(0, len(proxy_x), batch_size):
            prepared(proxy_x[start : start + batch_size])
        return convert_fx(prepared)


def save_int8(quantized: nn.Module, example: Tensor, path: str | Path) -> None:
    """Trace, freeze and save a converted model as one TorchScript file."""
    with _quiet_deprecations(), torch.no_grad():
        traced = torch.jit.freeze(torch.jit.trace(quantized, example).eval())
        torch.jit.save(traced, str(path))


def load_student(out_dir: str | Path) -> Callable[[Tensor], Tensor]:
    """Load the int8 student written by :func:`export_student`.

    Args:
        out_dir: the export folder.

    Returns:
        A callable module: float32 (B, C, H, W) -> float32 logits (B, K), CPU.

    Raises:
        FileNotFoundError: if ``out_dir`` has no exported student.
    """
    path = Path(out_dir) / STUDENT_FILE
    packed = Path(out_dir) / STUDENT_ZLIB_FILE
    if not path.is_file() and not packed.is_file():
        raise FileNotFoundError(f"no exported student at {path} or {packed}")
    _set_engine()
    with _quiet_deprecations():
        if path.is_file():
            return torch.jit.load(str(path), map_location="cpu")
        return torch.jit.load(io.BytesIO(zlib.decompress(packed.read_bytes())), map_location="cpu")


def latency_ms(
    fn: Callable[[Tensor], Tensor], x: Tensor, threads: int = 1, warmup: int = 10, runs: int = 50
) -> float:
    """Median wall time of ``fn(x)`` in milliseconds, on ``threads`` CPU threads.

    The thread count is restored afterwards; ``warmup`` calls are not timed.
    """
    with torch_threads(threads), torch.no_grad(), _quiet_deprecations():
        for _ in range(warmup):
            fn(x)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def accuracy(fn: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy in [0, 1] of ``fn`` on (x (N, C, H, W), y (N,)).

    Not :func:`feddistill.learn.evaluate` on purpose: ``compression`` sits below
    ``learn`` (which imports ``distill`` and ``timing``; ``config`` imports this package's
    bit widths), and importing it here for these few lines would lift ``compression``
    and ``config`` above ``learn`` (ARCHITECTURE.md, "What may import what"). ``fn`` may
    also be a plain callable, such as the loaded TorchScript file.
    """
    correct = 0
    with torch.no_grad(), _quiet_deprecations():
        for start in range(0, len(x), batch_size):
            pred = fn(x[start : start + batch_size]).argmax(dim=1)
            correct += int((pred == y[start : start + batch_size]).sum())
    return correct / max(len(x), 1)


def _scripted_bytes(model: nn.Module, example: Tensor) -> int:
    buf = io.BytesIO()
    with _quiet_deprecations(), torch.no_grad():
        torch.jit.save(torch.jit.freeze(torch.jit.trace(model.eval(), example)), buf)
    return buf.getbuffer().nbytes


def export_student(
    model: nn.Module,
    proxy_x: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    out_dir: str | Path,
    sparsity: float = 0.5,
    compress: bool = False,
) -> dict:
    """Prune (unstructured, global) + int8-quantize the student and write it to disk.

    Writes ``out_dir/student_int8.pt`` (TorchScript, load with :func:`load_student`),
    ``metadata.json`` (the returned report) and ``README.md``. ``model`` is not
    modified. Accuracy of the int8 model is measured on the file loaded back.

    Args:
        model: trained fp32 student.
        proxy_x: calibration inputs (unlabeled proxy set), shape (N, C, H, W).
        test_x: test inputs, shape (M, C, H, W), float32.
        test_y: test labels, shape (M,), int64.
        out_dir: folder, created if missing.
        sparsity: fraction of conv / linear weights zeroed before quantization, [0, 1).
        compress: store ``student_int8.pt.zlib`` (zlib level 9) instead of the plain
            file, so the size on disk reflects the zeros of a sparse student;
            :func:`load_student` reads either.

    Returns:
        Report dict: ``bytes`` (fp32 ``state_dict``, fp32 TorchScript, int8 TorchScript,
        int8 file after zlib -- what zeros save in transport), ``latency_ms`` (median,
        1 thread, batch 1 and 64, fp32 vs int8), ``accuracy`` (fp32, fp32 pruned, int8
        pruned), ``sparsity``, ``engine``.

    Raises:
        ValueError: if ``sparsity`` is outside [0, 1) or the inputs are empty.

    References:
        Deep Compression, arXiv:1510.00149; Jacob et al., arXiv:1712.05877.
    """
    if len(proxy_x) == 0 or len(test_x) == 0 or len(test_x) != len(test_y):
        raise ValueError(
            f"need non-empty proxy_x and test_x with matching test_y, got {len(proxy_x)}, "
            f"{len(test_x)}, {len(test_y)}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fp32 = copy.deepcopy(model).cpu().eval()
    pruned = prune_unstructured(copy.deepcopy(fp32), sparsity, scope="global")
    example = proxy_x[:1]
    path = out / STUDENT_FILE
    save_int8(quantize_int8(pruned, proxy_x), example, path)
    file_bytes = path.read_bytes()
    if compress:
        (out / STUDENT_ZLIB_FILE).write_bytes(zlib.compress(file_bytes, 9))
        path.unlink()
    int8 = load_student(out)
    batch = test_x[:64]
    report = {
        "format": "TorchScript (torch.jit.load / feddistill.compression.load_student)",
        "engine": torch.backends.quantized.engine,
        "sparsity": sparsity,
        "file": STUDENT_ZLIB_FILE if compress else STUDENT_FILE,
        "bytes": {
            "fp32_state_dict": state_dict_bytes(fp32),
            "fp32_torchscript": _scripted_bytes(fp32, example),
            "int8_torchscript": len(file_bytes),
            "int8_torchscript_zlib": len(zlib.compress(file_bytes, 9)),
        },
        "latency_ms": {
            "threads": 1,
            "fp32_batch1": latency_ms(fp32, test_x[:1]),
            "int8_batch1": latency_ms(int8, test_x[:1]),
            "fp32_batch64": latency_ms(fp32, batch, runs=20),
            "int8_batch64": latency_ms(int8, batch, runs=20),
        },
        "accuracy": {
            "fp32": accuracy(fp32, test_x, test_y),
            "fp32_pruned": accuracy(pruned, test_x, test_y),
            "int8_pruned": accuracy(int8, test_x, test_y),
        },
        "num_test": len(test_x),
        "num_calibration": len(proxy_x),
    }
    (out / METADATA_FILE).write_text(json.dumps(report, indent=2) + "\n")
    (out / README_FILE).write_text(_readme(report))
    return report


def _readme(report: dict) -> str:
    b, lat, acc = report["bytes"], report["latency_ms"], report["accuracy"]
    return f"""# Deployable student (int8, {report["sparsity"]:.0%} of weights pruned)

Load and run on CPU (no model code needed):

```python
from feddistill.compression import load_student
model = load_student("<this folder>")   # or torch.jit.load("{STUDENT_FILE}")
logits = model(x)                        # x: float32 (B, C, H, W), normalized like training
```

| | fp32 | int8 (pruned) |
|---|---:|---:|
| bytes on disk | {b["fp32_torchscript"]:,} | {b["int8_torchscript"]:,} |
| latency ms, batch 1, 1 thread | {lat["fp32_batch1"]:.3f} | {lat["int8_batch1"]:.3f} |
| latency ms, batch 64, 1 thread | {lat["fp32_batch64"]:.3f} | {lat["int8_batch64"]:.3f} |
| accuracy ({report["num_test"]} test samples) | {acc["fp32"]:.4f} | {acc["int8_pruned"]:.4f} |

Backend: `{report["engine"]}`; calibration on {report["num_calibration"]} proxy samples.
Details in `{METADATA_FILE}`.
"""
