"""A digital separation baseline with a cliff: PCA source code + uniform scalar quantisers sized to the capacity
of an ideal channel code designed at one SNR (the foundations brief's construction).

Bit budget ``B = floor(k·log2(1 + SNR_design))`` for ``k`` complex channel uses per image. Bits go greedily to
the PCA component whose expected distortion falls most (``λ_i·D(b_i) − λ_i·D(b_i + 1)``, with ``D(b)`` the MSE
of the best ``2^b``-level uniform quantiser of a unit Gaussian). The channel code is assumed ideal
(capacity-achieving, error-free at and above the design SNR), so this is an **upper bound** on real separation
schemes; below the design SNR the code fails and the receiver outputs the mean image (outage).

Baselines that are not trivially beaten:

* :meth:`SeparationBaseline.at_capacity`: the best rate that decodes at a known test SNR (AWGN): the code
  designed at the test SNR itself, never in outage (the operational rate of an ideal code);
* :meth:`SeparationBaseline.best_fixed_rate`: on slow fading without CSI at the transmitter, one design SNR for
  all images, chosen from a grid to maximise the mean PSNR (images whose ``|h|²·SNR`` falls below it are in
  outage); choosing it on the evaluated images favours the baseline;
* :func:`jpeg_separation`: JPEG (Pillow, standard tables) at the highest quality whose entropy-coded scan fits
  the capacity budget, mean image when none fits.
"""

from __future__ import annotations

import copy
import functools
import heapq

import numpy as np
import torch

from commlab.channels import bounds
from commlab.semcom.metrics import psnr

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

    def at_capacity(self, images: torch.Tensor, snr_db: float) -> torch.Tensor:
        """Reconstructions by the best rate that decodes at a known test SNR ``snr_db`` (a number): the ideal code
        designed at ``snr_db`` itself, ``floor(k·log2(1 + SNR))`` bits, never in outage."""
        snr_db = float(snr_db)
        return self.redesign(self.n_symbols, snr_db)(images, snr_db)

    def best_fixed_rate(self, images: torch.Tensor, snr_test_db, designs_db,
                        exact_top: int = 3) -> tuple[float, torch.Tensor]:
        """The best single design SNR from ``designs_db`` for per-image test SNRs ``snr_test_db`` (e.g. ``|h|²·SNR``
        on slow fading, no CSI at the transmitter): the one with the highest mean per-image PSNR on ``images``.

        Every design is first scored in the PCA coefficient domain (the images are projected once; the MSE of the
        unclamped reconstruction is the quantisation error of the used coefficients plus the energy of the
        others), then the ``exact_top`` best are reconstructed (clamped to [0, 1]) and the best of those is kept.

        Returns:
            ``(design_db, reconstructions)``; ties go to the first design in ``designs_db``.
        """
        designs = [float(d) for d in designs_db]
        if not designs:
            raise ValueError("designs_db must hold at least one design SNR")
        if isinstance(exact_top, bool) or not isinstance(exact_top, int) or exact_top < 1:
            raise ValueError(f"exact_top must be an integer >= 1, got {exact_top!r}")
        n = images.shape[0]
        snr = torch.as_tensor(snr_test_db, dtype=torch.float64).expand(n)
        flat = images.reshape(n, -1).double()
        coeff = (flat - self.mean) @ self.basis  # [N, n] every component, once
        energy = coeff.square().sum(dim=1)
        mean_mse = (flat - self.mean).square().mean(dim=1)
        scores = []
        for design in designs:
            other = self.redesign(self.n_symbols, design)
            used = coeff[:, other._used]
            idx = torch.clamp(torch.floor(used / other._steps), -other._levels / 2, other._levels / 2 - 1)
            error = (used - (idx + 0.5) * other._steps).square().sum(dim=1)
            mse = (energy - used.square().sum(dim=1) + error) / flat.shape[1]
            mse = torch.where(snr < other.snr_design_db, mean_mse, mse)
            scores.append((10 * torch.log10(1.0 / (mse + 1e-10))).mean().item())
        order = sorted(range(len(designs)), key=lambda i: (-scores[i], i))[:exact_top]
        best = None
        for i in sorted(order):
            rec = self.redesign(self.n_symbols, designs[i])(images, snr_test_db)
            score = psnr(images, rec).mean().item()
            if best is None or score > best[0]:
                best = (score, designs[i], rec)
        return best[1], best[2]


def jpeg_scan_start(data: bytes) -> int:
    """Offset of the entropy-coded data in a baseline JPEG file: just past its start-of-scan segment
    (the marker FF DA, then the segment's 2-byte big-endian length, which counts itself)."""
    start = data.rfind(b"\xff\xda")
    if start < 0:
        raise ValueError("no JPEG start-of-scan marker in the stream")
    return start + 2 + int.from_bytes(data[start + 2:start + 4], "big")


def jpeg_scan_bits(image: torch.Tensor, quality: int) -> tuple[int, torch.Tensor]:
    """``(bits, decoded)``: JPEG (Pillow, baseline, standard Huffman tables, 4:2:0 for colour) of one ``[C, H, W]``
    image in [0, 1] (C = 1 or 3) at ``quality`` (1..95). ``bits`` counts the entropy-coded scan (from the start
    of scan to the end-of-image marker) plus 7 bits to signal the quality: the headers and tables are the
    standard ones, known to the receiver."""
    import io

    from PIL import Image

    if not 1 <= int(quality) <= 95:
        raise ValueError(f"quality must be in 1..95, got {quality}")
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must be [C, H, W] with C = 1 or 3, got shape {tuple(image.shape)}")
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[..., 0] if image.shape[0] == 1 else array, mode="L" if image.shape[0] == 1 else "RGB")
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=int(quality), optimize=False)
    data = buffer.getvalue()
    bits = 8 * (len(data) - jpeg_scan_start(data)) + 7
    decoded = torch.from_numpy(np.array(Image.open(io.BytesIO(data)))).float() / 255.0
    decoded = decoded.unsqueeze(0) if image.shape[0] == 1 else decoded.permute(2, 0, 1)
    return bits, decoded


def jpeg_separation(images: torch.Tensor, n_symbols: int, snr_db: float, mean_image: torch.Tensor) -> torch.Tensor:
    """JPEG + an ideal channel code at the operational rate of ``snr_db``: each ``[C, H, W]`` image is coded at the
    highest quality (1..95, found by bisection: the scan size grows with the quality) whose :func:`jpeg_scan_bits`
    fit ``floor(n_symbols·log2(1 + SNR))``; an image that does not fit even at quality 1 is replaced by
    ``mean_image`` (outage of the source code).

    Returns:
        ``[N, C, H, W]`` reconstructions.
    """
    budget = int(bounds.separation_bits(n_symbols, snr_db))
    out = []
    for image in images:
        low, high, rec = 1, 95, mean_image.reshape(image.shape)
        while low <= high:
            quality = (low + high) // 2
            bits, decoded = jpeg_scan_bits(image, quality)
            if bits <= budget:
                rec, low = decoded, quality + 1
            else:
                high = quality - 1
        out.append(rec)
    return torch.stack(out)
