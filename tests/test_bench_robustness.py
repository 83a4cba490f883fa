"""`feddistill bench robustness --quick`: the suite's run of the robustness benchmark.

Its wiring (cohorts, defences, attacks, the table) on a smaller job: digits and mlp
models instead of MNIST-5k and cnn-small (~60 s). The defences on the benchmark's own
data and models are tested in tests/server/test_server_malicious.py.
"""

import pytest

from feddistill.benchmarks import robustness
from feddistill.cli import main


@pytest.mark.slow  # ~15 s: six small in-process runs
def test_bench_robustness_quick_prints_defaults_and_fedavg_per_attack(capsys, monkeypatch):
    # Prepare
    small = {"dataset": "digits", "teacher-models": "mlp", "student-model": "mlp"}
    monkeypatch.setattr(robustness, "BASE", {**robustness.BASE, **small})
    # Execute: 1 malicious client of 4, 2 rounds, scaled-update and shifted-logits
    code = main(["bench", "robustness", "--quick"])
    # Assert: one table row per attack; the defaults never end a run
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 1 of 4 |")]
    assert code == 0
    assert [r.split(" | ")[1] for r in rows] == ["none", "scaled-update", "shifted-logits"]
    assert all(r.split(" | ")[2] != "run ended" for r in rows)
