"""Tests of feddistill.protocol: the effective config and the strategy plan."""

from __future__ import annotations

import pytest

from feddistill.config import RunConfig
from feddistill.protocol import effective_config, plan_for


def test_fedmd_runs_a_mean_consensus_whatever_the_config_says() -> None:
    # Prepare
    cfg = RunConfig(strategy="fedmd", consensus="domain")

    # Execute
    eff = effective_config(cfg)

    # Assert: the mean consensus, no server distillation, the configured compression
    assert (eff.consensus, eff.server_distill_epochs) == ("mean", 0)
    assert (eff.update_density, eff.update_bit_width) == (cfg.update_density, cfg.update_bit_width)


def test_logits_only_uploads_dense_fp32_settings_and_distills_at_least_one_epoch() -> None:
    # Prepare
    cfg = RunConfig(strategy="logits-only", server_distill_epochs=0, update_bit_width=4)

    # Execute
    eff = effective_config(cfg)

    # Assert
    assert (eff.update_density, eff.update_bit_width, eff.error_feedback) == (1.0, 32, False)
    assert eff.server_distill_epochs == 1


def test_feddistill_config_is_its_own_effective_config() -> None:
    # Prepare
    cfg = RunConfig(strategy="feddistill")

    # Execute / Assert: nothing to override, the same object comes back
    assert effective_config(cfg) is cfg


@pytest.mark.parametrize(
    "strategy", ["feddistill", "fedavg", "fedavg-compressed", "feddf", "fedmd", "logits-only"]
)
def test_effective_config_is_idempotent_and_the_plan_reads_it(strategy: str) -> None:
    # Prepare
    eff = effective_config(RunConfig(strategy=strategy))

    # Execute
    plan = plan_for(RunConfig(strategy=strategy))

    # Assert: resolving twice changes nothing; the plan's numbers are the config's
    assert effective_config(eff) == eff
    assert (plan.density, plan.bit_width, plan.error_feedback) == (
        eff.update_density,
        eff.update_bit_width,
        eff.error_feedback,
    )
    assert plan.server_distill_epochs == eff.server_distill_epochs


@pytest.mark.parametrize(
    ("settings", "freezes"),
    [
        ({"strategy": "feddistill", "teacher_rounds": 0}, False),
        ({"strategy": "feddistill"}, True),  # teacher-rounds=5 by default (session 27)
        ({"strategy": "feddistill", "teacher_rounds": 3}, True),
        ({"strategy": "logits-only", "teacher_rounds": 0}, False),
        ({"strategy": "logits-only", "teacher_plateau_rounds": 2}, True),
        ({"strategy": "fedavg", "teacher_rounds": 3}, False),  # no teachers to freeze
    ],
)
def test_plan_freezes_teachers_only_with_teachers_and_a_freeze_key(
    settings: dict, freezes: bool
) -> None:
    # Execute
    plan = plan_for(RunConfig(**settings))
    # Assert
    assert plan.freezes_teachers is freezes


def test_logits_only_distills_every_round_whatever_server_distill_rounds_says():
    # Prepare: its server student learns by distillation only
    cfg = RunConfig(strategy="logits-only", server_distill_rounds=3)
    # Execute
    eff = effective_config(cfg)
    # Assert
    assert eff.server_distill_rounds == 0
