"""feddistill/benchmarks/compression.py --quick --json: the row schema the CLI relies on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow  # ~20 s: trains two models and times every codec setting
def test_quick_json_prints_only_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the --quick code path on smaller inputs (its own sizes take ~60 s)
    from feddistill.benchmarks import compression as bench

    small = bench.Sizes(
        n_train=200, n_random=100_000, n_ef=10_000, ef_rounds=3, n_cal=100, repeats=1
    )
    monkeypatch.setattr(bench, "QUICK", small)
    # Execute
    code = bench.main(["--quick", "--json", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    printed = json.loads(captured.out)

    # Assert
    assert code == 0
    assert set(printed) == {"rows"}
    keys = {"setting", "ratio", "sqnr_db", "encode_mb_s", "decode_mb_s"}
    assert all(set(r) == keys for r in printed["rows"])
    settings = {r["setting"] for r in printed["rows"]}
    assert {"cnn | top1%+int4", "cnn-small | int8", "random 0.1M | zlib-6 (lossless)"} <= settings
    assert (tmp_path / "results.json").is_file() and (tmp_path / "results.md").is_file()
    ef = json.loads((tmp_path / "results.json").read_text())["error_feedback"]
    assert {r["rounds"] for r in ef} == {3}  # the sizes it was given
    # where it wrote, on stderr so stdout stays pure JSON
    written = tmp_path.resolve()
    assert captured.err.splitlines()[-1] == (
        f"results written to {written / 'results.json'} and {written / 'results.md'}"
    )
