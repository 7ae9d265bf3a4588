"""The Lorenz-96 integrator in commlab.data.lorenz96: the equations, the energy invariant of the
advection term, RK4's order, the published leading Lyapunov exponent at K = 40, F = 8, seeding and
refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from commlab.data.lorenz96 import Lorenz96, energy


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_tendency_is_the_cyclic_lorenz96_equation():
    model = Lorenz96(7, forcing=3.5, damping=0.7)
    x = torch.randn(2, 7, generator=_gen(0), dtype=torch.float64)
    expected = np.empty((2, 7))
    xn = x.numpy()
    for k in range(7):
        expected[:, k] = ((xn[:, (k + 1) % 7] - xn[:, (k - 2) % 7]) * xn[:, (k - 1) % 7]
                          - 0.7 * xn[:, k] + 3.5)
    assert np.allclose(model.tendency(x).numpy(), expected, rtol=0, atol=1e-13)
    # x_k = F is the fixed point of the standard model.
    assert torch.equal(Lorenz96(forcing=8.0).tendency(torch.full((40,), 8.0)), torch.zeros(40))


def test_energy_budget_of_the_tendency():
    # dE/dt = x·dx/dt = −c Σx² + F Σx: the advection term contributes exactly nothing.
    model = Lorenz96(40, forcing=8.0, damping=1.0)
    x = model.spin_up(5, generator=_gen(1))
    de_dt = (x * model.tendency(x)).sum(-1)
    assert torch.allclose(de_dt, -2.0 * energy(x) + 8.0 * x.sum(-1), rtol=1e-12, atol=1e-10)


def test_unforced_undamped_energy_drift_is_small_and_shrinks_at_least_as_h4():
    x0 = Lorenz96().spin_up(16, generator=_gen(2))
    e0 = energy(x0)
    steps = (0.02, 0.01, 0.005)
    drift = []
    for h in steps:
        conservative = Lorenz96(forcing=0.0, damping=0.0, dt=h)
        n = round(1.0 / h)  # 1 MTU
        xt = conservative.integrate(x0, n, save_every=n)[-1]
        drift.append(((energy(xt) - e0).abs() / e0).mean().item())
    assert drift[1] < 1e-5  # relative drift at dt = 0.01 over 1 MTU (measured 7e-7)
    orders = [math.log2(drift[i] / drift[i + 1]) for i in range(2)]
    # A fourth-order method drifts at least as h^4 (measured ≈ 4.8: RK4 keeps quadratic
    # invariants one order better than the state); RK2 or Euler would give ≤ 3.
    assert all(order > 3.8 for order in orders), orders


def test_rk4_state_error_is_fourth_order():
    x0 = Lorenz96().spin_up(8, generator=_gen(3))
    reference = Lorenz96(dt=0.01 / 16).integrate(x0, 1600, save_every=1600)[-1]
    errors = []
    for h in (0.04, 0.02, 0.01):
        n = round(1.0 / h)
        errors.append((Lorenz96(dt=h).integrate(x0, n, save_every=n)[-1] - reference).norm(dim=-1).mean())
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(3.7 < order < 4.4 for order in orders), orders  # measured 4.12, 4.06


def test_leading_lyapunov_exponent_matches_the_published_value():
    # K = 40, F = 8: λ1 ≈ 1.7 per MTU (Lorenz & Emanuel 1998: error-doubling time ≈ 0.42 MTU,
    # i.e. ln 2 / 0.42 = 1.65; Lyapunov spectra give 1.68–1.7). Budget: 16 starts × 50 MTU at
    # dt = 0.01 (≈ 1 CPU-s); the standard error of the mean is ≈ 0.025 (long runs give 1.68-1.69),
    # so the tolerance [1.55, 1.85] is about ±6 standard errors around 1.7.
    model = Lorenz96(40, forcing=8.0, dt=0.01)
    x0 = model.spin_up(16, generator=_gen(4))
    lam = model.lyapunov_exponent(x0, 5000, generator=_gen(5), renorm_every=10, n_align=200)
    assert lam.shape == (16,)
    assert 1.55 <= lam.mean().item() <= 1.85, lam.mean().item()
    # Below the chaotic regime (F = 2 decays to a steady or periodic state) nothing grows.
    calm = Lorenz96(40, forcing=2.0)
    assert calm.lyapunov_exponent(calm.spin_up(4, generator=_gen(6), transient=50.0), 2000,
                                  generator=_gen(7)).max().item() < 0.05


def test_integrate_shapes_time_axis_and_subsampling():
    model = Lorenz96(12)
    x0 = model.spin_up((3, 2), generator=_gen(8))
    assert x0.shape == (3, 2, 12) and x0.dtype == torch.float64
    every = model.integrate(x0, 20)
    sampled = model.integrate(x0, 20, save_every=5)
    assert every.shape == (21, 3, 2, 12) and sampled.shape == (5, 3, 2, 12)
    assert torch.equal(every[0], x0) and torch.equal(sampled, every[::5])
    assert torch.equal(model.step(x0), every[1])
    assert model.integrate(x0, 0).shape == (1, 3, 2, 12)
    x32 = model.spin_up(4, generator=_gen(8), dtype=torch.float32)
    assert x32.dtype == torch.float32 and model.integrate(x32, 3).dtype == torch.float32


def test_seeded_reproducibility():
    model = Lorenz96()
    a, b = model.spin_up(4, generator=_gen(9)), model.spin_up(4, generator=_gen(9))
    assert torch.equal(a, b)
    assert not torch.equal(a, model.spin_up(4, generator=_gen(10)))
    ens = model.perturbed_ensemble(a, 6, std=0.1, generator=_gen(11))
    assert torch.equal(ens, model.perturbed_ensemble(a, 6, std=0.1, generator=_gen(11)))
    noisy = model.integrate(ens, 10, noise_std=0.3, generator=_gen(12))
    assert torch.equal(noisy, model.integrate(ens, 10, noise_std=0.3, generator=_gen(12)))
    assert not torch.equal(noisy, model.integrate(ens, 10, noise_std=0.3, generator=_gen(13)))


def test_ensemble_perturbations_and_noise_have_the_stated_size():
    model = Lorenz96(40, dt=0.01)
    state = model.spin_up(3, generator=_gen(14))
    ens = model.perturbed_ensemble(state, 500, std=0.1, generator=_gen(15))
    assert ens.shape == (3, 500, 40)
    assert (ens - state.unsqueeze(-2)).std().item() == pytest.approx(0.1, rel=0.02)
    # One stochastic step differs from the deterministic one by σ √dt ξ.
    noisy = model.integrate(ens, 1, noise_std=2.0, generator=_gen(16))[-1]
    assert (noisy - model.step(ens)).std().item() == pytest.approx(2.0 * math.sqrt(0.01), rel=0.02)


def test_refusals():
    with pytest.raises(ValueError, match="n_variables"):
        Lorenz96(3)
    with pytest.raises(ValueError, match="dt"):
        Lorenz96(dt=0.0)
    with pytest.raises(ValueError, match="damping"):
        Lorenz96(damping=-1.0)
    with pytest.raises(ValueError, match="forcing"):
        Lorenz96(forcing=float("nan"))
    model = Lorenz96(10)
    x = torch.zeros(2, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"\[\.\.\., 10\]"):
        model.step(torch.zeros(2, 9))
    with pytest.raises(TypeError, match="floating-point"):
        model.step(torch.zeros(2, 10, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model.step(np.zeros((2, 10)))
    with pytest.raises(ValueError, match="finite"):
        model.step(torch.full((10,), float("inf")))
    with pytest.raises(ValueError, match="multiple of save_every"):
        model.integrate(x, 7, save_every=2)
    with pytest.raises(TypeError, match="generator"):
        model.integrate(x, 2, noise_std=0.1)
    with pytest.raises(ValueError, match="noise_std > 0"):
        model.integrate(x, 2, generator=_gen(0))
    with pytest.raises(ValueError, match="noise_std"):
        model.integrate(x, 2, noise_std=-0.1, generator=_gen(0))
    with pytest.raises(FloatingPointError, match="diverged"):
        Lorenz96(40, dt=1.0).integrate(Lorenz96(40).spin_up(1, generator=_gen(0), transient=1.0), 50)
    with pytest.raises(TypeError, match="generator"):
        model.spin_up(2, generator=0)
    with pytest.raises(ValueError, match="batch_shape"):
        model.spin_up((2, 0), generator=_gen(0))
    with pytest.raises(TypeError, match="dtype"):
        model.spin_up(2, generator=_gen(0), dtype=torch.int32)
    with pytest.raises(ValueError, match="n_members"):
        model.perturbed_ensemble(x, 0, std=0.1, generator=_gen(0))
    with pytest.raises(TypeError, match="float64"):
        model.lyapunov_exponent(x.float(), 10, generator=_gen(0))
    with pytest.raises(ValueError, match="multiple of renorm_every"):
        model.lyapunov_exponent(x, 15, generator=_gen(0), renorm_every=10)
    with pytest.raises(ValueError, match="eps"):
        model.lyapunov_exponent(x, 10, generator=_gen(0), eps=0.1)
