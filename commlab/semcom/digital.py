"""A digital separation baseline with a cliff: PCA source code + uniform scalar quantisers sized to the capacity
of an ideal channel code designed at one SNR (the foundations brief's construction).

Bit budget ``B = floor(k·log2(1 + SNR_design))`` for ``k`` complex channel uses per image. Bits go greedily to
the PCA component whose expected distortion falls most (``λ_i·D(b_i) − λ_i·D(b_i + 1)``, with ``D(b)`` the MSE
of the best ``2^b``-level uniform quantiser of a unit Gaussian). The channel code is assumed ideal
(capacity-achieving, error-free at and above the design SNR), so this is an **upper bound** on real separation
schemes; below the design SNR the code fails and the receiver outputs the mean image (outage).
"""

from __future__ import annotations

import copy
import functools
import heapq

import numpy as np
import torch

from commlab.channels import bounds

MAX_BITS = 12
"""At most this many bits per PCA coefficient."""


@functools.cache
def gaussian_uniform_quantizer(bits: int) -> tuple[float, float]:
    """``(step, mse)`` of the MSE-optimal midrise uniform quantiser with ``2^bits`` levels for ``N(0, 1)``.

    Found by a bounded scalar search over the step, with the expected error integrated numerically; ``bits = 0`` gives
    ``(inf, 1.0)`` (reconstruct the mean).
    """
    if bits == 0:
        return float("inf"), 1.0
    from scipy.optimize import minimize_scalar

    x = np.linspace(-9.0, 9.0, 72_001)
    pdf = np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi) * (x[1] - x[0])
    levels = 2**bits

    def mse(step: float) -> float:
        idx = np.clip(np.floor(x / step), -levels // 2, levels // 2 - 1)
        return float(np.sum(pdf * (x - (idx + 0.5) * step) ** 2))

    best = minimize_scalar(mse, bounds=(0.1 / levels, 16.0 / levels), method="bounded",
                           options={"xatol": 1e-6 / levels}).x
    return float(best), mse(best)


def allocate_bits(variances: np.ndarray, total_bits: int, max_bits: int = MAX_BITS) -> np.ndarray:
    """Greedy integer bit allocation over components with ``variances`` (see module docstring)."""
    bits = np.zeros(len(variances), dtype=int)
    gain = [(-(v * (gaussian_uniform_quantizer(0)[1] - gaussian_uniform_quantizer(1)[1])), i)
            for i, v in enumerate(variances) if v > 0]
    heapq.heapify(gain)
    for _ in range(int(total_bits)):
        if not gain:
            break
        _, i = heapq.heappop(gain)
        bits[i] += 1
        if bits[i] < max_bits:
            b = bits[i]
            delta = variances[i] * (gaussian_uniform_quantizer(b)[1] - gaussian_uniform_quantizer(b + 1)[1])
            heapq.heappush(gain, (-delta, i))
    return bits


class SeparationBaseline:
    """PCA + quantisation + ideal channel code designed at ``snr_design_db`` for ``n_symbols`` channel uses.

    Args:
        train_images: ``[N, ...]`` images in [0, 1] (PCA and quantiser ranges are fitted on them).
        n_symbols: complex channel uses per image (the same ``k`` as the JSCC model it is compared with).
        snr_design_db: SNR at which the ideal channel code operates.
    """

    def __init__(self, train_images: torch.Tensor, n_symbols: int, snr_design_db: float):
        x = train_images.reshape(train_images.shape[0], -1).double()
        self.shape = tuple(train_images.shape[1:])
        self.mean = x.mean(dim=0)
        eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov((x - self.mean).T, correction=0))
        order = torch.argsort(eigenvalues, descending=True)
        self.variances = eigenvalues[order].clamp_min(0.0).numpy()
        self.basis = eigenvectors[:, order]
        self._design(n_symbols, snr_design_db)

    def _design(self, n_symbols: int, snr_design_db: float) -> None:
        self.n_symbols = int(n_symbols)
        self.snr_design_db = float(snr_design_db)
        self.total_bits = int(bounds.separation_bits(n_symbols, snr_design_db))
        self.bits = allocate_bits(self.variances, self.total_bits)
        used = self.bits > 0
        self._used = torch.from_numpy(np.flatnonzero(used))
        self._levels = torch.from_numpy(2.0 ** self.bits[used])
        std = np.sqrt(self.variances[used])
        self._steps = torch.from_numpy(np.array([gaussian_uniform_quantizer(int(b))[0] for b in self.bits[used]]) * std)

    def redesign(self, n_symbols: int, snr_design_db: float) -> SeparationBaseline:
        """The same PCA with another channel budget or design SNR (no refit)."""
        other = copy.copy(self)
        other._design(n_symbols, snr_design_db)
        return other

    def __call__(self, images: torch.Tensor, snr_test_db) -> torch.Tensor:
        """Reconstructions ``[N, ...]`` at test SNR ``snr_test_db``: a number, or a ``[N]`` tensor of per-image
        effective SNRs (e.g. ``|h|²·SNR`` on slow fading). Images whose SNR is below the design SNR are in
        outage and come back as the mean image."""
        n = images.shape[0]
        snr = torch.as_tensor(snr_test_db, dtype=torch.float64).expand(n)
        if not bool(torch.isfinite(snr).all()):
            raise ValueError(f"snr_test_db must be finite, got {snr_test_db!r}")
        mean_image = self.mean.float().reshape(self.shape).expand(n, *self.shape)
        outage = snr < self.snr_design_db
        if bool(outage.all()):
            return mean_image.clone()
        coeff = (images.reshape(n, -1).double() - self.mean) @ self.basis[:, self._used]
        idx = torch.clamp(torch.floor(coeff / self._steps), -self._levels / 2, self._levels / 2 - 1)
        rec = self.mean + ((idx + 0.5) * self._steps) @ self.basis[:, self._used].T
        rec = rec.clamp(0.0, 1.0).float().reshape(n, *self.shape)
        return torch.where(outage.reshape((n,) + (1,) * len(self.shape)), mean_image, rec)
