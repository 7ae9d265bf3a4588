"""Fidelity and rate metrics: images per image (conventions §4: report the mean of per-image PSNRs), text
recognised from speech (edit distance, character and word error rates), and the rate of coded features in bits
per feature point (:func:`bpfp`, Gao et al. 2024)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("x and y must be torch tensors")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.is_complex() or y.is_complex():
        raise TypeError("x and y must be real images")


def mse_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each image: ``[B, ...]`` -> ``[B]``."""
    _check_pair(x, y)
    return (x.float() - y.float()).square().reshape(x.shape[0], -1).mean(dim=1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, eps: float = 1e-10) -> torch.Tensor:
    """PSNR in dB of each image, ``10·log10(data_range² / MSE)``: ``[B, ...]`` -> ``[B]``; average it yourself."""
    return 10.0 * torch.log10(data_range**2 / (mse_per_image(x, y) + eps))


def _gaussian_window(size: int, sigma: float, device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-coords.square() / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity of each image (Wang et al. 2004): ``[B, C, H, W]`` -> ``[B]``.

    Gaussian window (11×11, σ = 1.5), ``K1 = 0.01``, ``K2 = 0.03``, population covariances, valid region
    only, averaged over pixels and channels; matches ``skimage.metrics.structural_similarity`` with
    ``gaussian_weights=True, use_sample_covariance=False``.
    """
    _check_pair(x, y)
    if x.ndim != 4:
        raise ValueError(f"x and y must be [batch, channels, height, width], got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"images must be at least win_size={win_size} pixels on each side, got {tuple(x.shape[-2:])}")
    channels = x.shape[1]
    w = _gaussian_window(win_size, sigma, x.device).expand(channels, 1, win_size, win_size).contiguous()
    x, y = x.float(), y.float()

    def filt(t):
        return F.conv2d(t, w, groups=channels)

    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x.square()
    var_y = filt(y * y) - mu_y.square()
    cov = filt(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    smap = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return smap.mean(dim=(1, 2, 3))


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions, each cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def _rate(refs: Sequence, hyps: Sequence, split: Callable) -> float:
    if len(refs) != len(hyps) or not refs:
        raise ValueError("refs and hyps must be non-empty and of equal length")
    total = sum(len(split(r)) for r in refs)
    if total == 0:
        raise ValueError("the references are empty")
    return sum(edit_distance(split(r), split(h)) for r, h in zip(refs, hyps, strict=True)) / total


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Character error rate: total character edits / total reference characters (spaces count)."""
    return _rate(refs, hyps, list)


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Word error rate: total word edits / total reference words (whitespace-split)."""
    return _rate(refs, hyps, str.split)


def bpfp(streams: bytes | Sequence[bytes], elements: int) -> float:
    """Bits per feature point (Gao et al. 2024, FCM-LM): ``8 · (bytes of the bitstreams) / (feature elements)``.

    Args:
        streams: one bitstream, or a sequence of them (e.g. one per sample); every byte counts, headers included.
        elements: the number of feature elements the bitstreams code (``F.numel()``), >= 1.
    """
    if isinstance(streams, bytes | bytearray):
        streams = [streams]
    if isinstance(streams, str) or not isinstance(streams, Sequence) or \
            not all(isinstance(s, bytes | bytearray) for s in streams):
        raise TypeError("streams must be bytes or a sequence of bytes")
    if isinstance(elements, bool) or not isinstance(elements, int) or elements < 1:
        raise ValueError(f"elements must be an integer >= 1, got {elements!r}")
    return 8 * sum(len(s) for s in streams) / elements
