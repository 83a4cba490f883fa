"""compression_report: per-layer parameters, sparsity and MACs worked out by hand."""

from __future__ import annotations

import torch
from torch import nn

from feddistill.compression import compression_report, format_report


def test_report_counts_by_hand() -> None:
    # Prepare: conv 1->2, 3x3, padding 1 on 4x4 (18 + 2 params, 2*16*9 = 288 MACs);
    # linear 32 -> 3 (96 + 3 params, 96 MACs); 10 conv weights zeroed.
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(32, 3))
    with torch.no_grad():
        model[0].weight.view(-1)[:10] = 0.0
        model[0].bias.fill_(1.0)

    # Execute
    rows = compression_report(model, torch.zeros(5, 1, 4, 4))

    # Assert
    conv, linear, total = rows
    assert (conv["layer"], conv["params"], conv["zeros"], conv["macs"]) == ("0", 20, 10, 288)
    assert conv["sparsity"] == 0.5
    assert (linear["params"], linear["macs"]) == (99, 96)
    assert total["params"] == 119 and total["macs"] == 384
    assert total["bytes_on_disk"] > 119 * 4
    assert model.training  # mode restored
    assert "| 0 | Conv2d | 20 | 0.500 | 288 |" in format_report(rows)


def test_compression_imports_neither_flower_nor_ray() -> None:
    # Prepare / Execute: a fresh interpreter, so other tests' imports do not count.
    import subprocess
    import sys

    code = (
        "import sys, feddistill.compression; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flwr', 'ray')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    # Assert
    assert out.stdout.strip() == "[]"
