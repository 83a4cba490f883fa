"""benchmarks/compression.py --quick --json: the row schema the CLI relies on."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "compression.py"


def test_quick_json_prints_only_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Prepare
    spec = importlib.util.spec_from_file_location("bench_compression", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

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
