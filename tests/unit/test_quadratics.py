"""commlab.problems.quadratics: gradients against autograd, closed-form minimiser, constants, oracle noise."""

import pytest
import torch

from commlab.problems.quadratics import HeterogeneousQuadratics, heterogeneous_quadratics


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def problem(**kwargs):
    options = dict(n=5, d=6, zeta=2.0, generator=gen())
    options.update(kwargs)
    return heterogeneous_quadratics(**options)


def test_grads_match_autograd_for_shared_and_per_worker_points():
    p = problem()
    X = torch.randn(p.n, p.d, generator=gen(1), dtype=torch.float64)
    leaf = X.clone().requires_grad_(True)
    p.losses(leaf).sum().backward()  # f_i depends on X[i] only
    assert torch.allclose(p.grads(X), leaf.grad, atol=1e-12)
    x = X[0].clone().requires_grad_(True)
    p.loss(x).backward()
    assert torch.allclose(p.grad(x.detach()), x.grad, atol=1e-12)
    assert torch.allclose(p.grads(x.detach()), p.grads(x.detach().expand(p.n, -1)), atol=1e-12)


def test_minimiser_and_closed_form_suboptimality():
    p = problem()
    assert p.grad(p.x_star).abs().max() < 1e-12
    points = torch.randn(4, p.d, generator=gen(2), dtype=torch.float64)
    direct = torch.stack([p.loss(x) for x in points]) - p.f_star
    assert torch.allclose(p.suboptimality(points), direct, atol=1e-10)
    assert (direct > 0).all()
    assert float(p.suboptimality(p.x_star)) == pytest.approx(0.0, abs=1e-20)


def test_smoothness_constants_are_exact_eigenvalues():
    p = problem()
    for i in range(p.n):
        assert float(p.L_i[i]) == pytest.approx(float(torch.linalg.eigvalsh(p.H[i])[-1]), rel=1e-12)
    eig = torch.linalg.eigvalsh(p.H.mean(0))
    assert p.L == pytest.approx(float(eig[-1])) and p.mu == pytest.approx(float(eig[0]))
    c = p.constants
    assert c.L_am <= c.L_qm and p.mu > 0


def test_zeta_controls_heterogeneity_and_zero_gives_a_shared_optimum():
    shared = problem(zeta=0.0)
    assert torch.allclose(shared.optima, shared.optima[0].expand(shared.n, -1))
    assert torch.allclose(shared.grads(shared.x_star), torch.zeros(shared.n, shared.d, dtype=torch.float64), atol=1e-12)
    spread = problem(zeta=10.0)
    assert spread.grads(spread.x_star).norm() > 1.0
    assert torch.equal(shared.H, spread.H)  # same draws, only the optima move


def test_stochastic_gradients_from_the_finite_sum_oracle():
    p = problem(n=50, d=40)
    x = torch.zeros(p.d, dtype=torch.float64)
    noise = p.stochastic_grads(x, 0.5, gen(3)) - p.grads(x)
    assert noise.std().item() == pytest.approx(0.5, rel=0.05) and abs(noise.mean().item()) < 0.03
    assert torch.equal(p.stochastic_grads(x, 0.5, gen(3)), p.stochastic_grads(x, 0.5, gen(3)))
    state = torch.get_rng_state()
    p.stochastic_grads(x, 0.5, gen(4))
    assert torch.equal(torch.get_rng_state(), state)


def test_same_generator_same_problem_and_float32_holds_the_same_data():
    a, b = problem(), problem()
    assert torch.equal(a.H, b.H) and torch.equal(a.optima, b.optima)
    single = problem(dtype=torch.float32)
    assert single.H.dtype == torch.float32 and torch.allclose(single.H.double(), a.H, atol=1e-6)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="n"):
        heterogeneous_quadratics(0, 3, generator=gen())
    with pytest.raises(ValueError, match="zeta"):
        heterogeneous_quadratics(2, 3, zeta=-1.0, generator=gen())
    with pytest.raises(TypeError, match="zeta"):
        heterogeneous_quadratics(2, 3, zeta="1", generator=gen())
    with pytest.raises(TypeError, match="generator"):
        heterogeneous_quadratics(2, 3, generator=0)
    with pytest.raises(ValueError, match="dtype"):
        heterogeneous_quadratics(2, 3, generator=gen(), dtype=torch.int64)
    H = torch.eye(3, dtype=torch.float64).expand(2, 3, 3).clone()
    with pytest.raises(ValueError, match="symmetric"):
        HeterogeneousQuadratics(H + torch.triu(torch.ones(3, 3), 1), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="semi-definite"):
        HeterogeneousQuadratics(-H, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="positive definite"):
        HeterogeneousQuadratics(torch.zeros(2, 3, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="optima"):
        HeterogeneousQuadratics(H, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="x"):
        problem().grads(torch.zeros(7))
    with pytest.raises(ValueError, match="shape"):
        problem().suboptimality(torch.zeros(3))
