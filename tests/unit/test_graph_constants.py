"""Graph constants of asynchronous gossip (commlab.distributed.gossip): the rate-weighted Laplacian Λ,
DADAO's χ₁ = 1/λ_min⁺(Λ) and χ₂ = max over edges of ½ (e_i − e_j)ᵀ Λ⁺ (e_i − e_j), the algebraic
connectivity and a mixing matrix's spectral gap, against closed forms on the complete graph, the ring,
the path and the star."""

import math

import numpy as np
import pytest
import torch

from commlab.distributed import gossip as g

RATE = 0.37  # events per second on every edge


def _complete(n):
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def _ring(n):
    return [(i, (i + 1) % n) for i in range(n)]


def _path(n):
    return [(i, i + 1) for i in range(n - 1)]


def _star(n):
    return [(0, j) for j in range(1, n)]


def _spectrum(edges, n, rate=RATE):
    return torch.linalg.eigvalsh(g.rate_laplacian(g.rate_matrix(n, edges, rate))).numpy()


@pytest.mark.parametrize("n", [3, 5, 10])
def test_complete_graph(n):
    """K_n: Λ = r(nI − 11ᵀ), eigenvalues 0 and rn; Λ⁺ = (I − 11ᵀ/n)/(rn), R_ij = 2/(rn): χ₁ = χ₂ = 1/(rn).
    With the brief's uniform edge sampling (r = 1/|E|), χ₁ = (n − 1)/2."""
    R = g.rate_matrix(n, _complete(n), RATE)
    assert np.allclose(_spectrum(_complete(n), n), [0] + [RATE * n] * (n - 1), atol=1e-12)
    assert g.chi_1(R) == pytest.approx(1 / (RATE * n), rel=1e-12)
    assert g.chi_2(R) == pytest.approx(1 / (RATE * n), rel=1e-12)
    uniform = g.rate_matrix(n, _complete(n), 1 / len(_complete(n)))
    assert g.chi_1(uniform) == pytest.approx((n - 1) / 2, rel=1e-12)


@pytest.mark.parametrize("n", [3, 4, 7, 10])
def test_ring(n):
    """C_n: eigenvalues r(2 − 2cos(2πk/n)), so χ₁ = 1/(r(2 − 2cos(2π/n))); an edge is a unit conductance
    in parallel with a path of n − 1, so R = (n − 1)/(n r) and χ₂ = (n − 1)/(2nr)."""
    expected = sorted(RATE * (2 - 2 * math.cos(2 * math.pi * k / n)) for k in range(n))
    assert np.allclose(_spectrum(_ring(n), n), expected, atol=1e-12)
    R = g.rate_matrix(n, _ring(n), RATE)
    assert g.chi_1(R) == pytest.approx(1 / (RATE * (2 - 2 * math.cos(2 * math.pi / n))), rel=1e-10)
    assert g.chi_2(R) == pytest.approx((n - 1) / (2 * n * RATE), rel=1e-10)


@pytest.mark.parametrize("n", [2, 3, 6, 10])
def test_path(n):
    """P_n: eigenvalues r(2 − 2cos(πk/n)), k = 0..n−1; a tree, so every edge has R = 1/r and χ₂ = 1/(2r)."""
    expected = sorted(RATE * (2 - 2 * math.cos(math.pi * k / n)) for k in range(n))
    assert np.allclose(_spectrum(_path(n), n), expected, atol=1e-12)
    R = g.rate_matrix(n, _path(n), RATE)
    assert g.chi_1(R) == pytest.approx(1 / (RATE * (2 - 2 * math.cos(math.pi / n))), rel=1e-10)
    assert g.chi_2(R) == pytest.approx(1 / (2 * RATE), rel=1e-10)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_star(n):
    """Star with n − 1 leaves: eigenvalues 0, r (n − 2 times), rn; χ₁ = 1/r; a tree, so χ₂ = 1/(2r)."""
    assert np.allclose(_spectrum(_star(n), n), [0] + [RATE] * (n - 2) + [RATE * n], atol=1e-12)
    R = g.rate_matrix(n, _star(n), RATE)
    assert g.chi_1(R) == pytest.approx(1 / RATE, rel=1e-10)
    assert g.chi_2(R) == pytest.approx(1 / (2 * RATE), rel=1e-10)
    c = g.graph_constants(R)
    assert (c.n, c.edges, c.total_rate) == (n, n - 1, pytest.approx(RATE * (n - 1)))
    assert c.lambda_max == pytest.approx(RATE * n) and c.algebraic_connectivity == pytest.approx(RATE)


def _random_rates(n, seed):
    rng = np.random.default_rng(seed)
    edges = _path(n) + [e for e in _complete(n) if e not in _path(n) and rng.random() < 0.3]
    return g.rate_matrix(n, edges, rng.uniform(0.1, 3.0, len(edges)).tolist())


def _grounded_resistance(R, i, j):
    """R_ij by Kirchhoff, independently of Λ⁺: inject 1 A at i, ground j, solve the reduced Laplacian."""
    Lap = (torch.diag(R.sum(1)) - R).numpy()
    keep = [k for k in range(len(Lap)) if k != j]
    current = np.zeros(len(Lap))
    current[i] = 1.0
    potential = np.linalg.solve(Lap[np.ix_(keep, keep)], current[keep])
    return potential[keep.index(i)]


@pytest.mark.parametrize("seed", range(4))
def test_effective_resistances_and_chi_on_random_weighted_graphs(seed):
    R = _random_rates(8, seed)
    res = g.effective_resistances(R)
    for i, j in [(0, 1), (2, 7), (3, 5), (0, 7)]:
        assert float(res[i, j]) == pytest.approx(_grounded_resistance(R, i, j), rel=1e-10)
    edges = [(i, j) for i in range(8) for j in range(i + 1, 8) if R[i, j] > 0]
    assert g.chi_2(R) == pytest.approx(max(0.5 * _grounded_resistance(R, i, j) for i, j in edges), rel=1e-10)
    assert g.chi_2(R) <= g.chi_1(R)  # ‖e_i − e_j‖² = 2
    c = g.graph_constants(R)
    assert (c.chi_1, c.chi_2) == (pytest.approx(g.chi_1(R), rel=1e-12), pytest.approx(g.chi_2(R), rel=1e-12))
    assert g.algebraic_connectivity(g.rate_laplacian(R)) == pytest.approx(1 / c.chi_1, rel=1e-12)


@pytest.mark.parametrize("scale", [0.1, 2.0, 50.0])
def test_scaling_the_rates_scales_chi_by_its_inverse(scale):
    R = _random_rates(7, 11)
    base, scaled = g.graph_constants(R), g.graph_constants(scale * R)
    assert scaled.chi_1 == pytest.approx(base.chi_1 / scale, rel=1e-10)
    assert scaled.chi_2 == pytest.approx(base.chi_2 / scale, rel=1e-10)
    assert scaled.algebraic_connectivity == pytest.approx(scale * base.algebraic_connectivity, rel=1e-10)
    assert scaled.total_rate == pytest.approx(scale * base.total_rate, rel=1e-12)


def test_brief_normalisation_total_rate_lambda_mix():
    """Uniform sampling at total rate λ_mix: χ₁ of rates λ_mix/|E| is χ₁(L/|E|)/λ_mix (the brief's χ₁*)."""
    n, lam_mix = 10, 4.0
    edges = _ring(n)
    unit = g.chi_1(g.rate_matrix(n, edges, 1 / len(edges)))
    assert unit == pytest.approx(n / (2 - 2 * math.cos(2 * math.pi / n)), rel=1e-10)
    assert g.chi_1(g.rate_matrix(n, edges, lam_mix / len(edges))) == pytest.approx(unit / lam_mix, rel=1e-10)


def test_algebraic_connectivity_of_combinatorial_laplacians():
    n = 9
    A = g.rate_matrix(n, _ring(n), 1.0)
    assert g.algebraic_connectivity(torch.diag(A.sum(1)) - A) == pytest.approx(2 - 2 * math.cos(2 * math.pi / n))
    P = g.rate_matrix(n, _path(n), 1.0)
    assert g.algebraic_connectivity((torch.diag(P.sum(1)) - P).numpy()) == pytest.approx(2 - 2 * math.cos(math.pi / n))


@pytest.mark.parametrize("n", [3, 5, 8, 11])
def test_mixing_spectral_gap(n):
    """The lab's ring (1/3 on self and both neighbours): eigenvalues (1 + 2cos(2πk/n))/3; complete: gap 1;
    a Laplacian mixing W = I − Λ/(2·max degree) has gap λ₂(Λ)/(2·max degree) here (its smallest
    eigenvalue stays >= 0)."""
    expected = 1 - max(abs(1 + 2 * math.cos(2 * math.pi * k / n)) / 3 for k in range(1, n))
    assert g.mixing_spectral_gap(g.ring(n)) == pytest.approx(expected, abs=1e-12)
    assert g.mixing_spectral_gap(g.complete(n)) == pytest.approx(1.0, abs=1e-12)
    R = _random_rates(n, n)
    d = float(R.sum(1).max())
    W = torch.eye(n, dtype=torch.float64) - g.rate_laplacian(R) / (2 * d)
    assert g.mixing_spectral_gap(W) == pytest.approx(g.algebraic_connectivity(g.rate_laplacian(R)) / (2 * d), rel=1e-10)


def test_a_disconnected_graph_is_refused():
    n = 6
    R = g.rate_matrix(n, [(0, 1), (1, 2), (3, 4), (4, 5)], 1.0)
    for f in (g.rate_laplacian, g.chi_1, g.chi_2, g.graph_constants, g.effective_resistances):
        with pytest.raises(ValueError, match="disconnected"):
            f(R)
    with pytest.raises(ValueError, match="disconnected"):
        g.algebraic_connectivity(torch.diag(R.sum(1)) - R)
    W = torch.block_diag(g.complete(3), g.complete(3))
    with pytest.raises(ValueError, match="disconnected"):
        g.mixing_spectral_gap(W)
    # an edge with rate 0 is no edge
    with pytest.raises(ValueError, match="disconnected"):
        g.chi_1(g.rate_matrix(3, [(0, 1), (1, 2)], [1.0, 0.0]))


def test_bad_inputs_are_refused():
    R = g.rate_matrix(4, _ring(4), 1.0)
    bad = R.clone()
    bad[0, 1] = 2.0
    with pytest.raises(ValueError, match="symmetric"):
        g.chi_1(bad)
    with pytest.raises(ValueError, match="non-negative"):
        g.chi_2(-R)
    with pytest.raises(ValueError, match="diagonal"):
        g.chi_1(R + torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="square"):
        g.chi_1(R[:3])
    with pytest.raises(ValueError, match="finite"):
        g.chi_1(R * float("nan"))
    with pytest.raises(ValueError, match="self-loop"):
        g.rate_matrix(3, [(1, 1)])
    with pytest.raises(ValueError, match="repeats"):
        g.rate_matrix(3, [(0, 1), (1, 0)])
    with pytest.raises(ValueError, match="one value per edge"):
        g.rate_matrix(3, [(0, 1)], [1.0, 2.0])
    with pytest.raises(ValueError, match="rates"):
        g.rate_matrix(3, [(0, 1)], -1.0)
    with pytest.raises(ValueError, match="sum to zero"):
        g.algebraic_connectivity(g.rate_laplacian(R) + 0.1 * torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-positive off-diagonal"):
        g.algebraic_connectivity(R)
    with pytest.raises(ValueError, match="symmetric"):
        g.mixing_spectral_gap(g.random_r_regular(6, 2.0, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="doubly stochastic"):
        g.mixing_spectral_gap(0.5 * g.complete(4))
