"""Issue 12: the trained sparse student is exported int8 and stored so zeros shrink it."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from feddistill.compression import export_student, load_student
from feddistill.compression.masks import apply_masks, global_magnitude_mask, maskable_keys
from feddistill.compression.ptq import STUDENT_FILE, STUDENT_ZLIB_FILE


def sparse_copy(model: nn.Module, sparsity: float) -> nn.Module:
    """``model`` with the global magnitude mask of ``sparsity`` applied (a copy)."""
    out = copy.deepcopy(model)
    state = model.state_dict()
    keys = maskable_keys(model)
    masks = global_magnitude_mask({k: state[k] for k in keys}, sparsity)
    out.load_state_dict(apply_masks(state, masks))
    return out.eval()


@pytest.fixture(scope="module")
def exports(tmp_path_factory, trained_student, mnist5k) -> dict[float, tuple[Path, dict]]:
    x, y = mnist5k
    out = {}
    for sparsity in (0.0, 0.8):
        folder = tmp_path_factory.mktemp(f"sparse{sparsity}")
        report = export_student(
            sparse_copy(trained_student, sparsity),
            x[3000:3500],
            x[4000:4500],
            y[4000:4500],
            folder,
            sparsity=sparsity,
            compress=True,
        )
        out[sparsity] = (folder, report)
    return out


def test_sparse_export_is_stored_compressed_and_zeros_shrink_it(exports) -> None:
    # Execute: the fixture exported the same student dense and 80% sparse
    dense_dir, dense = exports[0.0]
    sparse_dir, sparse = exports[0.8]
    stored_dense = (dense_dir / STUDENT_ZLIB_FILE).stat().st_size
    stored_sparse = (sparse_dir / STUDENT_ZLIB_FILE).stat().st_size
    # Assert: only the compressed file is written, and 80% zeros make it < 60% the size
    assert not (sparse_dir / STUDENT_FILE).exists()
    assert sparse["file"] == STUDENT_ZLIB_FILE
    assert stored_sparse == sparse["bytes"]["int8_torchscript_zlib"]
    assert stored_sparse < 0.6 * stored_dense, (stored_sparse, stored_dense)


def test_sparse_export_reloads_in_a_fresh_process_with_identical_outputs(
    exports, mnist5k: tuple[Tensor, Tensor], tmp_path: Path
) -> None:
    # Prepare
    x, _ = mnist5k
    folder, _ = exports[0.8]
    torch.save(x[:64].clone(), tmp_path / "x.pt")
    expected = load_student(folder)(x[:64])
    script = (
        "import sys, torch; from feddistill.compression import load_student; "
        "x = torch.load(sys.argv[2]); torch.save(load_student(sys.argv[1])(x), sys.argv[3])"
    )
    # Execute
    subprocess.run(
        [sys.executable, "-c", script, str(folder), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        check=True,
        timeout=300,
    )
    # Assert
    assert torch.equal(torch.load(tmp_path / "y.pt"), expected)


def test_channel_pruned_student_exports_and_reloads_with_identical_outputs(
    trained_student, mnist5k: tuple[Tensor, Tensor], tmp_path: Path
) -> None:
    # Prepare: half the channels removed, as the server does between rounds
    from feddistill.compression.pruning import prune_channels

    x, y = mnist5k
    pruned = prune_channels(copy.deepcopy(trained_student).eval(), x[:1], 0.5)
    # Execute
    export_student(pruned, x[3000:3200], x[4000:4200], y[4000:4200], tmp_path, 0.0, compress=True)
    first, second = load_student(tmp_path), load_student(tmp_path)
    # Assert: the file holds the pruned architecture (4 first-layer channels -> same
    # logits from two independent loads) and is not the dense one
    assert torch.equal(first(x[:64]), second(x[:64]))
    assert first(x[:2]).shape == (2, 10)
    assert sum(p.numel() for p in pruned.parameters()) == 13242
