"""commlab.problems.weighted_least_squares: A_k, b_k and w* against their definitions, padding, runs, refusals."""

import pytest
import torch

from commlab.problems.weighted_least_squares import weighted_least_squares_clients


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_a_and_b_follow_their_definitions():
    p = weighted_least_squares_clients(4, 3, 6, generator=gen())
    for k in range(4):
        W = torch.diag(p.weights[k])
        assert torch.allclose(p.A[k], 2 * p.X[k].T @ W @ p.X[k], atol=1e-12)
        assert torch.allclose(p.b[k], 2 * p.X[k].T @ W @ p.y[k], atol=1e-12)
    assert bool((p.weights >= 0.5).all()) and bool((p.weights <= 1.5).all())


def test_w_star_is_the_exact_wls_solution():
    p = weighted_least_squares_clients(5, 4, 7, generator=gen(1), noise_var=0.1)
    # the stacked weighted problem solved by least squares on sqrt(W) X, sqrt(W) y
    root = p.weights.sqrt()
    X = (root[..., None] * p.X).reshape(-1, 4)
    y = (root * p.y).reshape(-1, 1)
    reference = torch.linalg.lstsq(X, y, driver="gelsd").solution[:, 0]
    assert torch.allclose(p.w_star, reference, atol=1e-10)
    # the gradient of sum_k J_k vanishes there, and J rises in every direction
    w = p.w_star.clone().requires_grad_(True)
    p.costs(w).sum().backward()
    assert float(w.grad.abs().max()) < 1e-9
    gradient = torch.stack([p.A[k] @ p.w_star - p.b[k] for k in range(5)]).sum(0)
    assert float(gradient.abs().max()) < 1e-9
    for step in torch.eye(4, dtype=torch.float64):
        assert float(p.costs(p.w_star + 1e-3 * step).sum()) > float(p.costs(p.w_star).sum())


def test_costs_gradient_is_a_w_minus_b():
    p = weighted_least_squares_clients(3, 4, 5, generator=gen(2))
    w = torch.randn(4, generator=gen(3), dtype=torch.float64).requires_grad_(True)
    for k in range(3):
        (grad,) = torch.autograd.grad(p.costs(w)[k], w)
        assert torch.allclose(grad, p.A[k] @ w.detach() - p.b[k], atol=1e-10)


def test_noiseless_targets_recover_the_planted_model():
    p = weighted_least_squares_clients(6, 5, 4, generator=gen(4), noise_var=0.0)
    assert torch.allclose(p.w_star, p.w_true, atol=1e-10)


def test_heterogeneous_sizes_pad_with_zero_weights():
    sizes = torch.tensor([2, 5, 3])
    p = weighted_least_squares_clients(3, 2, generator=gen(5), sizes=sizes)
    assert p.X.shape == (3, 5, 2)
    for k, m in enumerate(sizes.tolist()):
        assert bool((p.weights[k, m:] == 0).all()) and bool((p.weights[k, :m] > 0).all())
        X, W, y = p.X[k, :m], torch.diag(p.weights[k, :m]), p.y[k, :m]
        assert torch.allclose(p.A[k], 2 * X.T @ W @ X, atol=1e-12)
        assert torch.allclose(p.b[k], 2 * X.T @ W @ y, atol=1e-12)
    assert torch.equal(p.sizes, sizes)


def test_runs_axis_holds_independent_problems():
    p = weighted_least_squares_clients(4, 3, 6, generator=gen(6), runs=5)
    assert p.A.shape == (5, 4, 3, 3) and p.b.shape == (5, 4, 3) and p.w_star.shape == (5, 3)
    assert (p.clients, p.dim) == (4, 3)
    assert not torch.allclose(p.w_true[0], p.w_true[1])
    for r in range(5):
        assert torch.allclose(torch.linalg.solve(p.A[r].sum(0), p.b[r].sum(0)), p.w_star[r], atol=1e-12)


def test_seeded_and_cast():
    a = weighted_least_squares_clients(3, 2, 4, generator=gen(7))
    b = weighted_least_squares_clients(3, 2, 4, generator=gen(7))
    c = weighted_least_squares_clients(3, 2, 4, generator=gen(8))
    assert torch.equal(a.A, b.A) and torch.equal(a.y, b.y)
    assert not torch.equal(a.A, c.A)
    f32 = weighted_least_squares_clients(3, 2, 4, generator=gen(7), dtype=torch.float32)
    assert f32.A.dtype == torch.float32 and torch.allclose(f32.A.double(), a.A, rtol=1e-6)


@pytest.mark.parametrize("kwargs, error", [
    (dict(clients=0), ValueError), (dict(dim=0), ValueError), (dict(samples=0), ValueError),
    (dict(clients=2.5), TypeError), (dict(generator=0), TypeError),
    (dict(weight_low=-1.0), ValueError), (dict(weight_low=2.0, weight_high=1.0), ValueError),
    (dict(noise_var=-0.1), ValueError), (dict(runs=0), ValueError), (dict(dtype=torch.int64), ValueError),
    (dict(sizes=torch.tensor([2, 3])), ValueError), (dict(sizes=torch.tensor([2, 0, 3])), ValueError),
    (dict(sizes=torch.tensor([2.0, 1.0, 3.0])), ValueError),
])
def test_bad_input_is_refused(kwargs, error):
    options = dict(clients=3, dim=2, samples=4, generator=gen())
    options.update(kwargs)
    with pytest.raises(error):
        weighted_least_squares_clients(**options)
