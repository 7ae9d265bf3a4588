"""Flow matching: the loss against its Gaussian closed form, the exact Gaussian velocity transporting
noise to data, training approaching the minimum loss, conditioning, determinism and bad input."""

import math

import numpy as np
import pytest
import torch

from commlab.models.flow_matching import (
    FlowMatchingMLP,
    TimeEmbedding,
    fit_flow_matching,
    flow_matching_loss,
    gaussian_velocity,
    sample_ode,
)

MU, S = 1.5, 0.5


def _gaussian_min_loss(d: int, s: float) -> float:
    """E_t Σ_d [Var u − Cov(u, x_t)² / Var x_t] for x₀ ~ N(μ, s²I): the loss of the exact velocity."""
    t = (np.arange(200_000) + 0.5) / 200_000                                      # midpoint rule on U(0, 1)
    cov, var = t - (1 - t) * s * s, (1 - t) ** 2 * s * s + t * t
    return d * float(np.mean((1 + s * s) - cov * cov / var))


def test_loss_of_zero_velocity_matches_closed_form():
    # v ≡ 0: E‖ε − x₀‖² = d(1 + s²) + ‖μ‖²
    gen = torch.Generator().manual_seed(0)
    d, n = 3, 400_000
    x0 = MU + S * torch.randn(n, d, dtype=torch.float64, generator=gen)
    loss = float(flow_matching_loss(lambda x, t, c: torch.zeros_like(x), x0, generator=gen))
    assert loss == pytest.approx(d * (1 + S * S) + d * MU * MU, rel=5e-3)


def test_loss_of_exact_gaussian_velocity_matches_its_minimum():
    gen = torch.Generator().manual_seed(1)
    d, n = 2, 400_000
    x0 = MU + S * torch.randn(n, d, dtype=torch.float64, generator=gen)
    loss = float(flow_matching_loss(lambda x, t, c: gaussian_velocity(x, t, MU, S), x0, generator=gen))
    assert loss == pytest.approx(_gaussian_min_loss(d, S), rel=5e-3)


@pytest.mark.parametrize("method,steps,tol", [("euler", 400, 0.02), ("heun", 40, 0.01)])
def test_sampling_the_exact_velocity_recovers_the_gaussian(method, steps, tol):
    gen = torch.Generator().manual_seed(2)
    noise = torch.randn(50_000, 2, dtype=torch.float64, generator=gen)
    x = sample_ode(lambda x, t, c: gaussian_velocity(x, t, [MU, -MU], [S, 2 * S]), noise, steps=steps, method=method)
    assert x.mean(0).tolist() == pytest.approx([MU, -MU], abs=tol + 0.02)
    assert x.std(0).tolist() == pytest.approx([S, 2 * S], abs=tol + 0.02)


def test_training_approaches_the_minimum_loss_and_samples_the_data():
    gen = torch.Generator().manual_seed(3)
    data = MU + S * torch.randn(4096, 1, generator=gen)
    model = FlowMatchingMLP(1, hidden=(64, 64), generator=gen)
    losses = fit_flow_matching(model, data, steps=1500, batch_size=256, lr=3e-3, generator=gen)
    floor = _gaussian_min_loss(1, S)
    assert losses[:5].mean() > 2 * floor
    assert losses[-300:].mean() < floor * 1.15
    x = sample_ode(model, torch.randn(4000, 1, generator=gen), steps=40)
    assert float(x.mean()) == pytest.approx(MU, abs=0.08)
    assert float(x.std()) == pytest.approx(S, abs=0.08)


def test_conditioning_is_used():
    # two conditions, two data clusters: the conditional model must separate them
    gen = torch.Generator().manual_seed(4)
    c = torch.randint(2, (4096, 1), generator=gen).float()
    data = (4 * c - 2) + 0.3 * torch.randn(4096, 1, generator=gen)
    model = FlowMatchingMLP(1, hidden=(64, 64), cond_dim=1, generator=gen)
    fit_flow_matching(model, data, cond=c, steps=1500, batch_size=256, lr=3e-3, generator=gen)
    noise = torch.randn(2000, 1, generator=gen)
    lo = sample_ode(model, noise, steps=40, cond=torch.zeros(2000, 1))
    hi = sample_ode(model, noise, steps=40, cond=torch.ones(2000, 1))
    assert float(lo.mean()) == pytest.approx(-2, abs=0.2)
    assert float(hi.mean()) == pytest.approx(2, abs=0.2)


def test_deterministic_for_a_generator_and_global_rng_untouched():
    def run():
        gen = torch.Generator().manual_seed(5)
        model = FlowMatchingMLP(3, hidden=(16,), generator=gen)
        losses = fit_flow_matching(model, torch.randn(64, 3, generator=gen), steps=20, batch_size=8, lr=1e-2,
                                   generator=gen)
        return losses, model.state_dict()

    state = torch.random.get_rng_state()
    (l1, s1), (l2, s2) = run(), run()
    assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_array_equal(l1, l2)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_state_dict_round_trip():
    gen = torch.Generator().manual_seed(6)
    a = FlowMatchingMLP(4, hidden=(8, 8), cond_dim=2, generator=gen)
    b = FlowMatchingMLP(4, hidden=(8, 8), cond_dim=2, generator=gen)
    b.load_state_dict(a.state_dict())
    x, c = torch.randn(5, 4, generator=gen), torch.randn(5, 2, generator=gen)
    assert torch.equal(a(x, 0.3, c), b(x, 0.3, c))


def test_time_embedding_shape_and_values():
    emb = TimeEmbedding(8, max_frequency=100.0)
    out = emb(torch.tensor([0.0, 0.5]))
    assert out.shape == (2, 8)
    assert torch.equal(out[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert float(out[1, 3]) == pytest.approx(math.sin(50.0), abs=1e-5)


def test_bad_input():
    gen = torch.Generator().manual_seed(7)
    model = FlowMatchingMLP(2, hidden=(8,), generator=gen)
    with pytest.raises(ValueError, match="x must be"):
        model(torch.zeros(3, 5), 0.5)
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.zeros(3, 2), 0.5, torch.zeros(3, 1))
    with pytest.raises(ValueError, match="one time per row"):
        model(torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="cond must be"):
        FlowMatchingMLP(2, cond_dim=1, generator=gen)(torch.zeros(3, 2), 0.5)
    with pytest.raises(TypeError, match="generator"):
        FlowMatchingMLP(2, generator=0)
    with pytest.raises(ValueError, match="even"):
        TimeEmbedding(7)
    with pytest.raises(ValueError, match="method"):
        sample_ode(model, torch.zeros(2, 2), steps=2, method="rk4")
    with pytest.raises(ValueError, match="point mass"):
        gaussian_velocity(torch.zeros(2, 1), 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="cond must be"):
        fit_flow_matching(model, torch.zeros(4, 2), cond=torch.zeros(3, 1), steps=1, batch_size=2, lr=1e-3,
                          generator=gen)
