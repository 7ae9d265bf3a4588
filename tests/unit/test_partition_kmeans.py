"""k-means partition: separated blobs recovered exactly (with and without PCA), a disjoint cover,
determinism in the seed, and bad input."""

import numpy as np
import pytest

from commlab.data.partition import kmeans, kmeans_model


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    centres = 10 * rng.normal(size=(4, 20))
    labels = rng.integers(4, size=400)
    return centres[labels] + rng.normal(size=(400, 20)), labels


@pytest.mark.parametrize("pca_dim", [None, 3])
def test_recovers_separated_blobs(pca_dim):
    x, labels = _blobs()
    parts = kmeans(x, 4, pca_dim=pca_dim, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(400))
    for part in parts:
        assert np.all(np.diff(part) > 0) and part.dtype == np.int64
        assert len(np.unique(labels[part])) == 1                                   # one blob per cluster
    # held-out items from the same blobs get the cluster ids of the parts
    rng = np.random.default_rng(9)
    model = kmeans_model(x, 4, pca_dim=pca_dim, seed=0)
    for c, part in enumerate(parts):
        blob = x[part[:5]] + 0.1 * rng.normal(size=(5, 20))
        assert np.all(model.predict(blob) == c)


def test_deterministic_in_seed():
    x, _ = _blobs(1)
    a, b = kmeans(x, 6, pca_dim=5, seed=3), kmeans(x, 6, pca_dim=5, seed=3)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")
def test_bad_input():
    x, _ = _blobs()
    with pytest.raises(ValueError, match="pca_dim"):
        kmeans(x, 4, pca_dim=21, seed=0)
    with pytest.raises(ValueError, match="n_clients"):
        kmeans(x[:3], 4, seed=0)
    with pytest.raises(ValueError, match="finite"):
        kmeans(np.full((5, 2), np.nan), 2, seed=0)
    with pytest.raises(ValueError, match="empty"):
        kmeans(np.zeros((10, 2)), 3, seed=0)
