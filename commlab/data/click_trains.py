"""Synthetic click trains ("codas") with planted, known factors, and their band-energy spectrogram.

A stand-in for sperm-whale codas in the CDEV notebook (Beguš, Leban, Gero 2023, "Approaching an unknown
communication system by latent space exploration and causal inference"): the whale recordings are not
available, so the "communication system" is built here with ground truth. Each coda is ``duration``
seconds at ``sample_rate`` Hz and holds ``n`` clicks at onsets :math:`t_1 < \\dots < t_n`. Click k is a
decaying sinusoid burst

.. math::

    c_k(t) = a \\, e^{-(t - t_k)/\\tau} \\sin(2\\pi f_c (t - t_k)) \\quad (t \\ge t_k),

with the coda's centre frequency :math:`f_c` (the click's spectral centroid), decay :math:`\\tau` and
amplitude :math:`a = 10^{g/20}`. The inter-click intervals (ICIs) follow the rhythm class with ratio
:math:`r` (1 regular, :math:`\\rho < 1` accelerating, :math:`1/\\rho` decelerating) and multiplicative
jitter :math:`\\sigma`, and are scaled to the coda's span :math:`T`:

.. math::

    \\Delta_k \\propto r^{k} e^{\\sigma \\varepsilon_k}, \\quad \\varepsilon_k \\sim \\mathcal N(0, 1), \\quad
    \\textstyle\\sum_{k=0}^{n-2} \\Delta_k = T, \\qquad t_1 \\sim U(\\text{start}), \\; t_{k+1} = t_k + \\Delta_{k-1}.

White Gaussian background noise of standard deviation ``noise_std`` is added.

Planted factors (one value per coda, :attr:`ClickTrains.factors`): ``n_clicks``, ``rhythm`` (class index
into :data:`RHYTHMS`), ``jitter`` (:math:`\\sigma`), ``centroid_hz`` (:math:`f_c`), and ``gain_db``
(:math:`g`, a nuisance; constant unless ``gain_db`` is given a range).

:func:`band_log_energies` turns waves into the representation the notebook's generative model works on:
log10 energies of ``bands`` linear frequency bands (Hann-windowed STFT) per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from commlab._checks import check_int, check_nonnegative, check_positive, check_real_number

RHYTHMS = ("regular", "accelerating", "decelerating")
"""Rhythm classes; ``factors["rhythm"]`` indexes this tuple."""


def _check_range(name: str, bounds, *, signed: bool = False) -> tuple[float, float]:
    """``bounds`` as a ``(low, high)`` pair of finite floats with low <= high (and low >= 0 unless signed)."""
    if not isinstance(bounds, tuple | list) or len(bounds) != 2:
        raise TypeError(f"{name} must be a (low, high) pair, got {bounds!r}")
    a, b = (check_real_number(name, v) if signed else check_nonnegative(name, v) for v in bounds)
    if a > b:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {bounds!r}")
    return a, b


@dataclass
class ClickTrains:
    """A batch of codas with their ground truth.

    Attributes:
        waves: float32 ``[N, T]`` pressure samples (arbitrary units, click amplitude ``10^(gain_db/20)``).
        onsets: float64 ``[N, max_clicks]`` click onsets in seconds, NaN-padded after the last click.
        factors: the planted factors, each ``[N]``: ``n_clicks`` (int64), ``rhythm`` (int64 index into
            :data:`RHYTHMS`), ``jitter`` (float64, σ of the log ICIs), ``centroid_hz`` (float64, Hz),
            ``gain_db`` (float64, dB).
        sample_rate: Hz.
        rhythm_ratio: ρ, the ICI ratio of the accelerating class.
    """

    waves: np.ndarray
    onsets: np.ndarray
    factors: dict[str, np.ndarray]
    sample_rate: int
    rhythm_ratio: float

    def __len__(self) -> int:
        return len(self.waves)

    @property
    def rhythm_log_ratio(self) -> np.ndarray:
        """float64 ``[N]``: log r of each coda (0 regular, log ρ < 0 accelerating, −log ρ decelerating);
        the expected slope of log ICI against click index."""
        return np.array([0.0, math.log(self.rhythm_ratio), -math.log(self.rhythm_ratio)])[self.factors["rhythm"]]

    @property
    def ici_mean(self) -> np.ndarray:
        """float64 ``[N]``: the true mean inter-click interval in seconds, (t_n − t_1) / (n − 1)."""
        n = self.factors["n_clicks"]
        last = self.onsets[np.arange(len(n)), n - 1]
        return (last - self.onsets[:, 0]) / (n - 1)


def click_trains(n: int, *, rng: np.random.Generator, sample_rate: int = 8000, duration: float = 1.0,
                 n_clicks: tuple[int, int] = (3, 8), jitter: tuple[float, float] = (0.0, 0.1),
                 centroid_hz: tuple[float, float] = (800.0, 2800.0), rhythm_ratio: float = 0.85,
                 span: tuple[float, float] = (0.45, 0.75), start: tuple[float, float] = (0.05, 0.15),
                 decay_s: float = 0.0015, gain_db: tuple[float, float] = (0.0, 0.0),
                 noise_std: float = 0.02) -> ClickTrains:
    """Draw ``n`` codas with independent uniform factors (module docstring for the model).

    Args:
        n: codas, >= 1.
        rng: the generator of every draw (factors, jitter, noise), consumed in a fixed order.
        sample_rate: Hz, >= 1000.
        duration: seconds per coda; ``start[1] + span[1] + 10 decay_s`` must fit inside it.
        n_clicks: inclusive integer range of the click count, low >= 3 (so that a rhythm has two ICIs).
        jitter: range of σ, the standard deviation of the log ICIs' jitter (>= 0).
        centroid_hz: range of the click frequency f_c in Hz, inside (0, sample_rate / 2).
        rhythm_ratio: ρ in (0, 1), the ICI ratio of the accelerating class (decelerating: 1/ρ).
        span: range of T = t_n − t_1 in seconds.
        start: range of the first onset t_1 in seconds.
        decay_s: τ, the click's decay time in seconds (> 0); each click is cut at 10 τ.
        gain_db: range of the click amplitude g in dB (a nuisance factor; (0, 0) keeps it fixed).
        noise_std: background noise standard deviation (>= 0; 0 gives noiseless codas).

    Returns:
        :class:`ClickTrains` with ``waves`` float32 ``[n, round(duration · sample_rate)]``.
    """
    n = check_int("n", n, low=1)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    sample_rate = check_int("sample_rate", sample_rate, low=1000)
    duration = check_positive("duration", duration)
    lo_n, hi_n = (check_int("n_clicks", v, low=3) for v in n_clicks)
    if lo_n > hi_n:
        raise ValueError(f"n_clicks must be (low, high) with 3 <= low <= high, got {n_clicks!r}")
    jitter, span, start = (_check_range(k, v) for k, v in (("jitter", jitter), ("span", span), ("start", start)))
    gain_db = _check_range("gain_db", gain_db, signed=True)
    centroid_hz = _check_range("centroid_hz", centroid_hz)
    if centroid_hz[0] <= 0 or centroid_hz[1] >= sample_rate / 2:
        raise ValueError(f"centroid_hz must lie inside (0, {sample_rate / 2}), got {centroid_hz!r}")
    rhythm_ratio = check_positive("rhythm_ratio", rhythm_ratio)
    if rhythm_ratio >= 1:
        raise ValueError(f"rhythm_ratio must be in (0, 1), got {rhythm_ratio}")
    decay_s, noise_std = check_positive("decay_s", decay_s), check_nonnegative("noise_std", noise_std)
    if start[1] + span[1] + 10 * decay_s > duration:
        raise ValueError(f"start[1] + span[1] + 10 decay_s = {start[1] + span[1] + 10 * decay_s:.4f} s must be "
                         f"<= duration = {duration} s")

    counts = rng.integers(lo_n, hi_n + 1, size=n)
    rhythm = rng.integers(0, len(RHYTHMS), size=n)
    sigma = rng.uniform(*jitter, size=n)
    f_c = rng.uniform(*centroid_hz, size=n)
    g = rng.uniform(*gain_db, size=n)
    spans = rng.uniform(*span, size=n)
    first = rng.uniform(*start, size=n)
    eps = rng.standard_normal((n, hi_n - 1))
    log_r = np.array([0.0, math.log(rhythm_ratio), -math.log(rhythm_ratio)])[rhythm]

    k = np.arange(hi_n - 1)
    ici = np.exp(log_r[:, None] * k + sigma[:, None] * eps)  # Δ_k ∝ r^k e^{σ ε_k}
    ici[k[None, :] >= counts[:, None] - 1] = 0.0
    ici *= (spans / ici.sum(axis=1))[:, None]  # Σ Δ_k = T
    onsets = first[:, None] + np.concatenate([np.zeros((n, 1)), np.cumsum(ici, axis=1)], axis=1)
    onsets[np.arange(hi_n)[None, :] >= counts[:, None]] = np.nan

    samples = int(round(duration * sample_rate))
    length = int(math.ceil(10 * decay_s * sample_rate))
    waves = np.zeros((n, samples))
    amplitude = 10.0 ** (g / 20.0)
    for i in range(n):
        for t_k in onsets[i, :counts[i]]:
            idx = int(math.ceil(t_k * sample_rate)) + np.arange(length)
            idx = idx[idx < samples]
            dt = idx / sample_rate - t_k
            waves[i, idx] += amplitude[i] * np.exp(-dt / decay_s) * np.sin(2 * np.pi * f_c[i] * dt)  # c_k(t)
    if noise_std > 0:
        waves += noise_std * rng.standard_normal(waves.shape)
    factors = {"n_clicks": counts.astype(np.int64), "rhythm": rhythm.astype(np.int64), "jitter": sigma,
               "centroid_hz": f_c, "gain_db": g}
    return ClickTrains(waves.astype(np.float32), onsets, factors, sample_rate, rhythm_ratio)


def band_log_energies(waves: np.ndarray, *, sample_rate: int, frame: int = 128, hop: int = 64, bands: int = 16,
                      frames: int = 128, floor: float = 1e-5, chunk: int = 512) -> tuple[np.ndarray, np.ndarray, float]:
    """Log10 band energies of a Hann-windowed STFT: the 1-D representation of a coda (bands as channels).

    Frame j covers samples ``[j·hop, j·hop + frame)`` (waves are zero-padded or cut to
    ``(frames − 1)·hop + frame`` samples). The one-sided periodogram ``E_m = 2 |X_m|² / frame`` of the
    rFFT bins m = 1 .. frame/2 (DC dropped) is summed in ``bands`` groups of equal width, and
    ``log10(E + floor)`` is returned.

    Args:
        waves: real ``[N, T]``.
        sample_rate: Hz.
        frame, hop: STFT frame length and hop in samples; ``frame / 2`` must be a multiple of ``bands``.
        bands: frequency bands (channels of the output).
        frames: frames per coda (time steps of the output).
        floor: energy added before the logarithm (> 0), the level of an empty band.
        chunk: codas per STFT call (bounds the memory).

    Returns:
        ``(log_energy, band_hz, hop_s)``: float32 ``[N, bands, frames]``, the band centres in Hz
        (float64 ``[bands]``) and the hop in seconds.
    """
    waves = np.asarray(waves)
    if waves.ndim != 2 or not np.issubdtype(waves.dtype, np.floating):
        raise ValueError(f"waves must be a real float array [N, T], got dtype {waves.dtype} shape {waves.shape}")
    sample_rate = check_int("sample_rate", sample_rate, low=1)
    frame, hop = check_int("frame", frame, low=2), check_int("hop", hop, low=1)
    bands, frames = check_int("bands", bands, low=1), check_int("frames", frames, low=1)
    floor, chunk = check_positive("floor", floor), check_int("chunk", chunk, low=1)
    if frame % 2 or (frame // 2) % bands:
        raise ValueError(f"frame / 2 must be an integer multiple of bands, got frame={frame}, bands={bands}")
    need = (frames - 1) * hop + frame
    padded = np.zeros((len(waves), need))
    padded[:, :min(need, waves.shape[1])] = waves[:, :need]
    window = np.hanning(frame + 1)[:-1]  # periodic Hann
    per_band = frame // 2 // bands
    out = np.empty((len(waves), bands, frames), dtype=np.float32)
    for lo in range(0, len(waves), chunk):
        view = np.lib.stride_tricks.sliding_window_view(padded[lo:lo + chunk], frame, axis=1)[:, ::hop]
        power = 2.0 * np.abs(np.fft.rfft(view * window, axis=-1)[..., 1:]) ** 2 / frame  # E_m, [n, frames, frame/2]
        energy = power.reshape(*power.shape[:2], bands, per_band).sum(axis=-1)
        out[lo:lo + chunk] = np.log10(energy + floor).transpose(0, 2, 1)
    bin_hz = sample_rate / frame
    band_hz = (np.arange(bands) * per_band + (per_band + 1) / 2) * bin_hz
    return out, band_hz, hop / sample_rate
