"""--seeds parsing and mean ± std."""

from __future__ import annotations

import pytest

from feddistill.seeds import (
    aggregate,
    format_mean_std,
    mean_std,
    numeric_leaves,
    parse_seeds,
    seeds_markdown,
)


def test_parse_seeds_reads_a_comma_list():
    # Execute / Assert
    assert parse_seeds("0, 1,2") == [0, 1, 2]


@pytest.mark.parametrize("text", ["", "a", "-1", "1,1"])
def test_parse_seeds_rejects_bad_lists(text):
    # Execute / Assert
    with pytest.raises(ValueError, match="--seeds must be a"):
        parse_seeds(text)


def test_mean_std_uses_the_sample_deviation():
    # Prepare: mean 2, squared deviations 1 + 0 + 1 = 2, / (3 - 1) = 1 -> std 1
    # Execute / Assert
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)


def test_format_mean_std_in_percent():
    # Execute / Assert
    assert format_mean_std([0.9, 0.92]) == "91.0 ± 1.4"


def test_mean_std_of_nothing_is_an_error():
    # Execute / Assert
    with pytest.raises(ValueError, match="mean_std needs at least one value"):
        mean_std([])


def test_aggregate_keeps_only_keys_every_seed_has():
    # Prepare: "target" only in seed 0, "flag" a bool, "acc" 0.5 / 0.7 -> mean 0.6
    per_seed = {0: {"acc": 0.5, "target": 0.1, "flag": True}, 1: {"acc": 0.7, "flag": False}}
    # Execute
    out = aggregate(per_seed, ["acc", "target", "flag"])
    # Assert
    assert list(out) == ["acc"]
    assert out["acc"]["mean"] == pytest.approx(0.6)
    assert out["acc"]["values"] == [0.5, 0.7]


def test_aggregate_of_no_seed_is_an_error():
    # Execute / Assert
    with pytest.raises(ValueError, match="aggregate needs at least one seed"):
        aggregate({}, ["acc"])


def test_numeric_leaves_name_bench_gpu_rows_by_label_not_by_their_common_engine():
    # Prepare: the regression guarded: every bench gpu row is engine "inprocess", so
    # rows named by engine overwrote each other in seeds.json
    results = {
        "runs": [
            {"label": "default cuda", "engine": "inprocess", "acc": 0.9},
            {"label": "default cpu", "engine": "inprocess", "acc": 0.5},
        ]
    }
    # Execute
    leaves = numeric_leaves(results)
    # Assert
    assert leaves == {"runs.default cuda.acc": 0.9, "runs.default cpu.acc": 0.5}


def test_numeric_leaves_name_list_items_by_their_name_field():
    # Prepare
    results = {"rows": [{"name": "fedavg", "acc": 0.9}, {"x": 2}], "ok": True, "n": 3}
    # Execute / Assert
    assert numeric_leaves(results) == {"rows.fedavg.acc": 0.9, "rows.[1].x": 2.0, "n": 3.0}


def test_bench_seeds_without_seeds_is_an_error(tmp_path):
    # Prepare
    from feddistill.seed_runs import bench_seeds

    # Execute / Assert
    with pytest.raises(ValueError, match="bench_seeds needs --seeds"):
        bench_seeds("x", lambda argv: 0, ["--out", str(tmp_path)])


def test_seeds_markdown_escapes_a_pipe_in_a_quantity_name():
    # Prepare: robustness names its runs "1 of 4 | defaults | none"
    agg = {"a | b": {"mean": 1.0, "std": 0.0, "values": [1.0]}}
    # Execute
    text = seeds_markdown("## t", [0], agg)
    # Assert
    assert "| a \\| b | 1 ± 0 | 1 |" in text.splitlines()
