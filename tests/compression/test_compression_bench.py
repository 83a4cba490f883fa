"""feddistill/benchmarks/compression.py --quick --json: the row schema the CLI relies on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow  # ~60 s: trains two models and times every codec setting
def test_quick_json_prints_only_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    from feddistill.benchmarks import compression as bench

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
    assert {"cnn | top1%+int4", "cnn-small | int8", "random 1M | zlib-6 (lossless)"} <= settings
    assert (tmp_path / "results.json").is_file() and (tmp_path / "results.md").is_file()
    # where it wrote, on stderr so stdout stays pure JSON
    written = tmp_path.resolve()
    assert captured.err.splitlines()[-1] == (
        f"results written to {written / 'results.json'} and {written / 'results.md'}"
    )
