"""Input domains: a fixed feature space (PCA of the pixels) and KMeans clusters in it.

A :class:`DomainModel` is what "domain" means everywhere in feddistill: the KMeans
partitioner gives client ``k`` the training samples of domain ``k``; the server reports
test accuracy per domain; clients score proxy samples by their distance to their own
data in :meth:`DomainModel.transform`'s feature space.

Domain ids are stable: clusters are ordered by size on the training data, largest
first, and clusters of equal size by the smallest training index they contain. The same
data and seed give the same ids in every process.
"""

from __future__ import annotations

import logging

import numpy as np
from threadpoolctl import threadpool_limits
from torch import Tensor

logger = logging.getLogger(__name__)

DEFAULT_N_COMPONENTS = 50  # PCA components of the feature space (fewer if data is smaller)
KMEANS_N_INIT = 10  # KMeans restarts; the best inertia wins
# BLAS / OpenMP threads while fitting and projecting. One thread makes the results
# bit-identical whatever the process's thread settings (Ray workers run with
# OMP_NUM_THREADS=1, a driver with all cores) and avoids OpenMP spin-waiting when the
# cores are shared, which made a 3,000-sample fit 30x slower on 2 busy cores.
NUM_THREADS = 1


def flatten(x: Tensor | np.ndarray) -> np.ndarray:
    """Rows of features as a float32 array.

    Args:
        x: images of shape (N, C, H, W), or any (N, ...) array / tensor.

    Returns:
        float32 array of shape (N, C * H * W).
    """
    arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    return np.ascontiguousarray(arr.reshape(arr.shape[0], -1), dtype=np.float32)


def count_distinct_rows(rows: np.ndarray) -> int:
    """Number of distinct rows of a 2-D array (exact comparison)."""
    return int(np.unique(rows, axis=0).shape[0])


def check_distinct(rows: np.ndarray, num_clusters: int) -> None:
    """Fail before fitting if KMeans could not give every cluster a distinct point.

    Args:
        rows: features, shape (N, D).
        num_clusters: clusters asked for.

    Raises:
        ValueError: if `rows` has fewer distinct rows than `num_clusters` (some clusters
            would be empty).
    """
    distinct = count_distinct_rows(rows)
    if distinct < num_clusters:
        raise ValueError(
            f"cannot form {num_clusters} non-empty clusters: the {rows.shape[0]} samples "
            f"have only {distinct} distinct feature rows; ask for at most {distinct} "
            "clusters (partitions) or use more varied data"
        )


class DomainModel:
    """A fitted PCA projection plus ordered KMeans centroids; assigns domain ids.

    Args:
        mean: pixel mean subtracted before projecting, shape (D,).
        components: PCA axes, shape (P, D).
        centroids: domain centroids in feature space, shape (K, P), row k = domain k.
        fit_sizes: samples of each domain in the data it was fitted on, shape (K,).
    """

    def __init__(
        self,
        mean: np.ndarray,
        components: np.ndarray,
        centroids: np.ndarray,
        fit_sizes: np.ndarray,
    ) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.components = np.asarray(components, dtype=np.float32)
        self.centroids = np.asarray(centroids, dtype=np.float32)
        self.fit_sizes = np.asarray(fit_sizes, dtype=np.int64)

    @property
    def n_domains(self) -> int:
        """Number of domains K."""
        return int(self.centroids.shape[0])

    @property
    def n_components(self) -> int:
        """Dimension P of the feature space."""
        return int(self.components.shape[0])

    def transform(self, x: Tensor | np.ndarray) -> np.ndarray:
        """Project images into the fixed feature space.

        Args:
            x: images, shape (N, C, H, W) (or (N, D) rows) with D = C * H * W pixels.

        Returns:
            float32 features, shape (N, P).

        Raises:
            ValueError: if the images do not have the D pixels the model was fitted on.
        """
        rows = flatten(x)
        if rows.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"DomainModel was fitted on {self.mean.shape[0]} pixels per image, got "
                f"{rows.shape[1]} (input shape {tuple(x.shape)})"
            )
        with threadpool_limits(limits=NUM_THREADS):
            return (rows - self.mean) @ self.components.T  # (N, D) @ (D, P) -> (N, P)

    def predict(self, x: Tensor | np.ndarray) -> np.ndarray:
        """Domain id of each image: the nearest centroid in feature space.

        Args:
            x: images, shape (N, C, H, W) (or (N, D) rows).

        Returns:
            int64 domain ids in [0, K), shape (N,); ties go to the lower id.

        Raises:
            ValueError: see :meth:`transform`.
        """
        features = self.transform(x)
        with threadpool_limits(limits=NUM_THREADS):
            return _nearest(features, self.centroids)

    def __repr__(self) -> str:
        return (
            f"DomainModel(n_domains={self.n_domains}, n_components={self.n_components}, "
            f"fit_sizes={self.fit_sizes.tolist()})"
        )


def _nearest(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    # squared distances (N, K) = |f|^2 - 2 f.c + |c|^2; argmin takes the first minimum
    dist = (
        (features**2).sum(axis=1, keepdims=True)
        - 2.0 * features @ centroids.T
        + (centroids**2).sum(axis=1)[None, :]
    )
    return np.argmin(dist, axis=1).astype(np.int64)


def fit_domains(
    train_x: Tensor | np.ndarray,
    num_domains: int,
    seed: int,
    n_components: int = DEFAULT_N_COMPONENTS,
) -> DomainModel:
    """Fit the domain model: PCA of the flattened pixels, then KMeans in that space.

    PCA keeps ``min(n_components, N, D)`` components; KMeans (k-means++, 10 restarts) uses
    `seed` as its random state. Clusters are renumbered by size on `train_x`, largest
    first, ties broken by the smallest index of a member, so ids do not depend on
    KMeans' internal label order.

    Args:
        train_x: training images, shape (N, C, H, W) (or (N, D) rows).
        num_domains: number of clusters K, 1 <= K <= number of distinct rows.
        seed: random state of PCA and KMeans, >= 0.
        n_components: upper bound on the feature dimension P, >= 1.

    Returns:
        The fitted model; ``predict(train_x)`` gives each training sample's domain.

    Raises:
        ValueError: if `num_domains` or `n_components` is < 1, or `train_x` has fewer
            distinct rows than `num_domains` (checked before fitting).

    References:
        Lloyd, "Least squares quantization in PCM" (1982); Arthur & Vassilvitskii,
        "k-means++" (2007). Cross-domain clients from clustered inputs as in the
        seed document's source / target split (K = 2).
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    if num_domains < 1:
        raise ValueError(f"num_domains={num_domains!r} is out of range; allowed: [1, inf)")
    if n_components < 1:
        raise ValueError(f"n_components={n_components!r} is out of range; allowed: [1, inf)")
    rows = flatten(train_x)  # (N, D)
    check_distinct(rows, num_domains)
    num_samples, num_pixels = rows.shape
    p = min(n_components, num_samples, num_pixels)
    with threadpool_limits(limits=NUM_THREADS):
        pca = PCA(n_components=p, random_state=seed).fit(rows)
        unordered = DomainModel(pca.mean_, pca.components_, np.zeros((0, p)), np.zeros(0))
        features = unordered.transform(rows)  # (N, D) -> (N, P)
        kmeans = KMeans(n_clusters=num_domains, n_init=KMEANS_N_INIT, random_state=seed)
        kmeans.fit(features)
        centroids = kmeans.cluster_centers_.astype(np.float32)  # (K, P)
        labels = _nearest(features, centroids)
        sizes = np.bincount(labels, minlength=num_domains)
        first = np.array(
            [
                np.flatnonzero(labels == k)[0] if sizes[k] else num_samples
                for k in range(num_domains)
            ]
        )
        order = np.lexsort((first, -sizes))  # primary key: size desc; then first index asc
    model = DomainModel(pca.mean_, pca.components_, centroids[order], sizes[order])
    logger.info(
        "fitted %d domains on %d samples (%d PCA components): sizes %s",
        num_domains,
        num_samples,
        p,
        model.fit_sizes.tolist(),
    )
    return model
