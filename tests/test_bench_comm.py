"""`feddistill bench comm`: communication settings on one split (issue 11)."""

import json

import pytest

from feddistill.benchmarks.comm_settings import _parse_setting
from feddistill.cli import main


def test_bench_comm_without_settings_is_refused():
    # Execute / Assert: neither --preset nor --setting: argparse's usage error (exit 2)
    with pytest.raises(SystemExit) as exc:
        main(["bench", "comm"])
    assert exc.value.code == 2


def test_parse_setting_keeps_bare_words_as_strings_fedmd_regression():
    # Execute: "fedmd" starts with "f" like "false"; it must stay a string
    name, overrides = _parse_setting("md:strategy=fedmd,logits-top-m=2,resume=false")
    # Assert
    assert name == "md"
    assert overrides == {"strategy": "fedmd", "logits-top-m": 2, "resume": False}


def test_bench_comm_writes_results_json_per_setting(tmp_path):
    # Prepare: one tiny setting, digits, 2 clients, 1 round, top-1 logits
    setting = (
        "top-1:dataset=digits,num-partitions=2,min-train-nodes=2,"
        "teacher-models=mlp,student-model=mlp,logits-top-m=1"
    )
    # Execute
    code = main(["bench", "comm", "--rounds", "1", "--setting", setting, "--out", str(tmp_path)])
    # Assert: one entry named after the setting, with its overrides and traffic
    results = json.loads((tmp_path / "results.json").read_text())
    assert code == 0
    assert list(results) == ["top-1"]
    assert results["top-1"]["overrides"]["logits-top-m"] == 1
    assert results["top-1"]["uplink_mb"] > 0
    assert (tmp_path / "results.md").read_text().splitlines()[2].startswith("| top-1 |")
