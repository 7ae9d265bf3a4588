"""Client partitioners for federated and decentralised experiments, and a seeded train/test split.

Every partitioner returns one sorted ``int64`` index array per client. The arrays are disjoint, and
the result depends only on the arguments and ``seed`` (each call draws from its own
``np.random.default_rng(seed)``; the global RNG is never used).

* :func:`iid`: a seeded permutation cut into near-equal parts.
* :func:`k_classes`: "pathological" non-IID shards, each client holds exactly ``k`` classes.
* :func:`pathological_shards`: McMahan et al.'s shards: sort by label, cut into equal shards, deal
  ``shards_per_client`` random shards to each client.
* :func:`dirichlet`: per-class client proportions drawn from Dir(alpha); small alpha = more skew.
* :func:`kmeans`: clusters of the items' feature vectors (optionally after PCA), scikit-learn's k-means;
  :func:`kmeans_model` returns the fitted PCA + k-means, whose ``predict`` assigns held-out items.
* :func:`train_test_indices`: a seeded hold-out split.
"""

from __future__ import annotations

import numpy as np

from commlab._checks import check_fraction, check_int, check_positive, check_seed


def _check_labels(labels) -> np.ndarray:
    """``labels`` as a non-empty 1-D integer numpy array (numpy arrays, CPU tensors, lists)."""
    array = np.asarray(labels)
    if array.dtype.kind not in "iu":
        raise TypeError(f"labels must have an integer dtype, got {array.dtype}")
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {array.shape}")
    return array


def _class_indices(labels: np.ndarray) -> list[np.ndarray]:
    """Indices of each distinct label, in ascending label order."""
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    return np.split(order.astype(np.int64), starts[1:])


def iid(n_items: int, n_clients: int, *, seed: int) -> list[np.ndarray]:
    """Split ``range(n_items)`` at random into ``n_clients`` near-equal parts.

    Args:
        n_items: number of items, >= n_clients.
        n_clients: number of clients, >= 1.
        seed: non-negative integer seed.

    Returns:
        ``n_clients`` sorted int64 arrays covering ``range(n_items)``; sizes differ by at most one.
    """
    n_clients = check_int("n_clients", n_clients, low=1)
    n_items = check_int("n_items", n_items, low=n_clients)
    permutation = np.random.default_rng(check_seed(seed)).permutation(n_items)
    return [np.sort(part).astype(np.int64) for part in np.array_split(permutation, n_clients)]


def k_classes(labels, n_clients: int, k: int, *, seed: int) -> list[np.ndarray]:
    """Give each client exactly ``k`` distinct classes ("pathological" non-IID shards).

    The C distinct labels are put in a seeded random order ``perm``; client ``c`` holds the classes
    ``perm[(c * k + j) % C]`` for ``j < k``. Each held class's indices are shuffled (seeded) and split
    evenly (sizes differ by at most one) among the clients holding it, in client order.

    Classes that no client holds (when ``n_clients * k < C``) are left out, so the union of the
    parts does not cover every item in that case.

    Args:
        labels: 1-D integer array of length N (numpy array, CPU tensor or list).
        n_clients: number of clients, >= 1.
        k: classes per client, 1 <= k <= C (the number of distinct labels).
        seed: non-negative integer seed.

    Returns:
        ``n_clients`` sorted, disjoint int64 arrays of indices into ``labels``.

    Raises:
        ValueError: if a class has fewer items than clients holding it (some client would then
            not get all of its k classes).
    """
    labels = _check_labels(labels)
    n_clients = check_int("n_clients", n_clients, low=1)
    by_class = _class_indices(labels)
    n_classes = len(by_class)
    k = check_int("k", k, low=1, high=n_classes)
    rng = np.random.default_rng(check_seed(seed))
    permutation = rng.permutation(n_classes)
    holders: list[list[int]] = [[] for _ in range(n_classes)]
    for client in range(n_clients):
        for j in range(k):
            holders[permutation[(client * k + j) % n_classes]].append(client)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for cls, clients in enumerate(holders):
        if not clients:
            continue
        indices = by_class[cls]
        if len(indices) < len(clients):
            raise ValueError(
                f"class {labels[indices[0]]} has {len(indices)} items but {len(clients)} clients hold it; "
                f"use fewer clients or a smaller k"
            )
        for client, piece in zip(clients, np.array_split(rng.permutation(indices), len(clients)), strict=True):
            parts[client].append(piece)
    return [np.sort(np.concatenate(pieces)).astype(np.int64) for pieces in parts]


def pathological_shards(labels, n_clients: int, shards_per_client: int = 2, *, seed: int) -> list[np.ndarray]:
    """McMahan et al. (2017)'s pathological non-IID split: sort by label, cut into shards, deal them.

    The items are put in a seeded random order and then stably sorted by label (so each label's
    items are in random order), the sorted sequence is cut into ``n_clients * shards_per_client``
    contiguous shards of near-equal size (sizes differ by at most one), and a seeded permutation of
    the shards gives client ``c`` the shards ``perm[c * s : (c + 1) * s]``. A shard spans one label
    unless it straddles a label boundary, so a client holds at most ``2 * shards_per_client`` labels
    (usually ``shards_per_client`` or fewer; two shards of one label are possible, as in the paper).

    Args:
        labels: 1-D integer array of length N (numpy array, CPU tensor or list).
        n_clients: number of clients, >= 1.
        shards_per_client: shards per client s, >= 1, with ``n_clients * s <= N``.
        seed: non-negative integer seed.

    Returns:
        ``n_clients`` sorted int64 arrays that partition ``range(N)``.
    """
    labels = _check_labels(labels)
    n_clients = check_int("n_clients", n_clients, low=1)
    n_shards = n_clients * check_int("shards_per_client", shards_per_client, low=1)
    if n_shards > len(labels):
        raise ValueError(f"n_clients * shards_per_client = {n_shards} shards need at least that many items, "
                         f"got {len(labels)}")
    rng = np.random.default_rng(check_seed(seed))
    shuffled = rng.permutation(len(labels))
    order = shuffled[np.argsort(labels[shuffled], kind="stable")].astype(np.int64)
    shards = np.array_split(order, n_shards)
    dealt = rng.permutation(n_shards).reshape(n_clients, shards_per_client)
    return [np.sort(np.concatenate([shards[j] for j in row])).astype(np.int64) for row in dealt]


def dirichlet(
    labels, n_clients: int, alpha: float, *, seed: int, min_size: int = 1, max_tries: int = 100
) -> list[np.ndarray]:
    """Label-skewed split: each class is divided among clients in Dir(alpha) proportions.

    For every class (ascending label order) its indices are shuffled, proportions
    ``p ~ Dirichlet(alpha * ones(n_clients))`` are drawn, and the indices are cut at
    ``round(cumsum(p) * n_class)``. If some client ends up with fewer than ``min_size`` items the
    whole draw is repeated from the same generator (so the result is still a function of the seed),
    at most ``max_tries`` times. Small alpha (e.g. 0.1) gives clients dominated by few classes;
    large alpha (e.g. 100) approaches an IID split.

    Args:
        labels: 1-D integer array of length N (numpy array, CPU tensor or list).
        n_clients: number of clients, >= 1.
        alpha: concentration, finite and > 0.
        seed: non-negative integer seed.
        min_size: least number of items per client, 0 <= min_size <= N // n_clients.
        max_tries: number of draws before giving up, >= 1.

    Returns:
        ``n_clients`` sorted int64 arrays that partition ``range(N)``.

    Raises:
        ValueError: if no draw within ``max_tries`` gives every client ``min_size`` items.
    """
    labels = _check_labels(labels)
    n_clients = check_int("n_clients", n_clients, low=1)
    alpha = check_positive("alpha", alpha)
    min_size = check_int("min_size", min_size, low=0, high=len(labels) // n_clients)
    max_tries = check_int("max_tries", max_tries, low=1)
    rng = np.random.default_rng(check_seed(seed))
    by_class = _class_indices(labels)
    concentration = np.full(n_clients, alpha)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for indices in by_class:
            shuffled = rng.permutation(indices)
            cuts = np.rint(np.cumsum(rng.dirichlet(concentration))[:-1] * len(shuffled)).astype(np.int64)
            for client, piece in enumerate(np.split(shuffled, cuts)):
                parts[client].append(piece)
        clients = [np.sort(np.concatenate(pieces)).astype(np.int64) for pieces in parts]
        if min(len(part) for part in clients) >= min_size:
            return clients
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) draw gave all {n_clients} clients >= {min_size} items in "
        f"{max_tries} tries; lower min_size, raise alpha or max_tries, or use fewer clients"
    )


def kmeans_model(features, n_clients: int, *, pca_dim: int | None = None, seed: int, n_init: int = 10):
    """Fit ``sklearn.decomposition.PCA(pca_dim)`` (if ``pca_dim``) then ``sklearn.cluster.KMeans(n_clients,
    n_init=n_init)`` to ``features``, both with ``random_state=seed``, and return the fitted
    ``sklearn.pipeline.Pipeline``: its ``predict`` assigns any items (e.g. held-out ones) to the nearest
    centroid, with the cluster ids :func:`kmeans` uses.

    Args:
        features: ``[N, D]`` real array (numpy or CPU tensor), N >= n_clients.
        n_clients: clusters K, >= 1.
        pca_dim: components kept before clustering, 1 <= pca_dim <= min(N, D); None clusters ``features``.
        seed: non-negative integer seed of PCA's solver and of k-means' initialisations.
        n_init: k-means restarts (the lowest inertia wins).
    """
    array = _check_features(features)
    n_clients = check_int("n_clients", n_clients, low=1, high=array.shape[0])
    seed = check_seed(seed)
    n_init = check_int("n_init", n_init, low=1)
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline

    steps = [] if pca_dim is None else [PCA(check_int("pca_dim", pca_dim, low=1, high=min(array.shape)),
                                            random_state=seed)]
    return make_pipeline(*steps, KMeans(n_clients, n_init=n_init, random_state=seed)).fit(array)


def _check_features(features) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or not np.isfinite(array).all():
        raise ValueError(f"features must be a finite [N, D] array, got shape {array.shape}")
    return array


def kmeans(features, n_clients: int, *, pca_dim: int | None = None, seed: int, n_init: int = 10) -> list[np.ndarray]:
    """Partition items by k-means on their feature vectors, optionally after PCA (Decentralized Diffusion
    Models' partition of the data into K clusters, there on DINOv2 embeddings): part ``c`` holds the items
    that :func:`kmeans_model` (same arguments) assigns to cluster ``c``.

    Returns:
        ``n_clients`` sorted, disjoint int64 arrays covering ``range(N)``; sizes are whatever the clusters are.

    Raises:
        ValueError: if a cluster is empty (duplicate feature vectors).
    """
    labels = kmeans_model(features, n_clients, pca_dim=pca_dim, seed=seed, n_init=n_init).predict(
        _check_features(features))
    parts = [np.flatnonzero(labels == c).astype(np.int64) for c in range(n_clients)]
    if any(len(part) == 0 for part in parts):
        raise ValueError(f"k-means left {sum(len(p) == 0 for p in parts)} of {n_clients} clusters empty "
                         "(duplicate features?)")
    return parts


def train_test_indices(n_items: int, test_fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded hold-out split of ``range(n_items)``.

    Args:
        n_items: number of items, >= 2.
        test_fraction: share of items held out, in (0, 1); the test size is
            ``round(test_fraction * n_items)`` clipped to [1, n_items - 1].
        seed: non-negative integer seed.

    Returns:
        ``(train_idx, test_idx)``: sorted, disjoint int64 arrays that together cover ``range(n_items)``.
    """
    n_items = check_int("n_items", n_items, low=2)
    test_fraction = check_fraction("test_fraction", test_fraction)
    n_test = min(max(round(test_fraction * n_items), 1), n_items - 1)
    permutation = np.random.default_rng(check_seed(seed)).permutation(n_items).astype(np.int64)
    return np.sort(permutation[n_test:]), np.sort(permutation[:n_test])
