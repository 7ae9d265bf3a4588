"""Robust aggregators in commlab.distributed.robust: order invariance, breakdown on hand-built cases,
agreement with slow reference implementations, Weiszfeld's minimiser, the Flag aggregator's IRLS."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from commlab.distributed import robust as R

WITH_F = {"trimmed_mean", "krum", "multi_krum", "bulyan"}


def make(name: str, f: int, **kw) -> R.Aggregator:
    return R.AGGREGATORS[name](f=f, **kw) if name in WITH_F else R.AGGREGATORS[name](**kw)


def rand(n, d, seed, dtype=torch.float64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- slow references: loops over pairs, sorting per coordinate -------------------------------------


def ref_median(x):
    rows = x.tolist()
    out = []
    for k in range(len(rows[0])):
        col = sorted(r[k] for r in rows)
        n = len(col)
        out.append((col[(n - 1) // 2] + col[n // 2]) / 2)
    return out


def ref_trimmed(x, f):
    rows = x.tolist()
    return [sum(sorted(r[k] for r in rows)[f:len(rows) - f]) / (len(rows) - 2 * f) for k in range(len(rows[0]))]


def ref_scores(rows, idx, k):
    scores = {}
    for i in idx:
        dists = sorted(sum((a - b) ** 2 for a, b in zip(rows[i], rows[j], strict=True)) for j in idx if j != i)
        scores[i] = sum(dists[:k])
    return scores


def ref_multi_krum(x, f, m):
    rows = sorted(x.tolist())  # lexicographic order: ties go to the first row in it
    scores = ref_scores(rows, range(len(rows)), len(rows) - f - 2)
    best = sorted(scores, key=scores.get)[:m]
    return [sum(rows[i][k] for i in best) / m for k in range(len(rows[0]))]


def ref_bulyan(x, f):
    rows = sorted(x.tolist())
    remaining, chosen = list(range(len(rows))), []
    while len(chosen) < len(rows) - 2 * f:
        k = min(max(len(remaining) - f - 2, 1), len(remaining) - 1)
        scores = ref_scores(rows, remaining, k)
        pick = min(remaining, key=scores.get)
        chosen.append(pick)
        remaining.remove(pick)
    beta = len(chosen) - 2 * f
    med = ref_median(torch.tensor([rows[i] for i in chosen]))
    out = []
    for k in range(len(rows[0])):
        vals = sorted((rows[i][k] for i in chosen), key=lambda v: abs(v - med[k]))
        out.append(sum(vals[:beta]) / beta)
    return out


@pytest.mark.parametrize("n,f", [(7, 1), (11, 2), (15, 3), (8, 0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_equal_to_slow_references(n, f, seed):
    x = rand(n, 5, seed)
    expected = {
        "mean": [sum(c) / n for c in zip(*x.tolist(), strict=True)],
        "median": ref_median(x),
        "trimmed_mean": ref_trimmed(x, f),
        "krum": ref_multi_krum(x, f, 1),
        "multi_krum": ref_multi_krum(x, f, n - f),
        "bulyan": ref_bulyan(x, f),
    }
    for name, want in expected.items():
        got = make(name, f)(x)
        assert torch.allclose(got, torch.tensor(want, dtype=x.dtype), atol=1e-12), name
    assert torch.allclose(R.MultiKrum(f, m=3)(x), torch.tensor(ref_multi_krum(x, f, 3), dtype=x.dtype), atol=1e-12)


# --- order invariance ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(R.AGGREGATORS))
def test_every_aggregator_ignores_the_order_of_the_workers(name):
    x = rand(15, 6, 3)
    agg = make(name, 3, **({"r": 2, "n_its": 3} if name == "flag" else {}))
    out = agg(x)
    assert out.shape == (6,) and out.dtype == x.dtype
    for seed in range(3):
        perm = torch.randperm(15, generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(agg(x[perm]), out, atol=1e-12, rtol=0), name


@pytest.mark.parametrize("agg", [R.Krum(0), R.MultiKrum(0, m=1), R.Bulyan(1)], ids=["krum", "multi_krum", "bulyan"])
def test_exact_krum_ties_are_broken_by_the_rows_not_their_positions(agg):
    # Krum(0) on 3 rows scores by the single nearest neighbour: the two rows of the closest pair tie
    # exactly; Bulyan(1) on 7 rows meets the same tie in its last selection (3 rows left)
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [5.0, 5.0], [0.5, 3.0], [9.0, -1.0], [2.0, 2.5], [-3.0, 4.0]])
    x = x[:3] if isinstance(agg, R.MultiKrum | R.Krum) else x
    perms = list(itertools.permutations(range(len(x))))
    outs = {tuple(agg(x[list(p)]).tolist()) for p in perms[::max(1, len(perms) // 200)]}  # all 6, or 202 of 5040
    assert len(outs) == 1


# --- breakdown -------------------------------------------------------------------------------------


def honest_and_outliers(n, n_bad, d=4, far=1e6, seed=0):
    honest = 1.0 + 0.1 * rand(n - n_bad, d, seed)
    return torch.cat([honest, torch.full((n_bad, d), far, dtype=honest.dtype)]), honest.mean(dim=0)


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "krum", "multi_krum", "bulyan", "geomed"])
def test_f_far_outliers_leave_robust_rules_near_the_honest_mean(name):
    x, honest_mean = honest_and_outliers(11, 2)              # a tight cluster of 2 at 1e6, f = 2 assumed
    assert (make(name, 2)(x) - honest_mean).norm() < 0.5     # honest spread ≈ 0.1 per coordinate
    assert (R.Mean()(x) - honest_mean).norm() > 1e5          # the mean follows the outliers


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "krum", "multi_krum", "bulyan", "geomed"])
def test_a_majority_of_outliers_breaks_every_rule(name):
    x, honest_mean = honest_and_outliers(11, 6)              # beyond every breakdown point (f = 2 assumed)
    assert (make(name, 2)(x) - honest_mean).norm() > 1e5


def test_trimmed_mean_breaks_with_one_more_outlier_than_assumed():
    x, honest_mean = honest_and_outliers(11, 3)
    assert (R.TrimmedMean(3)(x) - honest_mean).norm() < 0.5
    assert (R.TrimmedMean(2)(x) - honest_mean).norm() > 1e4


# --- geometric median ------------------------------------------------------------------------------


def test_weiszfeld_reaches_the_minimiser_of_the_sum_of_distances():
    optimize = pytest.importorskip("scipy.optimize")
    x = rand(7, 3, 5)
    pts = x.numpy()

    def total(z):
        return float(np.linalg.norm(pts - z, axis=1).sum())

    ref = optimize.minimize(total, pts.mean(axis=0), method="Nelder-Mead",
                            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000}).x
    z = R.GeometricMedian(tol=1e-14, max_iter=10_000)(x).numpy()
    assert np.allclose(z, ref, atol=1e-6)
    assert total(z) <= total(ref) + 1e-10
    assert total(R.GeometricMedian(max_iter=1)(x).numpy()) > total(z) + 1e-6   # one step is not enough here


# --- Flag aggregator -------------------------------------------------------------------------------


def ref_flag(x, r, n_its, lam, seed, eps=1e-7):
    """The brief's mechanism written out: the weighted columns in R^d and a dense SVD of them."""
    n, d = x.shape
    y = torch.linalg.qr(torch.rand(d, r, generator=torch.Generator().manual_seed(seed), dtype=x.dtype) - 0.5).Q
    units = [row / row.norm() for row in x]
    for _ in range(n_its):
        cols = [u * (abs(1 - float((y.T @ u).square().sum())) + eps) ** -0.25 for u in units]
        for i in range(n):
            for j in range(n):
                if lam > 0 and i != j:
                    v = units[i] - units[j]
                    cols.append(lam / (n * (n - 1)) * (abs(1 - float((y.T @ v).square().sum())) + eps) ** -0.25 * v)
        y = torch.linalg.svd(torch.stack(cols, dim=1), full_matrices=False).U[:, :r]
    return sum(y @ (y.T @ u) for u in units) / r


@pytest.mark.parametrize("n,d,r,n_its,lam",
                         [(8, 12, 1, 1, 0.0), (8, 12, 2, 3, 0.5), (8, 12, 3, 2, 2.0), (10, 4, 2, 2, 1.0)])
def test_flag_equals_a_dense_svd_of_the_weighted_columns(n, d, r, n_its, lam):
    x = rand(n, d, 11) * torch.linspace(0.5, 3.0, n, dtype=torch.float64)[:, None]
    got = R.FlagAggregator(r=r, n_its=n_its, lam=lam, seed=4)(x)
    assert torch.allclose(got, ref_flag(x, r, n_its, lam, seed=4), atol=1e-10)


def test_flag_irls_never_increases_its_objective():
    x = rand(15, 40, 7)
    _, s, objective = R.FlagAggregator(r=3, n_its=15).subspace(x)
    assert len(objective) == 16
    assert all(b <= a + 1e-12 for a, b in zip(objective, objective[1:], strict=False))
    assert objective[-1] < objective[0] - 1.0
    assert bool(((s >= -1e-12) & (s <= 1 + 1e-12)).all())


def test_flag_recovers_the_honest_subspace_despite_outliers():
    g = torch.Generator().manual_seed(8)
    basis = torch.linalg.qr(torch.randn(60, 2, generator=g, dtype=torch.float64)).Q
    honest = torch.randn(12, 2, generator=g, dtype=torch.float64) @ basis.T     # in span(basis)
    x = torch.cat([honest, 50 * torch.randn(3, 60, generator=g, dtype=torch.float64)])
    y, s, _ = R.FlagAggregator(r=2, n_its=10).subspace(x)
    assert (y @ y.T - basis @ basis.T).norm() < 0.05
    assert bool((s[:12] > 0.999).all()) and bool((s[12:] < 0.5).all())


def test_flag_recovers_identical_honest_directions_at_model_size():
    # the brief's fa-sanity check: 12 identical honest vectors + 3 random ones in R^4810
    g = torch.Generator().manual_seed(0)
    honest = torch.randn(4810, generator=g)
    x = torch.cat([honest.expand(12, -1), 200 * torch.randn(3, 4810, generator=g)])
    cosine = torch.nn.functional.cosine_similarity
    assert cosine(R.FlagAggregator(r=1)(x), honest, dim=0) >= 0.999
    # with r = 4 the three attackers' directions fill the rest of the subspace and pass through whole:
    # 12 h/‖h‖ + three near-orthogonal unit vectors, cosine 12/sqrt(147) = 0.990
    assert math.isclose(float(cosine(R.FlagAggregator(r=4)(x), honest, dim=0)), 12 / math.sqrt(147), abs_tol=2e-3)
    assert torch.nn.functional.cosine_similarity(R.Mean()(x), honest, dim=0) < 0.5


def test_flag_median_norm_rescale_keeps_the_direction():
    x = rand(9, 20, 9) * torch.arange(1, 10, dtype=torch.float64)[:, None]
    plain = R.FlagAggregator(r=2, n_its=3)(x)
    scaled = R.FlagAggregator(r=2, n_its=3, rescale="median_norm")(x)
    assert math.isclose(float(scaled.norm()), float(x.norm(dim=1).median()), rel_tol=1e-12)
    assert torch.allclose(scaled / scaled.norm(), plain / plain.norm(), atol=1e-12)


def test_flag_ignores_dropped_zero_messages():
    x = rand(10, 12, 10)
    dropped = torch.cat([x[:8], torch.zeros(2, 12, dtype=x.dtype)])
    assert torch.allclose(R.FlagAggregator(r=2, n_its=3)(dropped), R.FlagAggregator(r=2, n_its=3)(x[:8]), atol=1e-12)


# --- bad input -------------------------------------------------------------------------------------


def test_bad_input_is_refused_with_a_clear_error():
    x = rand(10, 3, 0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        R.Mean()(torch.cat([x, torch.full((1, 3), math.nan, dtype=x.dtype)]))
    with pytest.raises(ValueError, match=r"shape \[N, d\]"):
        R.CoordinateMedian()(x[0])
    with pytest.raises(TypeError, match="floating"):
        R.Mean()(torch.ones(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"krum with f = 4 needs N >= 11"):
        R.Krum(4)(x)
    with pytest.raises(ValueError, match=r"bulyan with f = 2 needs N >= 11"):
        R.Bulyan(2)(x)
    with pytest.raises(ValueError, match=r"trimmed_mean with f = 5 needs N >= 11"):
        R.TrimmedMean(5)(x)
    with pytest.raises(ValueError, match=r"N >= 12"):
        R.MultiKrum(1, m=12)(x)
    with pytest.raises(ValueError, match="f must be >= 0"):
        R.Krum(-1)
    with pytest.raises(ValueError, match=r"r must be <= min\(N, d\) = 3"):
        R.FlagAggregator(r=4)(x)
    with pytest.raises(ValueError, match="rescale"):
        R.FlagAggregator(rescale="mean_norm")
    assert R.Bulyan(2)(rand(11, 3, 0)).shape == (3,)          # N = 4f + 3 is enough
