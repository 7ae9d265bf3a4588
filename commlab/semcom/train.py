"""Training and evaluation loops for :class:`~commlab.semcom.DeepJSCC` (MSE loss, Adam)."""

from __future__ import annotations

import torch
from torch import nn

from commlab.channels import AWGN
from commlab.data.batches import EpochBatches

from .metrics import psnr


def _snr_batch(snr_db, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Training SNRs for one batch: a fixed value, or uniform in ``(lo, hi)`` dB per image."""
    if isinstance(snr_db, tuple | list):
        lo, hi = (float(v) for v in snr_db)
        if not lo <= hi:
            raise ValueError(f"snr_db range must be (low, high) with low <= high, got {snr_db}")
        return lo + (hi - lo) * torch.rand(batch, generator=generator)
    return torch.full((batch,), float(snr_db))


def train_jscc(model: nn.Module, images: torch.Tensor, *, snr_db, epochs: float = 2.0, batch_size: int = 128,
               lr: float = 2e-3, generator: torch.Generator, channel: nn.Module | None = None,
               progress: bool = False) -> list[float]:
    """Train ``model`` end to end through ``channel`` (default AWGN) with MSE; returns the loss per step.

    Args:
        images: ``[N, C, H, W]`` in [0, 1].
        snr_db: training SNR in dB, or a ``(low, high)`` range sampled uniformly per image (ADJSCC).
        epochs: passes over ``images`` (may be fractional); batches are drawn by a seeded permutation.
        generator: the only source of randomness (batch order, SNRs, channel noise).
        channel: a commlab channel called as ``channel(z, generator=g, snr_db=...)``.
    """
    channel = channel if channel is not None else AWGN(0.0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = images.shape[0]
    steps = max(1, int(round(epochs * n / batch_size)))
    batches = EpochBatches(n, batch_size, generator)
    losses: list[float] = []
    model.train()
    iterator = range(steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, leave=False)
    for _ in iterator:
        x = images[next(batches)]
        snr = _snr_batch(snr_db, x.shape[0], generator)
        x_hat = model(x, channel, generator=generator, snr_db=snr)
        loss = (x_hat - x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def jscc_psnr(model: nn.Module, images: torch.Tensor, *, snr_db: float, generator: torch.Generator,
              channel: nn.Module | None = None, batch_size: int = 500) -> torch.Tensor:
    """Per-image PSNR ``[N]`` of ``model`` over ``channel`` (default AWGN) at test SNR ``snr_db``."""
    channel = channel if channel is not None else AWGN(0.0)
    model.eval()
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size]
        snr = torch.full((x.shape[0],), float(snr_db))
        out.append(psnr(x, model(x, channel, generator=generator, snr_db=snr)))
    return torch.cat(out)
