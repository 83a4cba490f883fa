"""Config parsing: one place where every key and range is checked."""

import tomllib
from pathlib import Path

import pytest

from feddistill.config import RunConfig, from_mapping
from feddistill.config_load import load_config, parse_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_run_config_equals_dataclass_defaults():
    # Prepare
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    # Execute
    cfg = from_mapping(table)
    # Assert
    assert cfg == RunConfig()
    assert set(table) == set(RunConfig().to_kebab())


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError, match=r"unknown config key 'num-round'.*num-server-rounds"):
        from_mapping({"num-round": 3})


def test_unknown_key_suggests_the_closest_key():
    # Prepare: a typo of learning-rate, one letter short
    # Execute
    with pytest.raises(ValueError) as info:
        from_mapping({"learning-rat": 0.1})
    # Assert: difflib ranks learning-rate first
    assert str(info.value).startswith(
        "unknown config key 'learning-rat' (did you mean 'learning-rate' or"
    )


def test_unknown_key_far_from_every_key_has_no_suggestion():
    # Execute
    with pytest.raises(ValueError) as info:
        from_mapping({"zzz": 1})
    # Assert
    message = str(info.value)
    assert message.startswith("unknown config key 'zzz'; valid keys: ")
    assert "did you mean" not in message and "alpha, " in message


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        (
            "update-bit-width",
            3,
            r"update-bit-width=3 is not allowed; choose one of: 1, 2, 4, 8, 16, 32",
        ),
        ("fraction-train", 0.0, r"fraction-train=0.0 is out of range; allowed: \(0.0, 1.0\]"),
        ("update-density", 1.5, r"update-density=1.5 is out of range"),
        ("downlink-density", 0.0, r"downlink-density=0.0 is out of range"),
        ("downlink-bit-width", 3, r"downlink-bit-width=3 is not allowed; choose one of: 1, 2"),
        ("consensus-bit-width", 5, r"consensus-bit-width=5 is not allowed; choose one of: 1"),
        ("num-partitions", 0, r"num-partitions=0 is out of range; allowed: \[1, inf\)"),
        ("strategy", "fedsgd", r"strategy='fedsgd' is not allowed; choose one of: feddistill"),
        ("consensus", "median", r"consensus='median' is not allowed"),
        ("temperature", 0.0, r"temperature=0.0 is out of range"),
        ("client-num-gpus", 1.5, r"client-num-gpus=1.5 is out of range"),
        ("proxy-fraction", 1.0, r"proxy-fraction=1.0 is out of range"),
        ("round-timeout-s", 0.0, r"round-timeout-s=0.0 is out of range"),
        ("server-distill-rounds", -1, r"server-distill-rounds=-1 is out of range"),
        ("server-num-cpus", 0, r"server-num-cpus=0 is out of range; allowed: \[1, inf\)"),
    ],
)
def test_out_of_range_values_name_key_and_allowed(key, value, match):
    with pytest.raises(ValueError, match=match):
        from_mapping({key: value})


def test_wrong_type_names_key():
    with pytest.raises(
        ValueError, match=r"config key 'client-num-cpus' expects an integer, got 1.5"
    ):
        from_mapping({"client-num-cpus": 1.5})


def test_bool_from_string_or_0_1_and_bad_bool():
    assert from_mapping({"download": "true"}).download is True
    assert from_mapping({"download": 1}).download is True
    with pytest.raises(ValueError, match="expects true or false"):
        from_mapping({"download": "maybe"})


def test_fractions_must_leave_train_data():
    with pytest.raises(ValueError, match=r"proxy-fraction \+ test-fraction must be < 1"):
        from_mapping({"proxy-fraction": 0.5, "test-fraction": 0.5})


def test_teacher_models_one_or_per_client():
    # Prepare / Execute
    cfg = from_mapping({"num-partitions": 2, "min-train-nodes": 1, "teacher-models": "cnn, mlp"})
    # Assert
    assert [cfg.teacher_model_for(i) for i in range(2)] == ["cnn", "mlp"]
    with pytest.raises(
        ValueError, match="teacher-models must list 1 or num-partitions=4 models, got 2"
    ):
        from_mapping({"teacher-models": "cnn,mlp"})
    with pytest.raises(ValueError, match="teacher-models must name at least one model"):
        from_mapping({"teacher-models": " , "})


def test_min_train_nodes_cannot_exceed_partitions():
    with pytest.raises(ValueError, match="min-train-nodes=3 exceeds num-partitions=2"):
        from_mapping({"num-partitions": 2, "min-train-nodes": 3})


def test_fail_partitions_parsed_and_checked():
    assert from_mapping({"fail-partitions": "1, 3"}).failing_partitions() == {1, 3}
    with pytest.raises(ValueError, match="fail-partitions must be a comma list of integers"):
        from_mapping({"fail-partitions": "a"})


def test_load_config_reads_file_then_overrides(tmp_path):
    # Prepare
    path = tmp_path / "job.toml"
    path.write_text('[tool.flwr.app.config]\nnum-server-rounds = 3\nstrategy = "fedavg"\n')
    # Execute
    cfg = load_config(path, ["num-server-rounds=5", "consensus=mean"])
    # Assert
    assert (cfg.num_server_rounds, cfg.strategy, cfg.consensus) == (5, "fedavg", "mean")


def test_load_config_top_level_keys(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text("alpha = 0.5\n")
    assert load_config(path).alpha == 0.5


def test_load_config_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_parse_overrides_needs_equals():
    assert parse_overrides(["a=1", "b=x y"]) == {"a": 1, "b": "x y"}
    with pytest.raises(ValueError, match="--set expects key=value, got 'alpha'"):
        parse_overrides(["alpha"])


@pytest.mark.parametrize(
    "key", ["update-density", "learning-rate", "temperature", "round-timeout-s"]
)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_are_rejected(key, value):
    with pytest.raises(ValueError, match=f"{key}=.* is not a finite number"):
        from_mapping({key: value})


@pytest.mark.parametrize("key", ["teacher-models", "student-model"])
def test_unknown_model_names_fail_before_anything_starts(key):
    with pytest.raises(
        ValueError,
        match=rf"^{key}='foo' is not allowed; choose one of: cnn, cnn-small, mlp, resnet18$",
    ):
        from_mapping({key: "foo"})


def test_a_misspelt_choice_gets_the_closest_allowed_names():
    # Prepare: "covrage-era" is one letter away from "coverage-era" (and close to "coverage")
    # Execute / Assert
    with pytest.raises(
        ValueError,
        match=r"consensus='covrage-era' is not allowed; .* \(did you mean 'coverage-era'",
    ):
        from_mapping({"consensus": "covrage-era"})


def test_a_choice_far_from_every_allowed_name_gets_no_guess():
    with pytest.raises(ValueError) as error:
        from_mapping({"consensus": "zzzz"})
    assert "did you mean" not in str(error.value)


def test_fail_partitions_must_name_existing_partitions():
    with pytest.raises(
        ValueError, match=r"fail-partitions ids \[-1, 9\] are outside \[0, num-partitions=4\)"
    ):
        from_mapping({"fail-partitions": "9,-1"})


def test_malformed_toml_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("alpha = \n")
    with pytest.raises(ValueError, match="bad.toml' is not valid TOML"):
        load_config(path)


def test_attack_keys_parsed():
    cfg = from_mapping({"attack": "sign-flip", "attack-partitions": "0, 2"})
    assert cfg.attacking_partitions() == {0, 2}


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"attack": "sign-flip"}, r"attack='sign-flip' with attack-partitions='': give both"),
        ({"attack-partitions": "1"}, r"attack='none' with attack-partitions='1': give both"),
        (
            {"attack": "sign-flip", "attack-partitions": "x"},
            "attack-partitions must be a comma list of integers, got 'x'",
        ),
        (
            {"attack": "sign-flip", "attack-partitions": "4"},
            r"attack-partitions ids \[4\] are outside \[0, num-partitions=4\)",
        ),
        ({"attack": "backdoor"}, r"attack='backdoor' is not allowed; choose one of: none"),
        ({"aggregator": "bulyan"}, r"aggregator='bulyan' is not allowed; choose one of: fedavg"),
        ({"clip-multiple": -1.0}, r"clip-multiple=-1.0 is out of range; allowed: \[0.0, inf\)"),
        ({"robust-fraction": 0.5}, r"robust-fraction=0.5 is out of range; allowed: \[0.0, 0.5\)"),
        ({"max-client-share": 0.0}, r"max-client-share=0.0 is out of range; allowed: \(0.0, 1.0\]"),
    ],
)
def test_robustness_keys_are_checked(values, match):
    with pytest.raises(ValueError, match=match):
        from_mapping(values)


def test_channel_pruning_with_a_compressed_downlink_is_refused():
    with pytest.raises(ValueError, match="channel-pruning-ratio=0.5 needs the full downlink"):
        from_mapping({"channel-pruning-ratio": 0.5, "downlink-density": 0.1})


def test_frozen_teachers_with_a_logits_subset_are_accepted():
    # a frozen teacher caches its logits on the whole proxy set (session 27)
    cfg = from_mapping({"teacher-rounds": 2, "teacher-plateau-rounds": 1, "logits-subset": 0.5})
    assert (cfg.teacher_rounds, cfg.teacher_plateau_rounds, cfg.logits_subset) == (2, 1, 0.5)


def test_channel_pruning_after_the_last_round_is_refused():
    with pytest.raises(ValueError, match="channel-pruning-round=99 is after the last round"):
        from_mapping({"channel-pruning-ratio": 0.5, "channel-pruning-round": 99})


# The registries own their names; the run config accepts exactly those.
@pytest.mark.parametrize(
    ("key", "registry"),
    [
        ("dataset", "feddistill.data.datasets:DATASET_NAMES"),
        ("dataset", "feddistill.data.domain_datasets:DOMAIN_DATASET_NAMES"),
        ("consensus", "feddistill.distill.consensus:CONSENSUS_MODES"),
        ("student-model", "feddistill.models:MODEL_NAMES"),
        ("update-bit-width", "feddistill.compression.quantize:BIT_WIDTHS"),
        ("channel-pruning-importance", "feddistill.compression.pruning:IMPORTANCES"),
    ],
)
def test_config_accepts_every_name_of_the_registry(key, registry):
    # Prepare
    import importlib

    module, name = registry.split(":")
    names = getattr(importlib.import_module(module), name)

    # Execute
    accepted = [from_mapping({key: value}) for value in names]

    # Assert
    assert [getattr(cfg, key.replace("-", "_")) for cfg in accepted] == list(names)


def test_data_spec_carries_the_data_keys_with_target_domains_parsed():
    # Prepare
    cfg = from_mapping(
        {"dataset": "digits", "partitioner": "iid", "target-domains": "2,0,2", "seed": 7}
    )

    # Execute
    spec = cfg.data_spec()

    # Assert
    assert (spec.dataset, spec.partitioner, spec.seed) == ("digits", "iid", 7)
    assert spec.target_domains == (0, 2)


def test_data_spec_defaults_are_the_run_config_defaults():
    # Prepare
    from feddistill.data import DataSpec

    # Execute / Assert
    assert RunConfig().data_spec() == DataSpec()


def test_data_package_does_not_import_the_run_config():
    # Prepare: a fresh interpreter, so nothing else has loaded feddistill.config
    import subprocess
    import sys

    code = "import sys, feddistill.data; print('feddistill.config' in sys.modules)"

    # Execute
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    # Assert
    assert out.stdout.strip() == "False"


def test_importing_the_config_does_not_load_torch():
    # Prepare: a fresh interpreter; the registries that load torch are read on first use
    import subprocess
    import sys

    code = "import sys, feddistill.config; print('torch' in sys.modules)"

    # Execute
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    # Assert
    assert out.stdout.strip() == "False"


def test_unknown_channel_pruning_importance_is_refused():
    with pytest.raises(ValueError, match="channel-pruning-importance='l2' is not allowed"):
        from_mapping({"channel-pruning-importance": "l2"})


def test_taylor_channel_importance_without_a_consensus_strategy_is_refused():
    with pytest.raises(ValueError, match="strategy='fedavg' builds none"):
        from_mapping(
            {
                "strategy": "fedavg",
                "channel-pruning-ratio": 0.5,
                "channel-pruning-round": 2,
                "channel-pruning-importance": "taylor",
            }
        )


def test_taylor_channel_importance_in_round_1_is_refused():
    with pytest.raises(ValueError, match="channel-pruning-round=1 has none"):
        from_mapping({"channel-pruning-ratio": 0.5, "channel-pruning-importance": "taylor"})
