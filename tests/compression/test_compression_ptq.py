"""int8 PTQ export of the student: files, size, accuracy, and a faithful reload."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from feddistill.compression import export_student, load_student, quantize_int8
from feddistill.compression.ptq import STUDENT_FILE, accuracy, latency_ms, save_int8


@pytest.fixture(scope="module")
def export(
    tmp_path_factory: pytest.TempPathFactory,
    trained_student: nn.Module,
    mnist5k: tuple[Tensor, Tensor],
) -> tuple[Path, dict]:
    # (its seconds are a benchmark figure: "export" in `feddistill bench overhead`)
    x, y = mnist5k
    out = tmp_path_factory.mktemp("student")
    report = export_student(trained_student, x[3000:4000], x[4000:], y[4000:], out, sparsity=0.5)
    return out, report


def test_export_writes_files(export: tuple[Path, dict]) -> None:
    out, report = export
    assert (out / STUDENT_FILE).is_file() and (out / "README.md").is_file()
    assert json.loads((out / "metadata.json").read_text()) == report


def test_int8_is_smaller_and_about_as_accurate(export: tuple[Path, dict]) -> None:
    _, report = export
    size, acc = report["bytes"], report["accuracy"]
    assert size["int8_torchscript"] < 0.4 * size["fp32_torchscript"]
    assert size["int8_torchscript"] == (export[0] / STUDENT_FILE).stat().st_size
    assert acc["fp32"] > 0.8
    assert acc["int8_pruned"] > acc["fp32"] - 0.03
    assert report["latency_ms"]["int8_batch64"] > 0


def test_saved_student_predicts_like_before_saving(
    tmp_path: Path, trained_student: nn.Module, mnist5k: tuple[Tensor, Tensor]
) -> None:
    # Prepare
    x, _ = mnist5k
    quantized = quantize_int8(trained_student, x[:500])
    expected = quantized(x[4000:4200])

    # Execute
    save_int8(quantized, x[:1], tmp_path / STUDENT_FILE)
    loaded = load_student(tmp_path)

    # Assert: same int8 kernels, same logits.
    assert torch.allclose(loaded(x[4000:4200]), expected, atol=1e-5)


def test_export_leaves_the_model_untouched(
    tmp_path: Path, trained_student: nn.Module, mnist5k: tuple[Tensor, Tensor]
) -> None:
    x, y = mnist5k
    before = {k: v.clone() for k, v in trained_student.state_dict().items()}
    export_student(trained_student, x[:100], x[100:200], y[100:200], tmp_path, sparsity=0.3)
    after = trained_student.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_no_deprecation_warning_escapes(
    tmp_path: Path, trained_student: nn.Module, mnist5k: tuple[Tensor, Tensor]
) -> None:
    x, _ = mnist5k
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_int8(quantize_int8(trained_student, x[:64]), x[:1], tmp_path / STUDENT_FILE)
        load_student(tmp_path)(x[:2])


def test_load_student_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no exported student"):
        load_student(tmp_path / "nothing")


def test_export_rejects_empty_or_mismatched_inputs(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="matching test_y"):
        export_student(
            model,
            torch.zeros(2, 1, 2, 2),
            torch.zeros(3, 1, 2, 2),
            torch.zeros(2, dtype=torch.long),
            tmp_path,
        )


def test_latency_and_accuracy_helpers_by_hand() -> None:
    # Prepare: "model" predicting class = first feature > 0.
    def fn(x: Tensor) -> Tensor:
        return torch.stack([-x[:, 0], x[:, 0]], dim=1)

    x = torch.tensor([[1.0], [-1.0], [2.0], [-3.0]])
    y = torch.tensor([1, 0, 0, 0])

    # Execute / Assert: 3 of 4 correct; latency positive; threads restored.
    threads = torch.get_num_threads()
    assert accuracy(fn, x, y, batch_size=3) == 0.75
    assert latency_ms(fn, x, warmup=1, runs=3) > 0
    assert torch.get_num_threads() == threads
