"""Client partitioners and the seeded train/test split in commlab.data.partition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from commlab.data import dirichlet, iid, k_classes, train_test_indices
from commlab.data.partition import pathological_shards

LABELS = np.repeat(np.arange(10), 100)[np.random.default_rng(123).permutation(1000)]


def assert_disjoint_sorted_int64(parts):
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)
    merged = np.concatenate(parts)
    assert len(np.unique(merged)) == len(merged)


def assert_same(parts_a, parts_b):
    assert len(parts_a) == len(parts_b)
    assert all(np.array_equal(a, b) for a, b in zip(parts_a, parts_b, strict=True))


def mean_label_entropy(parts, labels):
    entropies = []
    for part in parts:
        counts = np.bincount(labels[part], minlength=10)
        p = counts[counts > 0] / counts.sum()
        entropies.append(-(p * np.log(p)).sum())
    return float(np.mean(entropies))


# --- pathological shards ------------------------------------------------------------------------


def test_pathological_shards_partition_equal_sizes_and_two_classes():
    parts = pathological_shards(LABELS, 50, seed=0)  # 100 shards of 10 items, each inside one class
    assert_disjoint_sorted_int64(parts)
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))
    assert {len(p) for p in parts} == {20}
    classes = [len(np.unique(LABELS[p])) for p in parts]
    assert max(classes) <= 2 and np.mean(classes) > 1.5  # two shards rarely share a class
    assert mean_label_entropy(parts, LABELS) < 0.7 < mean_label_entropy(iid(1000, 50, seed=0), LABELS)


def test_pathological_shards_is_seeded_and_uneven_sizes_differ_by_one():
    assert_same(pathological_shards(LABELS, 7, 3, seed=4), pathological_shards(LABELS, 7, 3, seed=4))
    assert not all(np.array_equal(a, b) for a, b in zip(pathological_shards(LABELS, 7, 3, seed=4),
                                                          pathological_shards(LABELS, 7, 3, seed=5), strict=True))
    sizes = [len(p) for p in pathological_shards(LABELS, 7, 3, seed=4)]  # 21 shards of 47 or 48 items
    assert sum(sizes) == 1000 and set(sizes) <= {141, 142, 143, 144}


def test_pathological_shards_accepts_torch_labels():
    assert_same(pathological_shards(torch.as_tensor(LABELS), 5, seed=1), pathological_shards(LABELS, 5, seed=1))


@pytest.mark.parametrize(
    "labels, n_clients, shards, error",
    [
        (LABELS, 0, 2, ValueError),
        (LABELS, 5, 0, ValueError),
        (LABELS, 501, 2, ValueError),  # 1002 shards > 1000 items
        (LABELS, 2.0, 2, TypeError),
        (LABELS.astype(float), 5, 2, TypeError),
        (np.zeros((2, 3), dtype=int), 1, 1, ValueError),
    ],
)
def test_pathological_shards_bad_input(labels, n_clients, shards, error):
    with pytest.raises(error):
        pathological_shards(labels, n_clients, shards, seed=0)


# --- iid ---------------------------------------------------------------------------------------


def test_iid_covers_all_near_equal_and_is_seeded():
    parts = iid(103, 10, seed=0)
    assert_disjoint_sorted_int64(parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(103))
    assert {len(part) for part in parts} == {10, 11}
    assert_same(parts, iid(103, 10, seed=0))
    assert not np.array_equal(parts[0], iid(103, 10, seed=1)[0])


def test_iid_one_client_gets_everything():
    (only,) = iid(7, 1, seed=3)
    assert np.array_equal(only, np.arange(7))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        (dict(n_items=10, n_clients=0, seed=0), ValueError),
        (dict(n_items=3, n_clients=4, seed=0), ValueError),
        (dict(n_items=10, n_clients=2.0, seed=0), TypeError),
        (dict(n_items=10, n_clients=2, seed=-1), ValueError),
        (dict(n_items=10, n_clients=2, seed=1.5), TypeError),
    ],
)
def test_iid_bad_input(kwargs, error):
    with pytest.raises(error):
        iid(**kwargs)


def test_iid_error_names_argument():
    with pytest.raises(ValueError, match="n_clients must be >= 1"):
        iid(10, 0, seed=0)


# --- k_classes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_clients", "k"), [(10, 2), (7, 3), (3, 1), (4, 10)])
def test_k_classes_gives_exactly_k_classes(n_clients, k):
    parts = k_classes(LABELS, n_clients, k, seed=0)
    assert len(parts) == n_clients
    assert_disjoint_sorted_int64(parts)
    for part in parts:
        assert len(np.unique(LABELS[part])) == k


def test_k_classes_covers_all_when_every_class_is_held():
    parts = k_classes(LABELS, 10, 2, seed=0)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(LABELS)))
    # Each class is held by two clients and split evenly between them.
    assert all(len(part) == 100 for part in parts)


def test_k_classes_leaves_out_unheld_classes():
    parts = k_classes(LABELS, 3, 1, seed=0)
    held = np.concatenate(parts)
    assert len(np.unique(LABELS[held])) == 3
    assert len(held) == 300


def test_k_classes_is_seeded():
    assert_same(k_classes(LABELS, 10, 2, seed=5), k_classes(LABELS, 10, 2, seed=5))
    a, b = k_classes(LABELS, 10, 2, seed=5), k_classes(LABELS, 10, 2, seed=6)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_k_classes_accepts_torch_labels():
    assert_same(k_classes(torch.from_numpy(LABELS), 5, 2, seed=0), k_classes(LABELS, 5, 2, seed=0))


def test_k_classes_too_few_items_for_holders():
    labels = np.array([0, 0, 0, 0, 1])
    with pytest.raises(ValueError, match="class 1 has 1 items but 2 clients"):
        k_classes(labels, 2, 2, seed=0)


@pytest.mark.parametrize(
    ("labels", "n_clients", "k", "error"),
    [
        (LABELS, 5, 0, ValueError),
        (LABELS, 5, 11, ValueError),
        (LABELS, 0, 2, ValueError),
        (LABELS.astype(float), 5, 2, TypeError),
        (LABELS.reshape(10, 100), 5, 2, ValueError),
        (np.array([], dtype=np.int64), 5, 2, ValueError),
    ],
)
def test_k_classes_bad_input(labels, n_clients, k, error):
    with pytest.raises(error):
        k_classes(labels, n_clients, k, seed=0)


# --- dirichlet ---------------------------------------------------------------------------------


def test_dirichlet_covers_all_disjoint_and_seeded():
    parts = dirichlet(LABELS, 8, 0.5, seed=0)
    assert len(parts) == 8
    assert_disjoint_sorted_int64(parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(LABELS)))
    assert_same(parts, dirichlet(LABELS, 8, 0.5, seed=0))
    other = dirichlet(LABELS, 8, 0.5, seed=1)
    assert any(not np.array_equal(x, y) for x, y in zip(parts, other, strict=True))


def test_dirichlet_small_alpha_is_more_skewed():
    skewed = mean_label_entropy(dirichlet(LABELS, 10, 0.1, seed=0), LABELS)
    uniform = mean_label_entropy(dirichlet(LABELS, 10, 100.0, seed=0), LABELS)
    assert skewed < 0.6 * uniform
    assert uniform > 0.95 * np.log(10)


def test_dirichlet_min_size_honoured():
    first_draw = dirichlet(LABELS, 10, 0.1, seed=0, min_size=0)
    assert min(len(part) for part in first_draw) < 50  # so min_size=50 forces a redraw
    parts = dirichlet(LABELS, 10, 0.1, seed=0, min_size=50)
    assert min(len(part) for part in parts) >= 50
    assert_same(parts, dirichlet(LABELS, 10, 0.1, seed=0, min_size=50))


def test_dirichlet_gives_up_after_max_tries():
    with pytest.raises(ValueError, match="max_tries|tries"):
        dirichlet(LABELS, 50, 0.01, seed=0, min_size=20, max_tries=2)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        (dict(n_clients=0, alpha=1.0), ValueError),
        (dict(n_clients=5, alpha=0.0), ValueError),
        (dict(n_clients=5, alpha=-1.0), ValueError),
        (dict(n_clients=5, alpha=float("inf")), ValueError),
        (dict(n_clients=5, alpha=float("nan")), ValueError),
        (dict(n_clients=5, alpha="1"), TypeError),
        (dict(n_clients=5, alpha=1.0, min_size=-1), ValueError),
        (dict(n_clients=5, alpha=1.0, min_size=201), ValueError),
        (dict(n_clients=5, alpha=1.0, max_tries=0), ValueError),
    ],
)
def test_dirichlet_bad_input(kwargs, error):
    with pytest.raises(error):
        dirichlet(LABELS, seed=0, **kwargs)


def test_dirichlet_rejects_non_integer_labels():
    with pytest.raises(TypeError, match="labels"):
        dirichlet(LABELS.astype(np.float32), 5, 1.0, seed=0)


# --- train_test_indices ------------------------------------------------------------------------


def test_train_test_indices_partition_and_sizes():
    train, test = train_test_indices(1797, 0.25, seed=0)
    assert len(test) == 449 and len(train) == 1348
    assert_disjoint_sorted_int64([train, test])
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    same = train_test_indices(1797, 0.25, seed=0)
    assert np.array_equal(test, same[1])
    assert not np.array_equal(test, train_test_indices(1797, 0.25, seed=1)[1])


def test_train_test_indices_keeps_both_sides_non_empty():
    train, test = train_test_indices(3, 0.01, seed=0)
    assert len(train) == 2 and len(test) == 1


@pytest.mark.parametrize(
    ("n_items", "fraction", "error"),
    [(100, 0.0, ValueError), (100, 1.0, ValueError), (100, 1.5, ValueError), (1, 0.5, ValueError),
     (100, "0.2", TypeError), (100, True, TypeError)],
)
def test_train_test_indices_bad_input(n_items, fraction, error):
    with pytest.raises(error):
        train_test_indices(n_items, fraction, seed=0)


def test_partitioners_leave_global_rng_alone():
    state = np.random.get_state()[1].copy()
    iid(50, 5, seed=0)
    k_classes(LABELS, 5, 2, seed=0)
    dirichlet(LABELS, 5, 0.5, seed=0)
    train_test_indices(50, 0.2, seed=0)
    assert np.array_equal(np.random.get_state()[1], state)
