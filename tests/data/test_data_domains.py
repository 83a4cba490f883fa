"""Input domains: PCA + KMeans, stable ids, nearest-centroid prediction, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feddistill.data import DomainModel, fit_domains


def _blobs(centers: list[tuple[float, float]], sizes: list[int], seed: int = 0) -> np.ndarray:
    """Well separated 2-D blobs, blob after blob, as rows of shape (sum(sizes), 2)."""
    rng = np.random.default_rng(seed)
    parts = [
        np.asarray(c) + rng.normal(0.0, 0.5, size=(n, 2))
        for c, n in zip(centers, sizes, strict=True)
    ]
    return np.concatenate(parts).astype(np.float32)


def _no_fit(*args, **kwargs):
    raise AssertionError("KMeans.fit must not run")


def test_domains_are_numbered_by_size_largest_first():
    # Prepare: blob A (5 points) at (0, 0), B (3) at (100, 0), C (7) at (0, 100)
    rows = _blobs([(0, 0), (100, 0), (0, 100)], [5, 3, 7])
    # Execute
    model = fit_domains(rows, num_domains=3, seed=0)
    # Assert: C -> 0, A -> 1, B -> 2
    assert model.predict(rows).tolist() == [1] * 5 + [2] * 3 + [0] * 7
    assert model.fit_sizes.tolist() == [7, 5, 3]


def test_equal_sizes_are_numbered_by_first_index():
    # Prepare: 4 points at (50, 50) come first in the data, then 4 at (0, 0)
    rows = _blobs([(50, 50), (0, 0)], [4, 4])
    # Execute
    model = fit_domains(rows, num_domains=2, seed=0)
    # Assert
    assert model.predict(rows).tolist() == [0] * 4 + [1] * 4


def test_ids_do_not_depend_on_the_seed():
    # Prepare
    rows = _blobs([(0, 0), (100, 0), (0, 100)], [5, 3, 7])
    # Execute
    ids = [fit_domains(rows, 3, seed=s).predict(rows).tolist() for s in (0, 1, 2)]
    # Assert
    assert ids[0] == ids[1] == ids[2]


def test_new_points_go_to_the_nearest_centroid():
    # Prepare
    model = fit_domains(_blobs([(0, 0), (100, 0), (0, 100)], [5, 3, 7]), 3, seed=0)
    new = np.array([[99.0, 1.0], [1.0, 99.0], [2.0, -1.0]], dtype=np.float32)
    # Execute / Assert
    assert model.predict(new).tolist() == [2, 0, 1]


def test_transform_projects_images_to_at_most_50_features():
    # Prepare: 60 images of 1x8x8 = 64 pixels -> min(50, 60, 64) = 50 components
    x = torch.randn(60, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model = fit_domains(x, num_domains=2, seed=0)
    # Execute
    features = model.transform(x)
    # Assert
    assert features.shape == (60, 50)
    assert features.dtype == np.float32
    assert model.n_components == 50
    assert model.n_domains == 2
    assert model.predict(x).dtype == np.int64


def test_feature_dimension_is_capped_by_sample_count():
    # Prepare: 12 images of 64 pixels -> min(50, 12, 64) = 12 components
    x = torch.randn(12, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    # Execute
    model = fit_domains(x, num_domains=2, seed=0)
    # Assert
    assert model.n_components == 12


def test_too_few_distinct_rows_fail_before_fitting(monkeypatch):
    # Prepare: 17 rows, only 9 distinct (0..8, then 0..7 again)
    rows = np.concatenate([np.arange(9), np.arange(8)]).astype(np.float32).reshape(17, 1)
    monkeypatch.setattr("sklearn.cluster.KMeans.fit", _no_fit)
    # Execute / Assert
    with pytest.raises(ValueError, match=r"cannot form 10 non-empty clusters: the 17 samples "):
        fit_domains(rows, num_domains=10, seed=0)


def test_non_positive_domain_count_is_rejected():
    with pytest.raises(ValueError, match=r"num_domains=0 is out of range; allowed: \[1, inf\)"):
        fit_domains(np.zeros((4, 2), dtype=np.float32), num_domains=0, seed=0)


def test_non_positive_component_count_is_rejected():
    with pytest.raises(ValueError, match=r"n_components=0 is out of range"):
        fit_domains(_blobs([(0, 0)], [4]), num_domains=1, seed=0, n_components=0)


def test_images_of_another_size_are_rejected():
    # Prepare: fitted on 2 "pixels" per row
    model = fit_domains(_blobs([(0, 0), (100, 0)], [3, 3]), 2, seed=0)
    # Execute / Assert
    with pytest.raises(ValueError, match=r"fitted on 2 pixels per image, got 3"):
        model.predict(np.zeros((1, 3), dtype=np.float32))


def test_model_rebuilt_from_its_arrays_predicts_the_same():
    # Prepare (a Ray actor receives the model as plain arrays)
    rows = _blobs([(0, 0), (100, 0), (0, 100)], [5, 3, 7])
    model = fit_domains(rows, 3, seed=0)
    # Execute
    copy = DomainModel(model.mean, model.components, model.centroids, model.fit_sizes)
    # Assert
    assert copy.predict(rows).tolist() == model.predict(rows).tolist()
    assert "n_domains=3" in repr(copy)
