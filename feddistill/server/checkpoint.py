"""Per-round checkpoints: global student, consensus, rows so far and the round number."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from feddistill.atomic import atomic_torch_save, atomic_write_text


def save_checkpoint(ckpt_dir: Path, server_round: int, state: dict[str, Any]) -> Path:
    """Write ``round-<r>.pt`` atomically and point ``latest`` at it; keep the last 3."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"round-{server_round}.pt"
    atomic_torch_save(path, {"round": server_round, **state})
    atomic_write_text(ckpt_dir / "latest", path.name)
    for old in ckpt_dir.glob("round-*.pt"):
        if int(old.stem.split("-")[1]) <= server_round - 3:
            old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(ckpt_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint, or None when there is none.

    Loaded with ``weights_only=True``: a checkpoint holds tensors and plain containers
    only (student state, consensus, mask, replicas, metric rows), so nothing in it can
    run code when it is read.

    Raises:
        ValueError: if ``latest`` names a file that is missing or unreadable, or one that
            holds anything but tensors and plain containers.
    """
    latest = ckpt_dir / "latest"
    if not latest.is_file():
        return None
    path = ckpt_dir / latest.read_text().strip()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise ValueError(f"checkpoint {str(path)!r} cannot be read: {exc}") from exc
