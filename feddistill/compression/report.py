"""Compression report of a model: per-layer sparsity, parameters, MACs, bytes on disk."""

from __future__ import annotations

import io

import torch
from torch import Tensor, nn

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())`` (what a checkpoint takes on disk)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def _macs_per_sample(module: nn.Module, out: Tensor) -> int:
    """Multiply-accumulates of one conv / linear call, per sample of the batch."""
    weight: Tensor = module.weight  # type: ignore[assignment]
    per_output = weight[0].numel()  # in_channels / groups * kernel, or in_features
    return int(out[0].numel() if out.ndim > 1 else out.numel()) * per_output


def compression_report(model: nn.Module, example_inputs: Tensor) -> list[dict]:
    """Per-layer parameter count, zeros, sparsity and MACs, plus a total row.

    Args:
        model: any network; run once in eval mode under ``torch.no_grad`` (its mode is
            restored).
        example_inputs: a batch, shape (B, C, H, W); MACs are per sample.

    Returns:
        One dict per conv / linear layer, in module order, with keys ``layer`` (name),
        ``type``, ``shape`` (weight shape), ``params`` (weight + bias), ``zeros``,
        ``sparsity`` (zeros / params, in [0, 1]) and ``macs`` (per sample); then a row
        with ``layer="total"`` summing every parameter of the model (also normalization
        layers) and every layer's MACs, with ``bytes_on_disk`` (serialized
        ``state_dict``, bytes).
    """
    rows: dict[str, dict] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, _LAYERS):
            params = [p for p in (module.weight, module.bias) if p is not None]
            n = sum(p.numel() for p in params)
            zeros = sum(int((p == 0).sum()) for p in params)
            rows[name] = {
                "layer": name,
                "type": type(module).__name__,
                "shape": tuple(module.weight.shape),
                "params": n,
                "zeros": zeros,
                "sparsity": zeros / n if n else 0.0,
                "macs": 0,
            }

            def hook(mod: nn.Module, _inp: tuple, out: Tensor, key: str = name) -> None:
                rows[key]["macs"] += _macs_per_sample(mod, out)

            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_inputs[:1])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    all_params = list(model.parameters())
    total_n = sum(p.numel() for p in all_params)
    total_zeros = sum(int((p == 0).sum()) for p in all_params)
    total = {
        "layer": "total",
        "type": type(model).__name__,
        "shape": (),
        "params": total_n,
        "zeros": total_zeros,
        "sparsity": total_zeros / total_n if total_n else 0.0,
        "macs": sum(r["macs"] for r in rows.values()),
        "bytes_on_disk": state_dict_bytes(model),
    }
    return [*rows.values(), total]


def format_report(rows: list[dict]) -> str:
    """Markdown table of :func:`compression_report` rows."""
    lines = [
        "| layer | type | params | sparsity | MACs |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['type']} | {r['params']:,} | {r['sparsity']:.3f} | "
            f"{r['macs']:,} |"
        )
    total = rows[-1]
    if "bytes_on_disk" in total:
        lines.append(f"\nbytes on disk (state_dict): {total['bytes_on_disk']:,}")
    return "\n".join(lines)
