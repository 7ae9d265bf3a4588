"""A learned feature codec with a factorized prior, small enough to train on a CPU core, its rate measured in real
rANS bytes (:mod:`commlab.semcom.entropy_coding`).

The learned baseline of Gao et al. (2024) is CompressAI's hyperprior model adapted to features; this is the
simpler factorized-prior model of Ballé et al. (2018) with per-location (1 × 1) transforms, natively written
(CompressAI pins numpy < 2)::

    F̃ = (F − μ)/σ                  μ, σ: scalar mean and std of the training features (buffers)
    y = g_a(F̃)                     g_a: 1 × 1 convolution C → C (a learned decorrelating transform and scale)
    ŷ = round(y)                   training: y + u, u ~ U(−½, ½) (the additive-noise proxy of rounding)
    F̂ = μ + σ·g_s(ŷ)               g_s: 1 × 1 convolution C → C
    p(ŷ_c) = c_c(ŷ + ½) − c_c(ŷ − ½),   c_c(y) = Σ_k w_ck·sigmoid((y − m_ck)/s_ck)   (factorized prior, K logistics)
    loss = R / F.numel() + λ·mean((F̂ − F)²)/σ²,   R = Σ −log2 p(ŷ)                  (BPFP + λ·normalised MSE)

At test time ŷ is clamped to the support ``[−R, R]`` (:attr:`LearnedFeatureCodec.support`, fixed by the prior's
parameters so both ends know it) and coded per channel with rANS, one stream per sample behind a 6-byte header
(C, H, W); the model's parameters are shared by both ends and not counted, like a codec's tables.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from commlab._checks import check_int, check_positive, check_real_number
from commlab.semcom.entropy_coding import quantised_frequencies, rans_decode, rans_encode

_SHAPE = struct.Struct("<HHH")
LIKELIHOOD_BOUND = 1e-9
"""Lower bound on p(ŷ) in the rate (as in Ballé et al.'s entropy bottleneck)."""
TAIL_MASS = 1e-6
"""Support of the coded symbols: every mixture component's mass beyond ±R is below this."""
MAX_SUPPORT = 2**13


class LearnedFeatureCodec(nn.Module):
    """1 × 1 analysis / synthesis transforms and a factorized logistic-mixture prior over C latent channels.

    Args:
        channels: C, the feature channels (inputs ``[N, C, H, W]``).
        mean, std: μ and σ of the training features (σ > 0).
        components: K logistics per channel.
    """

    def __init__(self, channels: int, *, mean: float, std: float, components: int = 3):
        super().__init__()
        channels = check_int("channels", channels, low=1)
        components = check_int("components", components, low=1)
        self.register_buffer("mean", torch.tensor(check_real_number("mean", mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(check_positive("std", std), dtype=torch.float32))
        self.analysis = nn.Conv2d(channels, channels, 1)
        self.synthesis = nn.Conv2d(channels, channels, 1)
        for conv in (self.analysis, self.synthesis):  # start as a plain scalar quantiser of step σ
            nn.init.zeros_(conv.bias)
            with torch.no_grad():
                conv.weight.copy_(torch.eye(channels)[:, :, None, None])
        self.logits = nn.Parameter(torch.zeros(channels, components))
        self.loc = nn.Parameter(torch.linspace(-1.0, 1.0, components).repeat(channels, 1))
        self.log_scale = nn.Parameter(torch.zeros(channels, components))

    @property
    def channels(self) -> int:
        return self.analysis.in_channels

    def _check(self, features: torch.Tensor) -> torch.Tensor:
        if not isinstance(features, torch.Tensor) or features.ndim != 4 or features.shape[1] != self.channels \
                or not features.is_floating_point():
            raise ValueError(f"features must be a float [N, {self.channels}, H, W] tensor, got "
                             f"{getattr(features, 'shape', type(features).__name__)}")
        if not torch.isfinite(features).all():
            raise ValueError("features must be finite")
        return features

    def cdf(self, y: torch.Tensor) -> torch.Tensor:
        """c_c(y) of latents ``y`` ``[N, C, H, W]``: the per-channel logistic-mixture CDF."""
        w = F.softmax(self.logits, dim=1)[None, :, None, None, :]
        z = (y[..., None] - self.loc[None, :, None, None, :]) / self.log_scale.exp()[None, :, None, None, :]
        return (w * torch.sigmoid(z)).sum(-1)

    def likelihood(self, y_hat: torch.Tensor) -> torch.Tensor:
        """p(ŷ) = c(ŷ + ½) − c(ŷ − ½), bounded below by :data:`LIKELIHOOD_BOUND`."""
        return (self.cdf(y_hat + 0.5) - self.cdf(y_hat - 0.5)).clamp_min(LIKELIHOOD_BOUND)

    @property
    def support(self) -> int:
        """R: symbols are clamped to ``[−R, R]``, where every component's tail mass is below :data:`TAIL_MASS`."""
        with torch.no_grad():
            reach = self.loc.abs() + self.log_scale.exp() * math.log(1 / TAIL_MASS)
        return int(min(MAX_SUPPORT, max(1, math.ceil(float(reach.max())))))

    def forward(self, features: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F̂, bits)`` for ``features`` ``[N, C, H, W]``: with a ``generator`` the training proxy (additive
        uniform noise), without one the test path (rounding, clamped to the support), which :meth:`decompress`
        reproduces exactly. ``bits`` is the model's rate estimate Σ −log2 p(ŷ) (a scalar)."""
        y = self.analysis((self._check(features) - self.mean) / self.std)
        if generator is not None:
            y_hat = y + torch.rand(y.shape, generator=generator, dtype=y.dtype) - 0.5
        else:
            r = self.support
            y_hat = torch.round(y).clamp(-r, r)
        bits = -torch.log2(self.likelihood(y_hat)).sum()
        return self.mean + self.std * self.synthesis(y_hat), bits

    def _tables(self, shape: tuple[int, int, int]) -> tuple[int, np.ndarray, np.ndarray]:
        r = self.support
        grid = torch.arange(-r, r + 1, dtype=torch.float32)
        with torch.no_grad():
            pmf = self.likelihood(grid[None, None, None, :].expand(1, self.channels, 1, -1).contiguous())[0, :, 0]
        contexts = np.repeat(np.arange(shape[0]), shape[1] * shape[2])  # position i codes channel i // (H·W)
        return r, quantised_frequencies(pmf.double().numpy()), contexts

    @torch.no_grad()
    def compress(self, features: torch.Tensor) -> list[bytes]:
        """One bitstream per sample of ``features`` ``[N, C, H, W]`` (H, W < 65,536): header + rANS bytes."""
        features = self._check(features)
        shape = tuple(features.shape[1:])
        if max(shape) >= 2**16:
            raise ValueError(f"each side must be < 65536, got {shape}")
        r, freqs, contexts = self._tables(shape)
        y = self.analysis((features - self.mean) / self.std)
        symbols = (torch.round(y).clamp(-r, r).to(torch.int64) + r).reshape(len(features), -1).numpy()
        header = _SHAPE.pack(*shape)
        return [header + s for s in rans_encode(symbols, freqs, contexts)]

    @torch.no_grad()
    def decompress(self, streams: Sequence[bytes]) -> torch.Tensor:
        """``F̂`` ``[N, C, H, W]`` from the bitstreams of :meth:`compress` (all of one shape)."""
        if isinstance(streams, bytes | bytearray) or not len(streams) or \
                not all(isinstance(s, bytes | bytearray) for s in streams):
            raise ValueError("streams must be a non-empty sequence of bitstreams")
        shapes = {bytes(s[:_SHAPE.size]) for s in streams}
        if len(shapes) != 1 or min(len(s) for s in streams) < _SHAPE.size:
            raise ValueError("the bitstreams must share one shape header")
        shape = _SHAPE.unpack(shapes.pop())
        if shape[0] != self.channels:
            raise ValueError(f"the streams code {shape[0]} channels, the codec has {self.channels}")
        r, freqs, contexts = self._tables(shape)
        symbols = rans_decode([bytes(s[_SHAPE.size:]) for s in streams], len(contexts), freqs, contexts)
        y_hat = torch.from_numpy(symbols - r).float().reshape(len(streams), *shape)
        return self.mean + self.std * self.synthesis(y_hat)


def train_learned_codec(codec: LearnedFeatureCodec, features: torch.Tensor, *, lam: float, steps: int,
                        batch_size: int, lr: float, generator: torch.Generator) -> list[float]:
    """Adam on ``bits/numel + λ·MSE/σ²`` over minibatches of ``features`` ``[N, C, H, W]`` (training features);
    returns the loss of every step. ``generator`` draws the minibatches and the rounding noise."""
    lam = check_positive("lam", lam)
    steps, batch_size = check_int("steps", steps, low=1), check_int("batch_size", batch_size, low=1)
    features = codec._check(features.detach())
    if batch_size > len(features):
        raise ValueError(f"batch_size must be <= {len(features)}, got {batch_size}")
    optimizer = torch.optim.Adam(codec.parameters(), lr=lr)
    losses = []
    codec.train()
    for _ in range(steps):
        batch = features[torch.randperm(len(features), generator=generator)[:batch_size]]
        out, bits = codec(batch, generator=generator)
        loss = bits / batch.numel() + lam * (out - batch).square().mean() / codec.std**2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    codec.eval()
    return losses
