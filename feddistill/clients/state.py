"""Per-client state on disk: the teacher, the error-feedback residual, the replica, the mask.

Kept on disk, keyed by partition id and round, because Ray actors are not tied to a
partition. A client loads its newest state written before the current round, however
many rounds it sat out; its newest file and the one before it are never deleted, so a
run resumed from the last checkpoint finds every client's state as that round left it.

Storage precision of the teacher (key ``client-state-dtype``, :func:`to_storage`): with
the default ``cnn`` teacher (3.2M parameters) a client's teacher is 12.8 MB in fp32, and
with 1,000 clients most of the run's disk. ``float16`` stores the teacher's floating
tensors in half precision (6.4 MB) and loads them back into the fp32 model
(``load_state_dict`` casts). The student's error-feedback residual and replica stay
fp32: they are small, and the residual's small entries are what it exists to keep.

Round trip bound (IEEE 754 binary16, round to nearest): for a finite fp32 value x with
|x| <= 65504, ``|x - float(half(x))| <= max(|x| * 2**-11, 2**-25)`` (relative half an
ulp for normal numbers, half the subnormal spacing 2**-24 below 2**-14). A tensor with a
value beyond 65504 or a non-finite value is kept in fp32 (never turned into inf).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from feddistill.atomic import atomic_torch_save
from feddistill.config import CLIENT_STATE_DTYPES

FP16_MAX = 65504.0  # largest finite binary16 value


def fits_float16(tensor: Tensor) -> bool:
    """True if `tensor` is floating, finite and every |value| <= 65504."""
    if not tensor.is_floating_point():
        return False
    if tensor.numel() == 0:
        return True
    return bool(torch.isfinite(tensor).all()) and float(tensor.abs().max()) <= FP16_MAX


def to_storage(state: Mapping[str, Tensor], dtype: str) -> dict[str, Tensor]:
    """A detached CPU copy of a model state for ``client-state/``, in `dtype`.

    Args:
        state: a ``state_dict`` (name -> tensor, any shapes).
        dtype: "float32" (floating tensors as they are) or "float16" (floating tensors
            that :func:`fits_float16` stored in half precision; integer buffers such as
            BatchNorm's ``num_batches_tracked`` and out-of-range tensors unchanged).

    Returns:
        Name -> CPU tensor, same names and shapes as `state`.

    Raises:
        ValueError: if `dtype` is not one of :data:`feddistill.config.CLIENT_STATE_DTYPES`.
    """
    if dtype not in CLIENT_STATE_DTYPES:
        raise ValueError(
            f"client-state-dtype must be one of {', '.join(CLIENT_STATE_DTYPES)}, got {dtype!r}"
        )
    out = {}
    for name, tensor in state.items():
        value = tensor.detach().cpu()
        if dtype == "float16" and value.dtype == torch.float32 and fits_float16(value):
            value = value.to(torch.float16)
        out[name] = value
    return out


def state_path(state_dir: str | Path, partition_id: int, server_round: int) -> Path:
    """File holding client `partition_id`'s state after `server_round`."""
    return Path(state_dir) / f"partition-{partition_id}" / f"round-{server_round}.pt"


def _saved_rounds(state_dir: str | Path, partition_id: int) -> list[int]:
    """Rounds with a state file for `partition_id`, ascending (stray names ignored)."""
    folder = Path(state_dir) / f"partition-{partition_id}"
    rounds = []
    for path in folder.glob("round-*.pt"):
        number = path.stem.removeprefix("round-")
        if number.isdigit():
            rounds.append(int(number))
    return sorted(rounds)


def newest_state_round(state_dir: str | Path, partition_id: int, before_round: int) -> int:
    """The newest round < `before_round` with a saved state, or 0 if there is none."""
    return max((r for r in _saved_rounds(state_dir, partition_id) if r < before_round), default=0)


def load_state(state_dir: str | Path, partition_id: int, server_round: int) -> dict:
    """The client's newest state written before `server_round` (``{}`` if none).

    A client that sat out rounds resumes from the last round it took part in, however
    long ago. Files of `server_round` or later (left by a run that was killed and is
    now resumed from an earlier checkpoint) are ignored.
    """
    newest = newest_state_round(state_dir, partition_id, server_round)
    if newest < 1:
        return {}
    return torch.load(
        state_path(state_dir, partition_id, newest), map_location="cpu", weights_only=True
    )


def save_state(state_dir: str | Path, partition_id: int, server_round: int, state: dict) -> None:
    """Atomically write the state after `server_round`, then prune old files.

    Kept: this round's file and the newest one before it (what a rerun of this round
    after a kill and ``--resume`` loads). Older files are deleted, and so are files of
    later rounds (an abandoned run's future, which a resumed run must not load).
    """
    path = state_path(state_dir, partition_id, server_round)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(path, state)
    previous = newest_state_round(state_dir, partition_id, server_round)
    for old in _saved_rounds(state_dir, partition_id):
        if old < previous or old > server_round:
            state_path(state_dir, partition_id, old).unlink(missing_ok=True)
