"""commlab.semcom.mec: entropies, greedy and exact minimum-entropy couplings, EBIM solvers, random instances."""

import itertools
import math

import numpy as np
import pytest

from commlab.semcom import mec


def marginal_error(joint, p, q):
    return max(np.abs(joint.sum(axis=1) - p).max(), np.abs(joint.sum(axis=0) - q).max())


def random_pair(rng, n, m):
    return mec.dirichlet_pmf(n, rng), mec.dirichlet_pmf(m, rng)


def test_entropy_and_mutual_information_closed_forms():
    assert mec.entropy([0.5, 0.5]) == pytest.approx(1.0, abs=1e-15)
    assert mec.entropy([1.0, 0.0, 0.0]) == 0.0
    assert mec.entropy(np.full(8, 1 / 8)) == pytest.approx(3.0, abs=1e-14)
    assert mec.entropy([[0.25, 0.25], [0.25, 0.25]]) == pytest.approx(2.0, abs=1e-14)  # joint entropy
    assert mec.mutual_information(np.outer([0.3, 0.7], [0.1, 0.2, 0.7])) == pytest.approx(0.0, abs=1e-14)
    assert mec.mutual_information(np.diag([0.25] * 4)) == pytest.approx(2.0, abs=1e-14)
    p = np.array([0.2, 0.3, 0.5])
    assert mec.mutual_information(np.diag(p)) == pytest.approx(mec.entropy(p), abs=1e-14)


def test_map_accuracy_and_compose():
    assert mec.map_accuracy(np.diag([0.25] * 4)) == pytest.approx(1.0)
    assert mec.map_accuracy(np.full((4, 2), 1 / 8)) == pytest.approx(0.25)
    p_xt = mec.encoder_from_labels([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1])
    p_ty = np.array([[0.3, 0.0], [0.0, 0.7]])  # a bijection T -> Y
    p_xy = mec.compose(p_xt, p_ty)
    np.testing.assert_allclose(p_xy, p_xt, atol=1e-15)
    rng = np.random.default_rng(3)
    p_ty = mec.greedy_mec(p_xt.sum(axis=0), mec.dirichlet_pmf(3, rng))
    p_xy = mec.compose(p_xt, p_ty)
    np.testing.assert_allclose(p_xy.sum(axis=1), p_xt.sum(axis=1), atol=1e-15)
    np.testing.assert_allclose(p_xy.sum(axis=0), p_ty.sum(axis=0), atol=1e-15)
    assert mec.mutual_information(p_xy) <= min(mec.mutual_information(p_xt), mec.mutual_information(p_ty)) + 1e-12


@pytest.mark.parametrize("n,m", [(2, 2), (3, 4), (4, 4), (6, 3)])
def test_greedy_mec_couples_the_marginals(n, m):
    rng = np.random.default_rng(n * 10 + m)
    for _ in range(50):
        p, q = random_pair(rng, n, m)
        joint = mec.greedy_mec(p, q)
        assert joint.min() >= 0.0
        assert marginal_error(joint, p, q) <= 1e-12
        assert np.count_nonzero(joint) <= n + m - 1


def test_greedy_mec_hand_example():
    # p = (0.6, 0.4), q = (0.5, 0.5): 0.5 on (0, 0), then 0.4 on (1, 1), then 0.1 on (0, 1)
    np.testing.assert_allclose(mec.greedy_mec([0.6, 0.4], [0.5, 0.5]), [[0.5, 0.1], [0.0, 0.4]], atol=1e-15)


@pytest.mark.parametrize("n,m", [(2, 3), (3, 3), (4, 4), (3, 5)])
def test_exact_mec_couples_and_beats_greedy_within_the_bound(n, m):
    rng = np.random.default_rng(100 + n * 10 + m)
    for _ in range(40):
        p, q = random_pair(rng, n, m)
        exact, greedy = mec.exact_mec(p, q), mec.greedy_mec(p, q)
        assert exact.min() >= 0.0 and marginal_error(exact, p, q) <= 1e-12
        h_exact, h_greedy = mec.entropy(exact), mec.entropy(greedy)
        assert max(mec.entropy(p), mec.entropy(q)) - 1e-12 <= h_exact <= h_greedy + 1e-12
        assert h_greedy - h_exact <= math.log2(math.e) / math.e  # within 0.53 bits (Compton et al. 2023)


def test_exact_mec_tree_count():
    edges, _ = mec._spanning_tree_maps(4, 4)
    assert len(edges) == 4**3 * 4**3  # n^(m-1) m^(n-1) spanning trees of K_{4,4}
    edges, _ = mec._spanning_tree_maps(2, 3)
    assert len(edges) == 2**2 * 3**1


def test_exact_mec_equals_brute_force_2x2():
    # the couplings of two binary pmfs are one segment; entropy is concave, so the minimum is an end point
    rng = np.random.default_rng(7)
    for _ in range(100):
        (p0, p1), (q0, q1) = random_pair(rng, 2, 2)
        a = np.linspace(max(0.0, p0 + q0 - 1), min(p0, q0), 20001)
        segment = np.stack([a, p0 - a, q0 - a, 1 - p0 - q0 + a], axis=1)
        brute = (-np.where(segment > 0, segment * np.log2(np.where(segment > 0, segment, 1)), 0)).sum(axis=1).min()
        assert mec.entropy(mec.exact_mec([p0, p1], [q0, q1])) == pytest.approx(brute, abs=1e-12)


def test_exact_mec_equals_brute_force_2x3_grid():
    # two free parameters (J00, J01); the rest is determined. A fine grid never beats the exact vertex optimum,
    # and the exact optimum is attained by a grid-free vertex search up to the grid's resolution
    rng = np.random.default_rng(11)
    for _ in range(5):
        p, q = random_pair(rng, 2, 3)
        a, b = np.meshgrid(np.linspace(0, 1, 601), np.linspace(0, 1, 601))
        j00, j01 = a.ravel() * min(p[0], q[0]), b.ravel() * min(p[0], q[1])
        j02 = p[0] - j00 - j01
        rows = np.stack([j00, j01, j02, q[0] - j00, q[1] - j01, q[2] - j02], axis=1)
        ok = np.all(rows >= 0, axis=1)
        rows = rows[ok]
        h = -(np.where(rows > 0, rows * np.log2(np.where(rows > 0, rows, 1)), 0)).sum(axis=1)
        exact = mec.entropy(mec.exact_mec(p, q))
        assert exact <= h.min() + 1e-12
        assert h.min() - exact <= 5e-3  # the grid comes close to the vertex optimum


def test_exact_mec_refuses_large_alphabets():
    with pytest.raises(ValueError, match="small alphabets"):
        mec.exact_mec(np.full(6, 1 / 6), np.full(6, 1 / 6))


def test_set_partitions_are_the_bell_numbers_and_distinct():
    assert [len(mec.set_partitions(n)) for n in range(1, 10)] == [1, 2, 5, 15, 52, 203, 877, 4140, 21147]
    labels = mec.set_partitions(5)
    assert len({tuple(r) for r in labels}) == 52
    assert np.all(labels[:, 0] == 0)
    assert np.all(np.diff(np.maximum.accumulate(labels, axis=1), axis=1) <= 1)  # restricted growth
    with pytest.raises(ValueError):
        mec.set_partitions(10)


def test_oracle_staircase_known_points():
    # uniform over 4: cell masses {1}, {3/4, 1/4}, {1/2, 1/2}, {1/2, 1/4, 1/4}, {1/4 x 4}
    p = np.full(4, 0.25)
    h34 = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    _, staircase = mec.partition_entropies(p)
    np.testing.assert_allclose(np.unique(staircase.round(12)), [0.0, h34, 1.0, 1.5, 2.0], atol=1e-12)
    for rate, value in [(0.0, 0.0), (0.5, 0.0), (h34, h34), (0.9, h34), (1.0, 1.0), (1.49, 1.0), (1.5, 1.5),
                        (1.99, 1.5), (2.0, 2.0), (7.0, 2.0)]:
        enc = mec.ebim_oracle(p, rate)
        assert mec.mutual_information(enc) == pytest.approx(value, abs=1e-12)
        np.testing.assert_allclose(enc.sum(axis=1), p, atol=1e-15)


def test_oracle_matches_explicit_search():
    rng = np.random.default_rng(5)
    p = mec.dirichlet_pmf(5, rng)
    functions = np.array(list(itertools.product(range(5), repeat=5)))  # every f: X -> {0..4}
    masses = np.zeros((len(functions), 5))
    for x in range(5):
        masses[np.arange(len(functions)), functions[:, x]] += p[x]
    h = -(np.where(masses > 0, masses * np.log2(np.where(masses > 0, masses, 1)), 0)).sum(axis=1)
    for rate in np.linspace(0, mec.entropy(p), 7):
        best = h[h <= rate + 1e-12].max()
        assert mec.mutual_information(mec.ebim_oracle(p, rate)) == pytest.approx(best, abs=1e-12)


SOLVERS = [mec.ebim_oracle, mec.ebim_refined, mec.ebim_naive_merge, mec.ebim_candidate_greedy]


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda f: f.__name__)
def test_ebim_solutions_respect_the_bounds(solver):
    rng = np.random.default_rng(21)
    for n in (3, 6, 8):
        for _ in range(3):
            p = mec.dirichlet_pmf(n, rng)
            for rate in np.linspace(0, 1.1 * mec.entropy(p), 9):
                enc = solver(p, rate)
                assert enc.min() >= 0.0
                np.testing.assert_allclose(enc.sum(axis=1), p, atol=1e-12)
                info = mec.mutual_information(enc)
                assert mec.entropy(enc.sum(axis=0)) <= rate + 1e-9
                assert info <= min(rate, mec.entropy(p)) + 1e-9


def test_ebim_solver_ordering():
    rng = np.random.default_rng(22)
    for _ in range(6):
        p = mec.dirichlet_pmf(7, rng)
        for rate in np.linspace(0, mec.entropy(p), 9):
            oracle = mec.mutual_information(mec.ebim_oracle(p, rate))
            naive = mec.mutual_information(mec.ebim_naive_merge(p, rate))
            cand = mec.mutual_information(mec.ebim_candidate_greedy(p, rate))
            refined = mec.mutual_information(mec.ebim_refined(p, rate))
            assert naive <= cand + 1e-12 <= oracle + 2e-12 <= refined + 3e-12


def test_refinement_lands_on_the_rate_and_gains_between_steps():
    p = np.full(4, 0.25)
    enc = mec.ebim_refined(p, 1.2)  # between the staircase points 1.0 and 1.5
    assert mec.entropy(enc.sum(axis=0)) == pytest.approx(1.2, abs=1e-9)
    assert mec.mutual_information(enc) > 1.0 + 1e-3
    assert np.count_nonzero(enc) == 5  # one source value split between two codes


def test_naive_merge_hand_example():
    # (0.4, 0.3, 0.2, 0.1) at R = 1.5: merge 0.1 + 0.2 -> (0.4, 0.3, 0.3), H = 1.571 > 1.5; merge 0.3 + 0.3 -> 0.971
    p = [0.4, 0.3, 0.2, 0.1]
    naive = mec.ebim_naive_merge(p, 1.5)
    np.testing.assert_allclose(sorted(naive.sum(axis=0)), [0.4, 0.6], atol=1e-15)
    # the best single merge from (0.4, 0.3, 0.3) lands at H(0.7, 0.3) = 0.881 or H(0.4, 0.6) = 0.971;
    # from T = X, merging 0.4 + 0.1 gives (0.5, 0.3, 0.2), H = 1.485 <= 1.5
    cand = mec.ebim_candidate_greedy(p, 1.5)
    np.testing.assert_allclose(sorted(cand.sum(axis=0)), [0.2, 0.3, 0.5], atol=1e-15)
    assert mec.mutual_information(mec.ebim_oracle(p, 1.5)) >= mec.mutual_information(cand) - 1e-12


def test_random_instances_are_reproducible_and_valid():
    a = mec.dirichlet_pmf(6, np.random.default_rng(1))
    b = mec.dirichlet_pmf(6, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert abs(a.sum() - 1) < 1e-15 and a.min() >= 0
    z = mec.zipf_pmf(5, 1.2)
    assert np.all(np.diff(z) < 0) and z.sum() == pytest.approx(1.0)
    zr = mec.zipf_pmf(5, 1.2, np.random.default_rng(0))
    np.testing.assert_allclose(np.sort(zr), np.sort(z))


def test_bad_input():
    with pytest.raises(ValueError, match="sum to 1"):
        mec.entropy([0.5, 0.6])
    with pytest.raises(ValueError, match="non-negative"):
        mec.greedy_mec([1.2, -0.2], [0.5, 0.5])
    with pytest.raises(ValueError, match="finite"):
        mec.exact_mec([np.nan, 1.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="2-D"):
        mec.mutual_information([0.5, 0.5])
    with pytest.raises(TypeError):
        mec.entropy("0.5")
    with pytest.raises(ValueError, match="rate"):
        mec.ebim_oracle([0.5, 0.5], -0.1)
    with pytest.raises(TypeError, match="rate"):
        mec.ebim_naive_merge([0.5, 0.5], None)
    with pytest.raises(ValueError, match="labels"):
        mec.encoder_from_labels([0.5, 0.5], [0, 1, 2])
    with pytest.raises(ValueError, match="code values"):
        mec.compose(np.diag([0.5, 0.5]), np.full((3, 2), 1 / 6))
    with pytest.raises(TypeError, match="Generator"):
        mec.dirichlet_pmf(3, 0)
    with pytest.raises(ValueError, match="concentration"):
        mec.dirichlet_pmf(3, np.random.default_rng(0), 0.0)
    with pytest.raises(ValueError):
        mec.ebim_oracle(np.full(10, 0.1), 1.0)  # more than 9 source values
