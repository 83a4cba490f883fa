"""Per-client state on disk: the teacher, the error-feedback residual, the replica, the mask.

Kept on disk, keyed by partition id and round, because Ray actors are not tied to a
partition. A client loads its newest state written before the current round, however
many rounds it sat out; its newest file and the one before it are never deleted, so a
run resumed from the last checkpoint finds every client's state as that round left it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from feddistill.atomic import atomic_torch_save


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
