"""Cohort-relative clipping and robust aggregators on hand-computed inputs, and
against Flower's implementations on the same inputs."""

import numpy as np
import pytest
import torch
from flwr.server.strategy.aggregate import aggregate_krum

from feddistill.config import AGGREGATORS as CONFIG_AGGREGATORS
from feddistill.server.robust import (
    AGGREGATORS,
    ClientAction,
    RobustPolicy,
    aggregate_updates,
    clip_to_median_norm,
    krum_scores,
    num_byzantine,
    robust_aggregate,
    robustness_columns,
)

KEYS = {"w"}


def ups(*rows, counts=None):
    """One (num_examples, {"w": row, "n": buffer}) pair per row; the buffer is 1-D int."""
    counts = counts or [1] * len(rows)
    return [
        (n, {"w": torch.tensor(r, dtype=torch.float32), "n": torch.tensor([i], dtype=torch.long)})
        for i, (n, r) in enumerate(zip(counts, rows, strict=True))
    ]


def test_config_lists_the_same_aggregators():
    assert CONFIG_AGGREGATORS == AGGREGATORS


def test_clip_scales_only_updates_above_the_multiple_of_the_median():
    # Prepare: norms 1, 2, 40 (3-4-0 triangle x 8); median 2, bound 2 x 2 = 4
    updates = ups([1.0, 0.0], [0.0, 2.0], [24.0, 32.0])
    # Execute
    result = clip_to_median_norm(updates, KEYS, multiple=2.0)
    # Assert
    assert result.norms == pytest.approx([1.0, 2.0, 40.0])
    assert result.bound == pytest.approx(4.0) and result.clipped == [2]
    assert result.updates[2][1]["w"].tolist() == pytest.approx([2.4, 3.2])
    assert result.updates[0][1]["w"].tolist() == [1.0, 0.0]
    assert result.updates[2][1]["n"].tolist() == [2]  # other keys untouched


def test_clip_uses_the_lower_median_for_an_even_cohort():
    # Prepare: norms 1, 1, 100, 100: half the cohort cannot raise the bound
    updates = ups([1.0], [1.0], [100.0], [100.0])
    # Execute
    result = clip_to_median_norm(updates, KEYS, multiple=1.5)
    # Assert
    assert result.bound == pytest.approx(1.5) and result.clipped == [2, 3]


@pytest.mark.parametrize(("updates", "multiple"), [([], 2.0), (ups([1.0]), 0.0)])
def test_clip_rejects_no_updates_and_a_non_positive_multiple(updates, multiple):
    with pytest.raises(ValueError, match="needs at least one update|must be a finite number > 0"):
        clip_to_median_norm(updates, KEYS, multiple)


def test_median_is_coordinate_wise_and_unweighted():
    # Prepare: per coordinate: (1, 2, 9) -> 2; (5, -3, 0) -> 0
    updates = ups([1.0, 5.0], [2.0, -3.0], [9.0, 0.0], counts=[100, 1, 1])
    # Execute
    result = robust_aggregate(updates, KEYS, "median")
    # Assert
    assert result.update["w"].tolist() == [2.0, 0.0] and result.excluded == []
    # the buffer is not a robust key: FedAvg by counts, (0*100 + 1 + 2) / 102 -> 0
    assert result.update["n"].tolist() == [0]


def test_trimmed_mean_drops_f_from_each_end():
    # Prepare: N = 4, fraction 0.25 -> f = 1: (1, 2, 3, 100) -> mean(2, 3) = 2.5
    updates = ups([1.0], [2.0], [3.0], [100.0])
    # Execute
    result = robust_aggregate(updates, KEYS, "trimmed-mean", fraction=0.25)
    # Assert
    assert result.update["w"].tolist() == [2.5]


def test_krum_picks_the_update_closest_to_its_neighbours():
    # Prepare: N = 5, f = 1 -> 2 nearest. Points 0, 1, 2, 3 and an outlier 50 (1-D).
    # scores: x=0: 1+4=5; x=1: 1+1=2; x=2: 1+1=2; x=3: 1+4=5; x=50: 47^2+48^2=4513
    updates = ups([0.0], [1.0], [2.0], [3.0], [50.0])
    # Execute
    scores = krum_scores(updates, KEYS, num_malicious=1)
    result = robust_aggregate(updates, KEYS, "krum", fraction=0.25)
    # Assert
    assert scores == pytest.approx([5.0, 2.0, 2.0, 5.0, 4513.0])
    assert result.update["w"].tolist() == [1.0]  # tie 1 vs 2 goes to the lower index
    assert result.excluded == [0, 2, 3, 4]


def test_multi_krum_averages_the_best_n_minus_f_by_num_examples():
    # Prepare: as above; keep 5 - 1 = 4 best (all but 50), weights 1, 1, 1, 3
    updates = ups([0.0], [1.0], [2.0], [3.0], [50.0], counts=[1, 1, 1, 3, 1])
    # Execute
    result = robust_aggregate(updates, KEYS, "multi-krum", fraction=0.25)
    # Assert: (0 + 1 + 2 + 3*3) / 6 = 2
    assert result.update["w"].tolist() == [2.0] and result.excluded == [4]


@pytest.mark.parametrize("aggregator", ["krum", "multi-krum"])
def test_krum_matches_flower_on_the_same_inputs(aggregator):
    # Prepare: 6 random 2-tensor updates plus one far outlier
    gen = torch.Generator().manual_seed(0)
    updates = [
        (n, {"a": torch.randn(3, generator=gen), "b": torch.randn(2, 2, generator=gen)})
        for n in (10, 20, 30, 40, 50, 60)
    ]
    updates.append((5, {"a": torch.full((3,), 30.0), "b": torch.full((2, 2), -30.0)}))
    keys = {"a", "b"}
    f = num_byzantine(len(updates), 0.25)  # 1
    keep = len(updates) - f if aggregator == "multi-krum" else 0
    flower = aggregate_krum(
        [([u["a"].double().numpy(), u["b"].double().numpy()], n) for n, u in updates],
        num_malicious=f,
        to_keep=keep,
    )
    # Execute
    ours = robust_aggregate(updates, keys, aggregator, fraction=0.25).update
    # Assert
    np.testing.assert_allclose(ours["a"].numpy(), flower[0], rtol=1e-6)
    np.testing.assert_allclose(ours["b"].numpy(), flower[1], rtol=1e-6)


def test_fedavg_aggregator_is_the_weighted_mean():
    updates = ups([0.0], [4.0], counts=[3, 1])
    assert robust_aggregate(updates, KEYS, "fedavg").update["w"].tolist() == [1.0]


def test_unknown_aggregator_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown aggregator 'bulyan'; valid: fedavg, median"):
        robust_aggregate(ups([1.0]), KEYS, "bulyan")


def test_robust_aggregate_needs_an_update():
    with pytest.raises(ValueError, match="needs at least one update"):
        robust_aggregate([], KEYS, "median")


def test_robust_fraction_must_be_below_one_half():
    with pytest.raises(ValueError, match=r"robust fraction must be in \[0, 0.5\), got 0.5"):
        num_byzantine(4, 0.5)


def test_scaled_update_x20_is_clipped_and_reported_by_partition():
    # Prepare: three honest updates of norm 1 and one of them x20 (partition 7)
    updates = ups([1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [20.0, 0.0])
    policy = RobustPolicy(aggregator="fedavg", clip_multiple=2.0)
    # Execute
    update, actions = aggregate_updates(updates, [0, 1, 2, 7], KEYS, policy)
    # Assert: clipped to 2 x 1 -> (2, 0); mean ((1+0+0.6+2)/4, (0+1+0.8+0)/4)
    assert update["w"].tolist() == pytest.approx([0.9, 0.45])
    assert [(a.partition_id, a.action) for a in actions] == [(7, "clipped")]
    assert "norm 20 > 2 x the round's median 1" in actions[0].reason


def test_robustness_columns_count_actions_and_keep_rejections():
    # Prepare
    actions = [ClientAction(0, "clipped", "r"), ClientAction(3, "down-weighted", "d")]
    # Execute
    cols = robustness_columns(actions, ["node 5: rejected: bad"])
    # Assert
    assert (cols["clipped"], cols["down_weighted"], cols["excluded"], cols["capped"]) == (
        1,
        1,
        0,
        0,
    )
    assert cols["robust_events"][-1] == {
        "partition_id": -1,
        "action": "rejected",
        "reason": "node 5: rejected: bad",
    }
