"""DADAO's graphs and synchronous references (commlab.distributed.graphs, .gradient_tracking): edge
counts and connectivity of every family, the uniform-edge χ₁ and χ₂ against closed forms (complete graph
and cycle), time-varying lists, Metropolis weights, DIGing and centralised AGD converging to x* with the
right gradient and communication counts, refusals."""

import math

import numpy as np
import pytest
import torch

from commlab.distributed import graphs as G
from commlab.distributed.gradient_tracking import accelerated_gd, diging, metropolis_weights
from commlab.problems.ridge import heterogeneous_ridge

CASES = [("complete", 6, 15), ("cycle", 6, 6), ("path", 6, 5), ("star", 6, 5), ("grid", 9, 12), ("grid", 10, 13),
         ("barbell", 8, 13)]


@pytest.mark.parametrize(("family", "n", "edges"), CASES)
def test_families(family, n, edges):
    e = G.family_graph(family, n)
    assert len(e) == edges == len(set(e)) and all(0 <= i < j < n for i, j in e)
    assert G.is_connected(n, e)


def test_random_geometric_is_connected_and_seeded():
    for seed in range(20):
        e = G.random_geometric_graph(10, 0.2, rng=np.random.default_rng(seed))  # sparse: bridges needed
        assert G.is_connected(10, e)
    a = G.time_varying_graphs(10, 5, 0.4, rng=np.random.default_rng(3))
    b = G.time_varying_graphs(10, 5, 0.4, rng=np.random.default_rng(3))
    assert a == b and len(a) == 5 and len({tuple(g) for g in a}) > 1
    assert not G.is_connected(4, [(0, 1), (2, 3)])


@pytest.mark.parametrize("n", [4, 10, 15])
def test_uniform_edge_constants_closed_forms(n):
    """L_norm = L/|E|. Complete: λ₂(L) = n, |E| = n(n−1)/2, edge resistance 2/n: χ₁ = χ₂ = (n − 1)/2.
    Cycle: λ₂(L) = 2 − 2cos(2π/n), |E| = n, edge resistance (n − 1)/n: χ₁ = n/(2 − 2cos(2π/n)),
    χ₂ = (n − 1)/2."""
    k = G.uniform_edge_constants(n, G.complete_graph(n))
    assert math.isclose(k.chi_1, (n - 1) / 2, rel_tol=1e-10) and math.isclose(k.chi_2, (n - 1) / 2, rel_tol=1e-10)
    k = G.uniform_edge_constants(n, G.cycle_graph(n))
    assert math.isclose(k.chi_1, n / (2 - 2 * math.cos(2 * math.pi / n)), rel_tol=1e-10)
    assert math.isclose(k.chi_2, (n - 1) / 2, rel_tol=1e-10)
    assert k.chi_2 <= k.chi_1 and math.isclose(k.total_rate, 1.0)


def test_metropolis_weights():
    W = metropolis_weights(6, G.star_graph(6))
    np.testing.assert_allclose(W, W.T)
    np.testing.assert_allclose(W.sum(1), 1.0)
    assert (W >= 0).all() and W[1, 2] == 0 and np.isclose(W[0, 1], 1 / 6)


def _problem():
    p = heterogeneous_ridge(6, 3, 20, generator=torch.Generator().manual_seed(0), lam=0.2)
    H, c = p.arrays()
    return p, (lambda X: np.einsum("nij,nj->ni", H, X) - c)


def test_diging_converges_with_its_counts():
    p, grads = _problem()
    edges = G.cycle_graph(6)
    x0 = np.random.default_rng(0).standard_normal((6, 3))
    tr = diging(grads, x0, metropolis_weights(6, edges), step=0.3 / p.L_max, iterations=3000,
                x_star=p.x_star.numpy(), edges=len(edges))
    assert tr.distance[-1] < 1e-20
    assert tr.gradients[10] == 60 and tr.communications[10] == 60
    k = int(tr.first_below(1e-6, "iterations"))
    assert tr.first_below(1e-6) == 6 * k and tr.distance[k] <= 1e-6 < tr.distance[k - 1]
    bad = diging(grads, x0, metropolis_weights(6, edges), step=50 / p.L_max, iterations=2000,
                 x_star=p.x_star.numpy(), edges=len(edges))
    assert bad.distance[-1] == math.inf and bad.first_below(1e-6) == math.inf


def test_accelerated_gd_converges():
    p, grads = _problem()
    x0 = np.random.default_rng(0).standard_normal((6, 3))
    tr = accelerated_gd(grads, x0, L=p.L, mu=p.mu, iterations=300, x_star=p.x_star.numpy())
    assert tr.distance[-1] < 1e-20 and tr.gradients[5] == 30 and tr.communications.max() == 0


def test_refusals():
    with pytest.raises(ValueError, match="prime"):
        G.grid_graph(7)
    with pytest.raises(ValueError, match="even"):
        G.barbell_graph(7)
    with pytest.raises(ValueError, match="family"):
        G.family_graph("torus", 5)
    with pytest.raises(ValueError, match="rng"):
        G.family_graph("random_geometric", 5)
    with pytest.raises(TypeError, match="rng"):
        G.random_geometric_graph(5, 0.3, rng=3)
    with pytest.raises(ValueError, match="distinct"):
        metropolis_weights(3, [(0, 0)])
    p, grads = _problem()
    with pytest.raises(ValueError, match="step"):
        diging(grads, np.zeros((6, 3)), np.eye(6), step=0.0, iterations=1, x_star=p.x_star.numpy(), edges=1)
    with pytest.raises(ValueError, match="W must be"):
        diging(grads, np.zeros((6, 3)), np.eye(5), step=0.1, iterations=1, x_star=p.x_star.numpy(), edges=1)
    with pytest.raises(ValueError, match="mu must be <= L"):
        accelerated_gd(grads, np.zeros((6, 3)), L=1.0, mu=2.0, iterations=1, x_star=p.x_star.numpy())
