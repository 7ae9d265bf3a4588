"""Heterogeneous ridge regression (commlab.problems.ridge): gradients and losses against autograd,
H_i/c_i and the constants against their definitions, x* a stationary point of the mean, seeded draws,
the node's own scaling and offsets, refusals."""

import numpy as np
import pytest
import torch

from commlab.problems.ridge import HeterogeneousRidge, heterogeneous_ridge


def _p(seed=0, **kw):
    return heterogeneous_ridge(6, 4, 30, generator=torch.Generator().manual_seed(seed), **kw)


def test_losses_and_gradients_against_autograd():
    p = _p()
    X = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    manual = ((p.X @ X.unsqueeze(-1)).squeeze(-1) - p.y).square().mean(-1) + 0.5 * p.lam * X.square().sum(-1)
    np.testing.assert_allclose(p.losses(X.detach()).numpy(), manual.detach().numpy(), rtol=1e-12)
    manual.sum().backward()
    np.testing.assert_allclose(p.grads(X.detach()).numpy(), X.grad.numpy(), rtol=1e-10, atol=1e-12)
    H, c = p.arrays()
    np.testing.assert_allclose(H[2] @ X.detach()[2].numpy() - c[2], X.grad[2].numpy(), rtol=1e-10, atol=1e-12)


def test_constants_and_minimiser():
    p = _p(lam=0.3)
    for i in range(p.n):
        eig = np.linalg.eigvalsh(2 / p.m * p.X[i].T.numpy() @ p.X[i].numpy() + 0.3 * np.eye(p.d))
        assert np.isclose(p.L_i[i], eig[-1]) and np.isclose(p.mu_i[i], eig[0])
        assert p.mu_i[i] >= 0.3 - 1e-12
    assert p.L_max == float(p.L_i.max()) and p.mu_min == float(p.mu_i.min())
    assert p.mu_min <= p.mu <= p.L <= p.L_max
    assert float(p.grad(p.x_star).abs().max()) < 1e-10
    assert p.f_star <= float(p.loss(p.x_star + 0.01))
    assert p.relative_distance(np.tile(p.x_star.numpy(), (p.n, 1))) == 0.0
    assert np.isclose(p.relative_distance(np.zeros((p.n, p.d))), 1.0)


def test_heterogeneity_knobs_and_seeds():
    a, b, c = _p(0), _p(0), _p(1)
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y) and not torch.equal(a.X, c.X)
    flat = _p(0, feature_spread=1.0, node_spread=0.0)
    wide = _p(0, feature_spread=4.0, node_spread=0.0)
    assert wide.L_max / wide.mu_min > 10 * flat.L_max / flat.mu_min  # the shared profile sets conditioning
    def truths(problem):  # each node's own least-squares solution of X_i x = y_i (no ridge shrinkage)
        return torch.stack([torch.linalg.lstsq(problem.X[i], problem.y[i, :, None]).solution[:, 0]
                            for i in range(problem.n)])

    same = truths(_p(0, zeta=0.0, noise=0.0))  # no offsets, no noise: one ground truth for every node
    np.testing.assert_allclose(same.numpy(), np.broadcast_to(same[0].numpy(), same.shape), atol=1e-10)
    assert float(truths(_p(0, zeta=2.0, noise=0.0)).std(0).min()) > 0.5  # node i's offset ζ u_i


def test_refusals():
    with pytest.raises(ValueError, match="lam"):
        _p(lam=0.0)
    with pytest.raises(ValueError, match="feature_spread"):
        _p(feature_spread=0.5)
    with pytest.raises(ValueError, match="node_spread"):
        _p(node_spread=-1.0)
    with pytest.raises(TypeError, match="generator"):
        heterogeneous_ridge(3, 2, 5, generator=0)
    with pytest.raises(ValueError, match="shape"):
        HeterogeneousRidge(torch.zeros(2, 3, 4, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="x must have shape"):
        _p().relative_distance(np.zeros((2, 2)))
