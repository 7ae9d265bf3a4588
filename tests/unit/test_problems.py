"""commlab.problems: gradients against autograd, exact smoothness constants, minimisers, determinism."""

import math

import pytest
import torch

from commlab.problems import (
    bilinear_saddle,
    heterogeneous_least_squares,
    nonconvex_logreg,
    nonconvex_penalty,
    nonconvex_penalty_grad,
    sklearn_binary,
    smoothness_constants,
    synthetic_classification,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def least_squares(**kwargs):
    options = dict(n=6, d=5, m=8, heavy_frac=1 / 3, scale=4.0, zeta=1.0, generator=gen(), dtype=torch.float64)
    options.update(kwargs)
    return heterogeneous_least_squares(**options)


def logreg(**kwargs):
    features, labels = synthetic_classification(60, 5, generator=gen(1))
    options = dict(n=4, lam=0.1, generator=gen(2), dtype=torch.float64)
    options.update(kwargs)
    return nonconvex_logreg(features, labels, **options)


PROBLEMS = {"least_squares": least_squares, "least_squares_reg": lambda: least_squares(lam=0.1), "logreg": logreg}


def autograd_grads(problem, X):
    X = X.clone().requires_grad_(True)
    problem.losses(X).sum().backward()  # f_i depends on X[i] only
    return X.grad


@pytest.mark.parametrize("name", PROBLEMS)
def test_grads_match_autograd_for_shared_and_per_worker_points(name):
    problem = PROBLEMS[name]()
    X = torch.randn(problem.n, problem.d, generator=gen(3), dtype=torch.float64)
    assert torch.allclose(problem.grads(X), autograd_grads(problem, X), atol=1e-10)
    x = X[0]
    shared = problem.grads(x)
    assert shared.shape == (problem.n, problem.d)
    assert torch.allclose(shared, autograd_grads(problem, x.expand(problem.n, -1)), atol=1e-10)
    assert torch.allclose(problem.grad(x), shared.mean(0))
    assert math.isclose(problem.grad_norm_sq(x), float(shared.mean(0).square().sum()), rel_tol=1e-12)
    assert torch.allclose(problem.loss(x), problem.losses(x).mean())


def test_penalty_gradient_and_smoothness_bound():
    x = torch.linspace(-3, 3, 601, dtype=torch.float64, requires_grad=True)
    nonconvex_penalty(x[:, None], 0.5).sum().backward()
    assert torch.allclose(x.grad, nonconvex_penalty_grad(x.detach(), 0.5))
    t = x.detach()
    second = 0.5 * (2 - 6 * t**2) / (1 + t**2) ** 3
    assert float(second.abs().max()) == pytest.approx(2 * 0.5)  # PENALTY_SMOOTHNESS · λ, attained at 0


@pytest.mark.parametrize("name", PROBLEMS)
def test_smoothness_constants_bound_gradient_differences(name):
    problem = PROBLEMS[name]()
    X = torch.randn(200, problem.d, generator=gen(4), dtype=torch.float64) * 2
    Y = torch.randn(200, problem.d, generator=gen(5), dtype=torch.float64) * 2
    pairs = list(zip(X, Y, strict=True))
    ratios = torch.stack([(problem.grads(x) - problem.grads(y)).norm(dim=1) / (x - y).norm() for x, y in pairs])
    assert bool((ratios <= problem.L_i * (1 + 1e-9)).all())
    mean_ratios = torch.stack([(problem.grad(x) - problem.grad(y)).norm() / (x - y).norm() for x, y in pairs])
    assert float(mean_ratios.max()) <= problem.L * (1 + 1e-9)


def test_least_squares_constants_are_tight():
    problem = least_squares()
    grams = problem.A.transpose(1, 2) @ problem.A
    for i in range(problem.n):
        vector = torch.linalg.eigh(grams[i]).eigenvectors[:, -1]  # top eigenvector attains L_i
        x = torch.randn(problem.d, generator=gen(6), dtype=torch.float64)
        ratio = (problem.grads(x + vector)[i] - problem.grads(x)[i]).norm() / vector.norm()
        assert float(ratio) == pytest.approx(float(problem.L_i[i]), rel=1e-10)
    c = problem.constants
    assert c.L <= c.L_am <= c.L_qm <= c.L_max


def test_heavy_workers_spread_the_constants():
    flat = least_squares(heavy_frac=0.0, n=20)
    heavy = least_squares(heavy_frac=0.1, scale=10.0, n=20)
    assert torch.allclose(heavy.L_i[2:], flat.L_i[2:]) and torch.allclose(heavy.L_i[:2], 100 * flat.L_i[:2])
    assert heavy.constants.qm_over_am > 2 > flat.constants.qm_over_am
    explicit = least_squares(scales=torch.full((6,), 2.0, dtype=torch.float64))
    assert torch.allclose(explicit.L_i, 4 * least_squares(heavy_frac=0.0).L_i)


def test_least_squares_minimiser_has_zero_gradient_and_is_optimal():
    problem = least_squares()
    assert problem.grad_norm_sq(problem.x_star) < 1e-20
    assert float(problem.loss(problem.x_star)) == pytest.approx(problem.f_star)
    x = problem.x_star + 0.1 * torch.randn(problem.d, generator=gen(7), dtype=torch.float64)
    gap = float(problem.loss(x)) - problem.f_star
    assert 0 < gap and problem.mu / 2 * float((x - problem.x_star).square().sum()) <= gap + 1e-12
    # zeta = 0 and no noise: every worker shares the planted solution, so each local gradient vanishes
    clean = least_squares(zeta=0.0, noise=0.0)
    assert float(clean.grads(clean.x_star).abs().max()) < 1e-10 and clean.f_star < 1e-20
    assert float(problem.grads(problem.x_star).abs().max()) > 1e-2  # heterogeneous local minimisers
    assert least_squares(lam=0.1).x_star is None


def test_float32_default_and_same_data_as_float64():
    single = heterogeneous_least_squares(4, 3, 5, generator=gen())
    double = heterogeneous_least_squares(4, 3, 5, generator=gen(), dtype=torch.float64)
    assert single.A.dtype == torch.float32 and single.grads(torch.zeros(3)).dtype == torch.float32
    assert torch.equal(single.A, double.A.float())
    assert single.grads(torch.zeros(3, dtype=torch.float64)).dtype == torch.float32


def test_determinism_with_a_fixed_generator():
    a, b, c = least_squares(), least_squares(), least_squares(generator=gen(1))
    assert torch.equal(a.A, b.A) and torch.equal(a.b, b.b) and not torch.equal(a.A, c.A)
    assert torch.equal(logreg().A, logreg().A) and not torch.equal(logreg().A, logreg(generator=gen(9)).A)
    s1, s2 = bilinear_saddle(3, 6, generator=gen()), bilinear_saddle(3, 6, generator=gen())
    assert torch.equal(s1.B, s2.B) and torch.equal(s1.z_star, s2.z_star)


def test_logreg_splits():
    features, labels = synthetic_classification(103, 4, generator=gen(1))
    problem = nonconvex_logreg(features, labels, 10, split="sorted_norm")
    assert problem.A.shape == (10, 10, 4)  # the last 3 rows of the ordering are dropped
    norms = problem.A.double().norm(dim=2)
    assert bool((norms[:-1].min(1).values >= norms[1:].max(1).values - 1e-6).all())
    assert set(problem.y.unique().tolist()) <= {-1.0, 1.0}
    scaled = nonconvex_logreg(features, labels, 10, split="sorted_norm", lam=0.0,
                              scales=torch.full((10,), 3.0, dtype=torch.float64))
    unscaled = nonconvex_logreg(features, labels, 10, split="sorted_norm", lam=0.0)
    assert torch.allclose(scaled.L_i, 9 * unscaled.L_i)
    X, y = sklearn_binary("breast_cancer")
    assert X.shape == (569, 30) and set(y.unique().tolist()) == {-1.0, 1.0}
    assert float(X.mean(0).abs().max()) < 1e-10
    assert sklearn_binary("digits_parity")[0].shape == (1797, 64)


def test_bilinear_saddle_operator_solution_and_constants():
    problem = bilinear_saddle(4, 10, lam=0.1, generator=gen(), dtype=torch.float64)
    z = torch.randn(10, generator=gen(1), dtype=torch.float64)
    h = 5
    A, a, b = problem.B[:, :h, h:], problem.c[:, :h], problem.c[:, h:]
    x, y = z[:h].clone().requires_grad_(True), z[h:].clone().requires_grad_(True)
    f = (torch.einsum("i,mij,j->m", x, A, y) + a @ x - b @ y + 0.05 * x.square().sum() - 0.05 * y.square().sum())
    for m in range(4):
        gx, gy = torch.autograd.grad(f[m], (x, y), retain_graph=True)
        assert torch.allclose(problem.operators(z)[m], torch.cat([gx, -gy]))
    assert float(problem.operator(problem.z_star).abs().max()) < 1e-12 and problem.dist_sq(problem.z_star) == 0
    Z = torch.randn(4, 10, generator=gen(2), dtype=torch.float64)
    assert torch.allclose(problem.operators(Z)[2], problem.operators(Z[2])[2])
    # strong monotonicity with mu = lam and Lipschitz bound L_max per device
    w = torch.randn(10, generator=gen(3), dtype=torch.float64)
    diff = problem.operators(z) - problem.operators(w)
    assert bool(((diff @ (z - w)) >= 0.1 * (z - w).square().sum() * (1 - 1e-9)).all())
    assert float(diff.norm(dim=1).max()) <= problem.L_max * float((z - w).norm())
    assert problem.L <= problem.L_max and problem.mu == 0.1


def test_smoothness_constants_summary():
    c = smoothness_constants(torch.tensor([1.0, 1.0, 1.0, 9.0]), 2.0)
    assert c.L_am == 3.0 and c.L_qm == pytest.approx(math.sqrt(21)) and c.L_max == 9.0
    assert c.L_var == pytest.approx(12.0) and c.qm_over_am == pytest.approx(math.sqrt(21) / 3)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: heterogeneous_least_squares(0, 3, 3, generator=gen()), ValueError),
        (lambda: heterogeneous_least_squares(2, 3, 3, generator=None), TypeError),
        (lambda: heterogeneous_least_squares(2, 3, 3, generator=gen(), heavy_frac=1.5), ValueError),
        (lambda: heterogeneous_least_squares(2, 3, 3, generator=gen(), scale=0.0), ValueError),
        (lambda: heterogeneous_least_squares(2, 3, 3, generator=gen(), scales=torch.ones(3)), ValueError),
        (lambda: heterogeneous_least_squares(2, 3, 3, generator=gen(), lam=-1.0), ValueError),
        (lambda: heterogeneous_least_squares(2, 3, 3, generator=gen(), dtype=torch.int64), ValueError),
        (lambda: least_squares().grads(torch.zeros(4)), ValueError),
        (lambda: least_squares().grads(torch.zeros(5, 5)), ValueError),
        (lambda: least_squares().grads(torch.full((5,), math.nan)), ValueError),
        (lambda: least_squares().grads([0.0] * 5), TypeError),
        (lambda: least_squares().grad(torch.zeros(6, 5)), ValueError),
        (lambda: nonconvex_logreg(torch.zeros(10, 2), torch.full((10,), 2.0), 2, generator=gen()), ValueError),
        (lambda: nonconvex_logreg(torch.zeros(10, 2), torch.ones(10), 11, generator=gen()), ValueError),
        (lambda: nonconvex_logreg(torch.zeros(10, 2), torch.ones(10), 2, split="by_label"), ValueError),
        (lambda: nonconvex_logreg(torch.zeros(10, 2), torch.ones(10), 2), TypeError),
        (lambda: synthetic_classification(10, 2, generator=gen(), flip=0.7), ValueError),
        (lambda: sklearn_binary("iris"), ValueError),
        (lambda: bilinear_saddle(2, 5, generator=gen()), ValueError),
        (lambda: bilinear_saddle(2, 4, generator=gen(), lam=0.0), ValueError),
        (lambda: bilinear_saddle(2, 4, generator=gen()).operators(torch.zeros(3, 4)), ValueError),
        (lambda: smoothness_constants(torch.tensor([1.0, -1.0]), 1.0), ValueError),
    ],
)
def test_bad_input_raises(call, error):
    with pytest.raises(error):
        call()


def test_stochastic_grads_add_seeded_gaussian_noise():
    problem = least_squares()
    x = torch.zeros(problem.d, dtype=torch.float64)
    noisy = problem.stochastic_grads(x, 0.5, gen(1))
    assert torch.equal(noisy, problem.stochastic_grads(x, 0.5, gen(1)))
    assert torch.equal(problem.stochastic_grads(x, 0.0, gen(1)), problem.grads(x))
    many = torch.stack([problem.stochastic_grads(x, 0.5, gen(s)) - problem.grads(x) for s in range(400)])
    assert float(many.std()) == pytest.approx(0.5, rel=0.05)
    with pytest.raises(ValueError):
        problem.stochastic_grads(x, -1.0, gen())
    with pytest.raises(TypeError):
        problem.stochastic_grads(x, 1.0, None)
