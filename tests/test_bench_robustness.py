"""`feddistill bench robustness --quick`: the suite's run of the robustness benchmark."""

import pytest

from feddistill.cli import main


@pytest.mark.slow  # ~60 s: six in-process runs
def test_bench_robustness_quick_prints_defaults_and_fedavg_per_attack(capsys):
    # Execute: 1 malicious client of 4, 2 rounds, scaled-update and shifted-logits
    code = main(["bench", "robustness", "--quick"])
    # Assert: one table row per attack; the defaults never end a run
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 1 of 4 |")]
    assert code == 0
    assert [r.split(" | ")[1] for r in rows] == ["none", "scaled-update", "shifted-logits"]
    assert all(r.split(" | ")[2] != "run ended" for r in rows)
