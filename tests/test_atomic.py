"""atomic_write_*: the one write-temp-then-rename helper."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from feddistill.atomic import atomic_torch_save, atomic_write_bytes, atomic_write_text


def test_atomic_write_text_replaces_the_old_content(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "summary.json"
    path.write_text("old")

    # Execute
    atomic_write_text(path, "new\n")

    # Assert
    assert path.read_text() == "new\n"


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "metrics.csv"

    # Execute
    atomic_write_bytes(path, b"a,b\r\n1,2\r\n")

    # Assert
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]
    assert path.read_bytes() == b"a,b\r\n1,2\r\n"


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "latest"
    path.write_text("round-1.pt")

    # Execute
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]

    # Assert
    assert path.read_text() == "round-1.pt"
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]


def test_atomic_write_into_a_missing_folder_raises(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "missing" / "summary.json"

    # Execute / Assert
    with pytest.raises(FileNotFoundError):
        atomic_write_text(path, "{}")
    assert not (tmp_path / "missing").exists()


def test_atomic_torch_save_round_trips(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "round-3.pt"

    # Execute
    atomic_torch_save(path, {"round": 3, "w": torch.tensor([1.0, 2.0])})

    # Assert
    loaded = torch.load(path, weights_only=True)
    assert loaded["round"] == 3
    assert loaded["w"].tolist() == [1.0, 2.0]
