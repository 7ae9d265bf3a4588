"""Feature denoisers for received JSCC symbols ``r = z + n`` (n: noise or de-shuffled interference).

* :class:`WienerFeatureDenoiser`: the closed-form Gaussian-prior MMSE estimate
  ``ẑ = μ + Σ_z (Σ_z + σ² I)⁻¹ (r − m − μ)`` in the real representation, with ``μ, Σ_z`` the mean and
  covariance of clean training features, ``σ²`` the noise variance per real component and ``m`` the noise
  mean. No training.
* :class:`VPSchedule` and :class:`DiffusionFeatureDenoiser`: a small variance-preserving diffusion model
  (DDPM training with ε-prediction) on clean features, used as a denoiser by starting the reverse process
  at the step whose noise level matches the effective SINR, ``t* = argmin_t |ᾱ_t − SINR/(1 + SINR)|``, and
  running deterministic DDIM steps to ``t = 0`` (as in CDDM and SGD-JSCC; reconstructed).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from commlab.channels import complex_to_real, power_normalize, real_to_complex
from commlab.channels._checks import require_complex


def _per_example(value, batch: int, device) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"expected a scalar or a [batch={batch}] tensor, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError("noise variances and SINRs must be finite and >= 0")
    return t


class WienerFeatureDenoiser:
    """Gaussian-prior MMSE (Wiener) denoiser fitted on clean complex features ``[N, n]``."""

    def __init__(self, features: torch.Tensor):
        require_complex("features", features)
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"features must be [N >= 2, n_symbols], got shape {tuple(features.shape)}")
        x = complex_to_real(features.detach()).double()
        self.n_symbols = features.shape[1]
        self.mean = x.mean(dim=0)
        cov = torch.cov(x.T, correction=0)
        self.eigenvalues, self.eigenvectors = torch.linalg.eigh(cov)
        self.eigenvalues = self.eigenvalues.clamp_min(0.0)

    def __call__(self, r: torch.Tensor, noise_var, noise_mean=0.0) -> torch.Tensor:
        """Denoise ``r`` (complex ``[B, n]``) given the noise variance per real component and the noise mean
        (each a scalar or ``[B]``)."""
        require_complex("r", r)
        if r.ndim != 2 or r.shape[1] != self.n_symbols:
            raise ValueError(f"r must be [batch, {self.n_symbols}], got shape {tuple(r.shape)}")
        batch = r.shape[0]
        var = _per_example(noise_var, batch, r.device)
        m = torch.as_tensor(noise_mean, dtype=torch.complex128, device=r.device)
        m = m.reshape(-1, 1) if m.ndim == 1 else m
        centred = complex_to_real(r.to(torch.complex128) - m) - self.mean
        coeff = centred @ self.eigenvectors
        coeff = coeff * (self.eigenvalues / (self.eigenvalues + var[:, None]))
        return real_to_complex((self.mean + coeff @ self.eigenvectors.T).float())


class VPSchedule:
    """Variance-preserving noise schedule: ``x_t = sqrt(ᾱ_t)·x_0 + sqrt(1 − ᾱ_t)·ε``, ``t = 0 … T−1``.

    ``kind="cosine"`` (Nichol & Dhariwal, s = 0.008, β clipped at 0.999) or ``"linear"`` (β from 1e-4 to 0.02).
    """

    def __init__(self, steps: int = 1000, kind: str = "cosine"):
        if not isinstance(steps, int) or steps < 2:
            raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
        if kind == "cosine":
            s = 0.008
            f = torch.cos((torch.arange(steps + 1, dtype=torch.float64) / steps + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        elif kind == "linear":
            betas = torch.linspace(1e-4, 0.02, steps, dtype=torch.float64)
        else:
            raise ValueError(f"kind must be 'cosine' or 'linear', got {kind!r}")
        self.steps, self.kind = steps, kind
        self.alpha_bar = torch.cumprod(1 - betas, dim=0)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio ``ᾱ_t / (1 − ᾱ_t)`` of step ``t``."""
        a = self.alpha_bar[t]
        return a / (1 - a)

    def start_step(self, sinr) -> torch.Tensor:
        """``t* = argmin_t |ᾱ_t − SINR/(1 + SINR)|`` for linear SINRs (scalar or ``[B]``) -> int64 of the same shape."""
        sinr = torch.as_tensor(sinr, dtype=torch.float64)
        if not bool(torch.isfinite(sinr).all()) or bool((sinr < 0).any()):
            raise ValueError(f"sinr must be finite and >= 0 (linear), got {sinr}")
        target = sinr / (1 + sinr)
        return (self.alpha_bar[None, :] - target.reshape(-1, 1)).abs().argmin(dim=1).reshape(sinr.shape)


def _time_features(t: torch.Tensor, steps: int, dim: int = 32) -> torch.Tensor:
    freqs = torch.exp(torch.linspace(0, math.log(1000.0), dim // 2, device=t.device))
    angle = (t.float() / steps)[:, None] * freqs[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=1)


class DiffusionFeatureDenoiser(nn.Module):
    """Small DDPM on unit-variance real features with an MLP ε-model; denoises by DDIM from ``t*(SINR)``.

    Clean features are unit-power complex ``[N, n]``; internally they are the ``2n`` reals scaled by
    ``sqrt(2)`` (unit variance per real). Args: ``n_symbols``, ``hidden`` (MLP width), ``schedule``.
    """

    def __init__(self, n_symbols: int, hidden: int = 256, schedule: VPSchedule | None = None):
        super().__init__()
        self.n_symbols = n_symbols
        self.schedule = schedule or VPSchedule()
        dim = 2 * n_symbols
        self.net = nn.Sequential(nn.Linear(dim + 32, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def epsilon(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x_t, _time_features(t, self.schedule.steps)], dim=1))

    def fit(self, features: torch.Tensor, *, steps: int, generator: torch.Generator, batch_size: int = 256,
            lr: float = 1e-3) -> list[float]:
        """DDPM training ``E‖ε − ε_θ(sqrt(ᾱ_t)x_0 + sqrt(1−ᾱ_t)ε, t)‖²`` on clean features; returns the losses."""
        require_complex("features", features)
        x0_all = complex_to_real(features.detach()) * math.sqrt(2.0)
        alpha_bar = self.schedule.alpha_bar.float()
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        losses = []
        self.train()
        for _ in range(steps):
            idx = torch.randint(0, x0_all.shape[0], (batch_size,), generator=generator)
            t = torch.randint(0, self.schedule.steps, (batch_size,), generator=generator)
            eps = torch.randn(batch_size, x0_all.shape[1], generator=generator)
            a = alpha_bar[t][:, None]
            loss = (self.epsilon(a.sqrt() * x0_all[idx] + (1 - a).sqrt() * eps, t) - eps).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        self.eval()
        return losses

    @torch.no_grad()
    def forward(self, r: torch.Tensor, sinr, noise_mean=0.0, ddim_steps: int = 20,
                renormalize: bool = True) -> torch.Tensor:
        """Denoise ``r`` (complex ``[B, n]``, unit-power signal plus noise at linear ``sinr``, scalar or ``[B]``).

        ``r̃ = (r − m)/sqrt(1 + 1/SINR)`` is matched to ``x_{t*}``, then ``ddim_steps`` deterministic DDIM
        steps run from ``t*`` to 0. The output is rescaled to unit power if ``renormalize``.
        """
        require_complex("r", r)
        batch = r.shape[0]
        sinr_t = _per_example(sinr, batch, r.device).clamp_min(1e-6)
        m = torch.as_tensor(noise_mean, dtype=torch.complex64, device=r.device)
        m = m.reshape(-1, 1) if m.ndim == 1 else m
        x = complex_to_real(r - m) * math.sqrt(2.0) / torch.sqrt(1 + 1 / sinr_t).float()[:, None]
        t_start = self.schedule.start_step(sinr_t).to(r.device)
        alpha_bar = self.schedule.alpha_bar.float().to(r.device)
        fractions = torch.linspace(1.0, 0.0, ddim_steps + 1)
        x0 = x
        for i in range(ddim_steps):
            t = (t_start.float() * fractions[i]).round().long()
            t_next = (t_start.float() * fractions[i + 1]).round().long()
            a, a_next = alpha_bar[t][:, None], alpha_bar[t_next][:, None]
            eps = self.epsilon(x, t)
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        z = real_to_complex(x0 / math.sqrt(2.0))
        return power_normalize(z) if renormalize else z
