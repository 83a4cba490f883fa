"""Tests of feddistill.distill.affinity: domain_affinity and SharedFeatureSpace."""

import math

import numpy as np
import pytest
import torch

from feddistill.distill import SharedFeatureSpace, domain_affinity

PROXY_LINE = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])  # d = 0, 1, 2 from the origin


def test_domain_affinity_default_bandwidth_is_half_median() -> None:
    # Prepare: one client sample at the origin (k capped at n = 1), d = [0, 1, 2],
    # median 1, s = 0.5 -> a = exp(-d^2 / 0.5) = [1, e^-2, e^-8] = [1, 0.135335, 0.000335]
    client = np.zeros((1, 2))

    # Execute
    aff = domain_affinity(client, PROXY_LINE)

    # Assert
    torch.testing.assert_close(aff, torch.tensor([1.0, math.exp(-2), math.exp(-8)]))


def test_domain_affinity_explicit_bandwidth() -> None:
    # Prepare: s = 1 -> a = exp(-d^2 / 2) = [1, 0.606531, 0.135335]
    client = torch.zeros(1, 2)

    # Execute
    aff = domain_affinity(client, torch.as_tensor(PROXY_LINE), bandwidth=1.0)

    # Assert
    torch.testing.assert_close(aff, torch.tensor([1.0, math.exp(-0.5), math.exp(-2)]))


def test_domain_affinity_bandwidth_scale() -> None:
    # Prepare: scale 1 -> s = median = 1, same as bandwidth = 1
    # Execute
    aff = domain_affinity(np.zeros((1, 2)), PROXY_LINE, bandwidth_scale=1.0)

    # Assert
    torch.testing.assert_close(aff, torch.tensor([1.0, math.exp(-0.5), math.exp(-2)]))


def test_domain_affinity_averages_k_nearest_neighbours() -> None:
    # Prepare: client samples at 0 and 2 on a line; proxy at 0: k=1 -> d = 0 (a = 1),
    # k=2 -> d = (0 + 2) / 2 = 1, with s = 1: a = exp(-1/2) = 0.606531
    client = np.array([[0.0], [2.0]])
    proxy = np.array([[0.0]])

    # Execute
    a1 = domain_affinity(client, proxy, bandwidth=1.0, k_neighbors=1)
    a2 = domain_affinity(client, proxy, bandwidth=1.0, k_neighbors=2)

    # Assert
    torch.testing.assert_close(a1, torch.tensor([1.0]))
    torch.testing.assert_close(a2, torch.tensor([math.exp(-0.5)]))


def test_domain_affinity_follows_multimodal_data_not_centroid() -> None:
    # Prepare: two blobs of 5 at x=-10 and x=+10; a proxy sample on a blob is near the
    # data, one at the centroid (x=0) is far from every sample.
    client = np.array([[-10.0]] * 5 + [[10.0]] * 5)
    proxy = np.array([[10.0], [0.0]])

    # Execute
    aff = domain_affinity(client, proxy, bandwidth=5.0)

    # Assert
    assert aff[0] == pytest.approx(1.0)
    assert aff[1] < 0.2


def test_domain_affinity_is_in_unit_interval_and_positive() -> None:
    # Prepare: a far-away proxy sample must not underflow to 0
    client = np.zeros((3, 2))
    proxy = np.array([[0.0, 0.0], [1.0, 0.0], [1e4, 0.0]])

    # Execute
    aff = domain_affinity(client, proxy)

    # Assert
    assert aff.shape == (3,) and aff.dtype == torch.float32
    assert (aff > 0).all() and (aff <= 1).all()


def test_domain_affinity_zero_median_falls_back_to_max() -> None:
    # Prepare: 2 of 3 proxy samples coincide with the client -> median 0; s = 0.5 * max = 1,
    # d = [0, 0, 2] -> a = [1, 1, exp(-2)]
    proxy = np.array([[0.0], [0.0], [2.0]])

    # Execute
    aff = domain_affinity(np.zeros((1, 1)), proxy)

    # Assert
    torch.testing.assert_close(aff, torch.tensor([1.0, 1.0, math.exp(-2)]))


@pytest.mark.parametrize(
    ("client", "proxy", "kwargs", "message"),
    [
        (np.zeros((0, 2)), PROXY_LINE, {}, "client_features"),
        (np.zeros(2), PROXY_LINE, {}, "client_features"),
        (np.zeros((1, 2)), np.zeros((0, 2)), {}, "proxy_features"),
        (np.zeros((1, 3)), PROXY_LINE, {}, "feature dimensions differ"),
        (np.array([[np.nan, 0.0]]), PROXY_LINE, {}, "finite"),
        (np.zeros((1, 2)), PROXY_LINE, {"bandwidth": 0.0}, "bandwidth"),
        (np.zeros((1, 2)), PROXY_LINE, {"k_neighbors": 0}, "k_neighbors"),
        (np.zeros((1, 2)), PROXY_LINE, {"bandwidth_scale": -1.0}, "bandwidth_scale"),
    ],
)
def test_domain_affinity_rejects_bad_input(
    client: np.ndarray, proxy: np.ndarray, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        domain_affinity(client, proxy, **kwargs)


def test_shared_feature_space_shape_and_determinism() -> None:
    # Prepare
    proxy_x = torch.rand(50, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    client_x = torch.rand(7, 1, 6, 6, generator=torch.Generator().manual_seed(1))

    # Execute
    feats_a = SharedFeatureSpace(proxy_x, n_components=8, seed=0).transform(client_x)
    feats_b = SharedFeatureSpace(proxy_x.clone(), n_components=8, seed=0).transform(client_x)

    # Assert
    assert feats_a.shape == (7, 8) and feats_a.dtype == np.float32
    np.testing.assert_array_equal(feats_a, feats_b)


def test_shared_feature_space_caps_components_at_proxy_size() -> None:
    # Prepare: 5 proxy samples allow at most 5 components
    proxy_x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))

    # Execute
    space = SharedFeatureSpace(proxy_x, n_components=32)

    # Assert
    assert space.n_components == 5
    assert space.transform(proxy_x).shape == (5, 5)


def test_shared_feature_space_rejects_empty_proxy() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        SharedFeatureSpace(torch.zeros(0, 1, 4, 4))


def test_shared_feature_space_rejects_zero_components() -> None:
    with pytest.raises(ValueError, match="n_components"):
        SharedFeatureSpace(torch.rand(5, 1, 4, 4), n_components=0)


def test_shared_feature_space_rejects_other_input_size() -> None:
    space = SharedFeatureSpace(torch.rand(5, 1, 4, 4), n_components=2)
    with pytest.raises(ValueError, match="16"):
        space.transform(torch.rand(3, 1, 5, 5))


def test_shared_feature_space_from_pca_transforms_like_the_fitted_space() -> None:
    # Prepare: a fitted space and one rebuilt from its two arrays
    proxy_x = torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    fitted = SharedFeatureSpace(proxy_x, n_components=3)
    rebuilt = SharedFeatureSpace.from_pca(fitted.mean, fitted.components)
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))

    # Execute
    feats = rebuilt.transform(x)

    # Assert
    np.testing.assert_array_equal(feats, fitted.transform(x))


def test_shared_feature_space_transform_is_centred_projection() -> None:
    # Prepare: mean (1, 1), one axis (1, 0): x = (3, 5) -> (3 - 1) * 1 + (5 - 1) * 0 = 2
    space = SharedFeatureSpace.from_pca(np.array([1.0, 1.0]), np.array([[1.0, 0.0]]))

    # Execute
    feats = space.transform(torch.tensor([[3.0, 5.0]]))

    # Assert
    np.testing.assert_array_equal(feats, np.array([[2.0]], dtype=np.float32))


def test_shared_feature_space_from_pca_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"mean must be \(F,\) and components \(d, F\)"):
        SharedFeatureSpace.from_pca(np.zeros((2, 2)), np.zeros((1, 2)))


def test_shared_feature_space_from_pca_rejects_other_feature_count() -> None:
    with pytest.raises(ValueError, match="need the same F"):
        SharedFeatureSpace.from_pca(np.zeros(3), np.zeros((1, 2)))
