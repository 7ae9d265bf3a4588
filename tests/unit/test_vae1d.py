"""The 1-D conv β-VAE of commlab.models.vae1d: shapes, loss terms by hand, state_dict round trip,
seeded training that leaves the global generator alone, and a loss that decreases on a tiny case."""

from __future__ import annotations

import math

import pytest
import torch

from commlab.models.vae1d import ConvVAE1d, beta_vae_loss, fit_vae
from commlab.seeding import seeded_init


def _model(seed: int = 0) -> ConvVAE1d:
    with seeded_init(seed):
        return ConvVAE1d(2, 16, latent_dim=2, channels=(8, 8), kernel=3)


def _toy(n: int = 128) -> torch.Tensor:
    """Sequences [n, 2, 16] driven by two factors: a sinusoid's phase and amplitude."""
    g = torch.Generator().manual_seed(0)
    phase, amp = torch.rand(n, 1, generator=g) * math.pi, 0.5 + torch.rand(n, 1, generator=g)
    t = torch.arange(16.0)
    return torch.stack([amp * torch.sin(0.4 * t + phase), amp * torch.cos(0.4 * t + phase)], dim=1)


def test_shapes_and_extreme_latents_decode():
    model = _model()
    x = _toy(5)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 2)
    x_hat, mu2, _ = model(x)
    assert x_hat.shape == x.shape and torch.equal(mu, mu2)
    assert torch.isfinite(model.decode(torch.full((3, 2), 50.0))).all()


def test_loss_terms_by_hand():
    x = torch.ones(4, 2, 16)
    zero = torch.zeros(4, 2)
    loss, recon, kl = beta_vae_loss(x, torch.zeros_like(x), zero, zero, beta=2.0)
    assert recon.item() == pytest.approx(0.5 * 32) and kl.item() == 0.0 and loss.item() == pytest.approx(16.0)
    mu = torch.full((4, 2), 1.0)
    logvar = torch.full((4, 2), math.log(2.0))
    _, _, kl = beta_vae_loss(x, x, mu, logvar, beta=1.0)
    assert kl.item() == pytest.approx(2 * 0.5 * (1 + 2 - 1 - math.log(2.0)))


def test_state_dict_round_trip_gives_identical_outputs():
    a, b = _model(0), _model(1)
    x = _toy(8)
    assert not torch.equal(a.decode(torch.ones(2, 2)), b.decode(torch.ones(2, 2)))
    b.load_state_dict(a.state_dict())
    z = torch.randn(6, 2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.decode(z), b.decode(z)) and torch.equal(a.encode(x)[0], b.encode(x)[0])


def test_training_decreases_the_loss_is_seeded_and_leaves_the_global_rng_alone():
    x = _toy()
    state = torch.get_rng_state()
    model = _model()
    losses = fit_vae(model, x, steps=300, batch_size=32, lr=5e-3, beta=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)
    assert len(losses) == 300 and sum(losses[-30:]) < 0.5 * sum(losses[:30])
    again = fit_vae(_model(), x, steps=300, batch_size=32, lr=5e-3, beta=1.0,
                    generator=torch.Generator().manual_seed(0))
    assert again == losses
    assert not model.training


def test_bad_configurations_and_inputs_are_refused():
    with pytest.raises(ValueError, match="odd"):
        ConvVAE1d(2, 16, kernel=4)
    with pytest.raises(ValueError, match="divisible"):
        ConvVAE1d(2, 18, channels=(8, 8))
    model = _model()
    with pytest.raises(ValueError, match=r"x must be \[N, 2, 16\]"):
        model.encode(torch.zeros(3, 2, 15))
    with pytest.raises(ValueError, match="z must be"):
        model.decode(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="beta"):
        beta_vae_loss(torch.zeros(1, 2, 16), torch.zeros(1, 2, 16), torch.zeros(1, 2), torch.zeros(1, 2), beta=-1.0)
