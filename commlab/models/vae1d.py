"""A small 1-D convolutional β-VAE (Higgins et al. 2017) for multichannel sequences ``[N, C, L]``.

Encoder: ``len(channels)`` stride-2 convolutions (kernel ``kernel``, SiLU), then a linear map to the
posterior mean μ and log-variance log σ² of ``latent_dim`` latents; decoder: the mirror image (linear,
stride-2 transposed convolutions), a linear output. With a unit-variance Gaussian likelihood the loss per
example is

.. math::

    \\mathcal L(x) = \\tfrac12 \\lVert x - \\hat x(z) \\rVert^2
        + \\beta \\, \\tfrac12 \\sum_i \\left(\\mu_i^2 + \\sigma_i^2 - 1 - \\log \\sigma_i^2\\right),
    \\qquad z = \\mu + \\sigma \\odot \\epsilon, \\; \\epsilon \\sim \\mathcal N(0, I),

averaged over the minibatch (:func:`beta_vae_loss`); :func:`fit_vae` trains it with Adam. The prior is
N(0, I), so the "training range" of a latent is about ±1 (±1σ of the prior).
"""

from __future__ import annotations

import torch
from torch import nn

from commlab._checks import check_int, check_nonnegative, check_positive
from commlab.data.batches import EpochBatches


class ConvVAE1d(nn.Module):
    """1-D conv β-VAE.

    Args:
        in_channels: C, channels of the input sequence (e.g. frequency bands).
        length: L, its length; must be divisible by ``2 ** len(channels)``.
        latent_dim: latents d.
        channels: conv channels of the encoder layers (the decoder mirrors them).
        kernel: odd conv kernel size.
    """

    def __init__(self, in_channels: int, length: int, latent_dim: int = 8, channels: tuple[int, ...] = (32, 64, 64),
                 kernel: int = 5):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, low=1)
        self.length = check_int("length", length, low=1)
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        kernel = check_int("kernel", kernel, low=1)
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {kernel}")
        channels = tuple(check_int("channels", c, low=1) for c in channels)
        if not channels:
            raise ValueError("channels must hold at least one layer width")
        if length % 2 ** len(channels):
            raise ValueError(f"length must be divisible by 2 ** len(channels) = {2 ** len(channels)}, got {length}")
        self.reduced = length // 2 ** len(channels)
        pad = kernel // 2
        widths = (in_channels, *channels)
        enc: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            enc += [nn.Conv1d(a, b, kernel, stride=2, padding=pad), nn.SiLU()]
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.posterior = nn.Linear(channels[-1] * self.reduced, 2 * latent_dim)  # (μ, log σ²)
        self.expand = nn.Linear(latent_dim, channels[-1] * self.reduced)
        dec: list[nn.Module] = []
        rev = widths[::-1]
        for a, b in zip(rev[:-1], rev[1:], strict=True):
            dec += [nn.SiLU(), nn.ConvTranspose1d(a, b, kernel, stride=2, padding=pad, output_padding=1)]
        self.decoder = nn.Sequential(*dec)
        self.top = channels[-1]

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[1:] != (self.in_channels, self.length):
            raise ValueError(f"x must be [N, {self.in_channels}, {self.length}], got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(mu, logvar)``, each ``[N, latent_dim]``, of ``x`` ``[N, C, L]``."""
        self._check(x)
        mu, logvar = self.posterior(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean output ``[N, C, L]`` for latents ``z`` ``[N, latent_dim]`` (any values, also beyond the prior)."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be [N, {self.latent_dim}], got {tuple(z.shape)}")
        return self.decoder(self.expand(z).view(len(z), self.top, self.reduced))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """``(x_hat, mu, logvar)`` with z drawn by the reparameterisation z = μ + σ ε (ε from ``generator``;
        without one, z = μ)."""
        mu, logvar = self.encode(x)
        z = mu
        if generator is not None:
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
        return self.decode(z), mu, logvar


def beta_vae_loss(x: torch.Tensor, x_hat: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                  beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, reconstruction, kl)``, each the minibatch mean of its per-example term (module docstring)."""
    beta = check_nonnegative("beta", beta)
    if x.shape != x_hat.shape or mu.shape != logvar.shape or len(mu) != len(x):
        raise ValueError(f"shapes do not match: x {tuple(x.shape)}, x_hat {tuple(x_hat.shape)}, mu {tuple(mu.shape)}, "
                         f"logvar {tuple(logvar.shape)}")
    recon = 0.5 * (x - x_hat).pow(2).flatten(1).sum(1).mean()  # ½‖x − x̂‖²
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()  # KL(N(μ, σ²) ‖ N(0, I))
    return recon + beta * kl, recon, kl


def fit_vae(model: ConvVAE1d, x: torch.Tensor, *, steps: int, batch_size: int, lr: float, beta: float,
            generator: torch.Generator) -> list[float]:
    """Train ``model`` with Adam on :func:`beta_vae_loss` for ``steps`` minibatch steps (reshuffled epochs).

    Args:
        x: float ``[N, C, L]`` training sequences.
        steps, batch_size, lr: optimiser steps, minibatch size (<= N), Adam learning rate.
        beta: the KL weight β (>= 0).
        generator: draws the minibatches and the reparameterisation noise.

    Returns:
        The training loss of every step (per example, in nats).
    """
    steps, batch_size = check_int("steps", steps, low=1), check_int("batch_size", batch_size, low=1)
    lr = check_positive("lr", lr)
    model._check(x)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses, batches = [], EpochBatches(len(x), batch_size, generator)
    for _ in range(steps):
        xb = x[next(batches)]
        loss, _, _ = beta_vae_loss(xb, *model(xb, generator), beta=beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses
