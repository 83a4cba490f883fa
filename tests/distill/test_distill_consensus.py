"""Tests of feddistill.distill.consensus: weighted_consensus, consensus and its modes."""

import math

import pytest
import torch

from feddistill.distill import CONSENSUS_MODES, largest_cluster_mask, weighted_consensus
from feddistill.distill.consensus import consensus

LN3 = math.log(3.0)
# Client A predicts [3/4, 1/4] (logits [ln 3, 0]), client B predicts [1/4, 3/4].
A_B = torch.tensor([[[LN3, 0.0]], [[0.0, LN3]]])  # (N=2, B=1, K=2)
# Client A as above, client C uniform [1/2, 1/2] (logits [0, 0]).
A_C = torch.tensor([[[LN3, 0.0]], [[0.0, 0.0]]])


def test_weighted_consensus_equal_weights_is_mean() -> None:
    # Prepare: (3/4 + 1/4) / 2 = 1/2 per class
    weights = torch.ones(2, 1)

    # Execute
    out = weighted_consensus(A_B, weights, 1.0)

    # Assert
    torch.testing.assert_close(out, torch.tensor([[0.5, 0.5]]))


def test_weighted_consensus_weights_1_3_mix_quarter_three_quarters() -> None:
    # Prepare: weights [1, 3] -> [0.25, 0.75]; 0.25 [3/4, 1/4] + 0.75 [1/4, 3/4]
    # = [0.1875 + 0.1875, 0.0625 + 0.5625] = [0.375, 0.625]
    weights = torch.tensor([[1.0], [3.0]])

    # Execute
    out = weighted_consensus(A_B, weights, 1.0)

    # Assert
    torch.testing.assert_close(out, torch.tensor([[0.375, 0.625]]))


def test_weighted_consensus_zero_weight_ignores_client() -> None:
    # Prepare
    weights = torch.tensor([[0.0], [2.0]])

    # Execute
    out = weighted_consensus(A_B, weights, 1.0)

    # Assert
    torch.testing.assert_close(out, torch.tensor([[0.25, 0.75]]))


def test_weighted_consensus_applies_temperature() -> None:
    # Prepare: at T=2 logits [2 ln 3, 0] give [3/4, 1/4]; a single client is its own mean
    logits = torch.tensor([[[2 * LN3, 0.0]]])

    # Execute
    out = weighted_consensus(logits, torch.ones(1, 1), 2.0)

    # Assert
    torch.testing.assert_close(out, torch.tensor([[0.75, 0.25]]))


@pytest.mark.parametrize("mode", CONSENSUS_MODES)
def test_every_mode_returns_finite_distributions(mode: str) -> None:
    # Prepare: large logits must not overflow
    logits = torch.randn(5, 7, 4, generator=torch.Generator().manual_seed(0)) * 50
    affinity = torch.rand(5, 7, generator=torch.Generator().manual_seed(1)) + 0.1
    class_counts = torch.ones(5, 4)  # coverage modes; ignored by the others

    # Execute
    out = consensus(logits, mode, 3.0, affinity=affinity, class_counts=class_counts)

    # Assert
    assert out.shape == (7, 4)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.sum(1), torch.ones(7))


def test_mean_mode_averages_probabilities() -> None:
    # Prepare: (3/4 + 1/2) / 2 = 5/8
    # Execute
    out = consensus(A_C, "mean", 1.0)

    # Assert
    torch.testing.assert_close(out, torch.tensor([[0.625, 0.375]]))


def test_confidence_mode_weights_by_max_probability() -> None:
    # Prepare: confidences 3/4 and 1/2 -> weights 0.6, 0.4;
    # 0.6 [0.75, 0.25] + 0.4 [0.5, 0.5] = [0.45 + 0.2, 0.15 + 0.2] = [0.65, 0.35]
    # Execute
    out = consensus(A_C, "confidence", 1.0)

    # Assert
    torch.testing.assert_close(out, torch.tensor([[0.65, 0.35]]))


def test_entropy_mode_weights_by_exp_minus_entropy() -> None:
    # Prepare: H_A = 0.75 ln(4/3) + 0.25 ln 4 = 0.215762 + 0.346574 = 0.562335,
    # exp(-H_A) = 0.569877; H_C = ln 2, exp(-H_C) = 0.5. w_A = 0.569877 / 1.069877
    # = 0.532657; class 0: 0.532657 * 0.75 + 0.467343 * 0.5 = 0.399493 + 0.233672 = 0.633164
    # Execute
    out = consensus(A_C, "entropy", 1.0)

    # Assert
    torch.testing.assert_close(out, torch.tensor([[0.633164, 0.366836]]), atol=1e-5, rtol=0)


def test_entropy_and_confidence_use_untempered_predictions() -> None:
    # Prepare: at T=1000 both clients are ~uniform, but the weights still come from T=1
    # Execute
    out = consensus(A_C * 1000, "confidence", 1000.0)
    uniform_weights = weighted_consensus(A_C * 1000, torch.ones(2, 1), 1000.0)

    # Assert: weights are 1 vs 1/2 (A is one-hot at T=1), so not the plain mean
    expected = weighted_consensus(A_C * 1000, torch.tensor([[1.0], [0.5]]), 1000.0)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, uniform_weights, atol=1e-6, rtol=0)


def test_domain_mode_uses_affinity_as_weights() -> None:
    # Prepare: affinity [1, 3] as in the weighted example -> [0.375, 0.625]
    affinity = torch.tensor([[0.1], [0.3]])

    # Execute
    out = consensus(A_B, "domain", 1.0, affinity=affinity)

    # Assert
    torch.testing.assert_close(out, torch.tensor([[0.375, 0.625]]))


def test_cluster_mean_ignores_outlier_client() -> None:
    # Prepare: two clients say [3/4, 1/4], one says [1/4, 3/4]. k=2 clusters: {A, A'}
    # and {B}; the largest cluster's mean is [3/4, 1/4] (plain mean would be 7/12).
    logits = torch.tensor([[[LN3, 0.0]], [[LN3, 0.0]], [[0.0, LN3]]])

    # Execute
    out = consensus(logits, "cluster-mean", 1.0, num_clusters=2)

    # Assert
    torch.testing.assert_close(out, torch.tensor([[0.75, 0.25]]))


def test_cluster_mean_averages_within_majority_cluster() -> None:
    # Prepare: majority {[0.75, 0.25], [0.5, 0.5]} vs outlier one-hot-ish [0.001, 0.999]
    # (logits [0, ln 999]); majority mean = [0.625, 0.375].
    logits = torch.tensor([[[LN3, 0.0]], [[0.0, 0.0]], [[0.0, math.log(999.0)]]])

    # Execute
    out = consensus(logits, "cluster-mean", 1.0, num_clusters=2)

    # Assert
    torch.testing.assert_close(out, torch.tensor([[0.625, 0.375]]))


def test_cluster_mean_with_one_cluster_is_mean() -> None:
    # Prepare
    logits = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(0))

    # Execute
    out = consensus(logits, "cluster-mean", 2.0, num_clusters=1)

    # Assert
    torch.testing.assert_close(out, consensus(logits, "mean", 2.0))


def test_cluster_mean_caps_clusters_at_num_clients() -> None:
    # Prepare: k = min(5, N=2) = 2 clusters of one client each; tie -> the medoid's
    # cluster (cluster 0). With two points both are medoids; the lowest index, A, wins.
    # Execute
    out = consensus(A_B, "cluster-mean", 1.0, num_clusters=5)

    # Assert
    torch.testing.assert_close(out, torch.tensor([[0.75, 0.25]]))


def test_cluster_mean_is_deterministic() -> None:
    # Prepare
    logits = torch.randn(30, 200, 10, generator=torch.Generator().manual_seed(3)) * 3

    # Execute
    first = consensus(logits, "cluster-mean", 2.0, num_clusters=3)
    second = consensus(logits.clone(), "cluster-mean", 2.0, num_clusters=3)

    # Assert
    assert torch.equal(first, second)


def test_largest_cluster_mask_is_fast_at_scale() -> None:
    # Prepare: N=100 clients, B=2000 samples, K=10
    probs = torch.softmax(
        torch.randn(100, 2000, 10, generator=torch.Generator().manual_seed(0)), -1
    )

    # Execute
    mask = largest_cluster_mask(probs, 3)

    # Assert: shape, every sample keeps at least one client
    assert mask.shape == (100, 2000)
    assert mask.any(dim=0).all()


# ---- errors -----------------------------------------------------------------------------


def test_consensus_rejects_unknown_mode_listing_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid modes: mean, confidence, entropy, domain"):
        consensus(A_B, "median", 1.0)


@pytest.mark.parametrize("temperature", [0.0, -2.0])
def test_consensus_rejects_non_positive_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        consensus(A_B, "mean", temperature)


def test_weighted_consensus_rejects_non_positive_temperature() -> None:
    with pytest.raises(ValueError, match="temperature"):
        weighted_consensus(A_B, torch.ones(2, 1), 0.0)


def test_consensus_rejects_zero_clients() -> None:
    with pytest.raises(ValueError, match="N == 0"):
        consensus(torch.zeros(0, 3, 2), "mean", 1.0)


@pytest.mark.parametrize("shape", [(2, 3), (2, 0, 3), (2, 3, 0)])
def test_consensus_rejects_bad_logits_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="logits"):
        consensus(torch.zeros(shape), "mean", 1.0)


def test_consensus_rejects_non_finite_logits() -> None:
    logits = A_B.clone()
    logits[1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        consensus(logits, "mean", 1.0)


def test_domain_mode_requires_affinity() -> None:
    with pytest.raises(ValueError, match="needs affinity"):
        consensus(A_B, "domain", 1.0)


@pytest.mark.parametrize(
    ("affinity", "message"),
    [
        (torch.ones(1, 2), "shape"),
        (torch.tensor([[1.0], [-0.5]]), "non-negative"),
        (torch.tensor([[float("nan")], [1.0]]), "NaN or inf"),
        (torch.tensor([[0.0], [0.0]]), r"sum to 0 over clients for proxy sample\(s\) \[0\]"),
    ],
)
def test_domain_mode_rejects_bad_affinity(affinity: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        consensus(A_B, "domain", 1.0, affinity=affinity)


def test_weighted_consensus_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"weights must have shape \(N, B\) = \(2, 1\)"):
        weighted_consensus(A_B, torch.ones(2), 1.0)


def test_weighted_consensus_names_zero_weight_column() -> None:
    # Prepare: sample 1 has no weight from any client
    logits = torch.zeros(2, 3, 2)
    weights = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])

    # Execute / Assert
    with pytest.raises(ValueError, match=r"proxy sample\(s\) \[1\]"):
        weighted_consensus(logits, weights, 1.0)


def test_cluster_mean_rejects_zero_clusters() -> None:
    with pytest.raises(ValueError, match="num_clusters"):
        consensus(A_B, "cluster-mean", 1.0, num_clusters=0)
