"""commlab.ensembles.calibrated_losses: the fixed surrogates are convex and classification-calibrated (checked
numerically on the conditional risk), EnsLoss's sampled derivatives are non-decreasing and negative on 10,000
draws and integrate to convex calibrated losses, the surrogate's gradient is g, seeding, refusals."""

import numpy as np
import pytest
import torch

from commlab.ensembles import calibrated_losses as cl

ETAS = torch.tensor([0.02, 0.1, 0.3, 0.45, 0.49, 0.51, 0.55, 0.7, 0.9, 0.98], dtype=torch.float64)
ALPHAS = torch.arange(-600, 601, dtype=torch.float64) / 100          # symmetric, with an exact 0


def test_margins_and_loss_values_by_hand():
    scores = torch.tensor([2.0, -1.0, 0.5])
    z = cl.margins(scores, torch.tensor([1, 1, 0]))
    assert torch.equal(z, torch.tensor([2.0, -1.0, -0.5]))
    zz = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    assert torch.allclose(cl.margin_loss(zz, "logistic"), torch.log1p(torch.exp(-zz)))
    assert torch.allclose(cl.margin_loss(zz, "hinge"), torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(cl.margin_loss(zz, "exponential"), torch.exp(-zz))


@pytest.mark.parametrize("name, slope", [("logistic", -0.5), ("hinge", -1.0), ("exponential", -1.0)])
def test_fixed_losses_are_convex_and_calibrated(name, slope):
    z = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    (d0,) = torch.autograd.grad(cl.margin_loss(z, name).sum(), z)
    assert float(d0) == pytest.approx(slope)                                     # φ'(0) < 0
    h = 1e-6                                                                     # differentiable at 0
    left = (cl.margin_loss(torch.tensor([0.0], dtype=torch.float64), name)
            - cl.margin_loss(torch.tensor([-h], dtype=torch.float64), name)) / h
    right = (cl.margin_loss(torch.tensor([h], dtype=torch.float64), name)
             - cl.margin_loss(torch.tensor([0.0], dtype=torch.float64), name)) / h
    assert float(left) == pytest.approx(float(right), abs=1e-5)
    phi = cl.margin_loss(ALPHAS, name)
    assert torch.all(phi[2:] - 2 * phi[1:-1] + phi[:-2] >= -1e-12)               # convex
    sign = cl.calibration_sign(lambda a: cl.margin_loss(a, name), ETAS, ALPHAS)
    assert torch.equal(sign, torch.sign(2 * ETAS - 1))                           # the Bayes sign for every η


def test_the_calibration_check_can_fail():
    # convex but not calibrated: φ'(0) = 0 for a shifted square, the minimiser has the wrong sign
    sign = cl.calibration_sign(lambda a: (1 + a) ** 2, ETAS, ALPHAS)
    assert torch.equal(sign, -torch.sign(2 * ETAS - 1))
    # φ(z) = max(0, z) has φ'(0) undefined and no decrease: the minimiser is 0, no sign
    assert torch.all(cl.calibration_sign(lambda a: torch.relu(a), ETAS, ALPHAS) == 0)


@pytest.mark.parametrize("lam, draws", [(0.0, 10_000), (0.5, 1_000), (-0.5, 1_000)])
def test_ensloss_derivatives_are_non_decreasing_and_negative_on_10000_draws(lam, draws):
    g_gen = torch.Generator().manual_seed(1)
    z_gen = torch.Generator().manual_seed(2)
    batch = 64
    z = torch.randn(draws, batch, generator=z_gen) * 2
    z[:, 0] = 0.0                                                    # a margin exactly at zero in every batch
    ok_monotone = ok_negative = 0
    for row in z:
        g = cl.ensloss_derivatives(row, g_gen, boxcox_lambda=lam)
        gs = g[torch.argsort(row, stable=True)]
        ok_monotone += bool(torch.all(gs[1:] >= gs[:-1]))
        ok_negative += bool(g[0] < 0 and torch.all(g < 0))
        assert torch.all(g >= -1.0 - 1e-6)                          # the clip
    assert ok_monotone == draws and ok_negative == draws


def test_ensloss_tail_and_ties():
    gen = torch.Generator().manual_seed(3)
    z = torch.tensor([-2.0, 0.0, 0.5, 1.0, 2.0, 4.0, 4.0])
    g = cl.ensloss_derivatives(z, gen, eps=0.0)
    # beyond the margin 1 the derivative decays like 1/z: |g(4)| <= |g(1)| / 4 since |g| is non-increasing
    assert float(-g[5]) <= float(-g[3]) / 4 + 1e-7
    assert float(g[5]) == pytest.approx(float(g[6]), abs=1.0)     # tied margins: consecutive values, both valid
    assert torch.all(g[1:] >= g[:-1]) and torch.all(g <= 0)


def test_sampled_derivatives_integrate_to_convex_calibrated_losses():
    gen = torch.Generator().manual_seed(4)
    grid = ALPHAS.float()
    for _ in range(20):
        g = cl.ensloss_derivatives(grid, gen, scale=1.5)
        zs, phi = cl.loss_from_derivatives(grid, g)
        slopes = (phi[1:] - phi[:-1]) / (zs[1:] - zs[:-1])
        assert torch.all(slopes[1:] >= slopes[:-1] - 1e-9)                     # convex
        def interpolated(a, zs=zs, phi=phi):
            return torch.from_numpy(np.interp(a.numpy(), zs.numpy(), phi.numpy()))

        sign = cl.calibration_sign(interpolated, ETAS, ALPHAS)
        assert torch.equal(sign, torch.sign(2 * ETAS - 1))


def test_surrogate_gradient_is_the_sampled_derivative():
    gen = torch.Generator().manual_seed(5)
    scores = torch.randn(16, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(2, (16,), generator=gen)
    z = cl.margins(scores, labels)
    g = cl.ensloss_derivatives(z, gen)
    (grad,) = torch.autograd.grad(cl.ensloss_surrogate(z, g), scores)
    assert torch.allclose(grad, g * (2 * labels.double() - 1) / 16)              # dL/df_i = g_i y_i / B
    for name in cl.LOSSES:                                                       # finite gradients
        (gl,) = torch.autograd.grad(cl.margin_loss(cl.margins(scores * 20, labels), name).mean(), scores)
        assert torch.isfinite(gl).all()


def test_ensloss_is_seeded_and_leaves_the_global_rng_alone():
    z = torch.linspace(-3, 3, 50)
    state = torch.get_rng_state()
    a = cl.ensloss_derivatives(z, torch.Generator().manual_seed(7))
    b = cl.ensloss_derivatives(z, torch.Generator().manual_seed(7))
    c = cl.ensloss_derivatives(z, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(state, torch.get_rng_state())
    assert a.dtype == z.dtype


def test_bad_input_is_refused():
    gen = torch.Generator().manual_seed(0)
    z = torch.zeros(4)
    with pytest.raises(ValueError, match="name"):
        cl.margin_loss(z, "squared")
    with pytest.raises(ValueError, match="margins"):
        cl.ensloss_derivatives(torch.zeros(0), gen)
    with pytest.raises(ValueError, match="margins"):
        cl.ensloss_derivatives(torch.tensor([0.0, float("nan")]), gen)
    with pytest.raises(TypeError, match="generator"):
        cl.ensloss_derivatives(z, 0)
    with pytest.raises(ValueError, match="scale"):
        cl.ensloss_derivatives(z, gen, scale=0.0)
    with pytest.raises(ValueError, match="labels"):
        cl.margins(torch.zeros(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="z and g"):
        cl.ensloss_surrogate(torch.zeros(3), torch.zeros(4))
