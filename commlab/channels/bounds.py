"""Information-theoretic reference curves (numpy; arguments may be floats or arrays).

Rates are in bits per complex channel use unless ``real=True``. SNR is Es/N0 per complex symbol
(conventions §4). Bandwidth ratio ``rho`` = complex channel uses per real source sample.
"""

from __future__ import annotations

import numpy as np

from .power import db_to_linear


def _snr(snr_db) -> np.ndarray:
    snr_db = np.asarray(snr_db, dtype=float)
    if not np.all(np.isfinite(snr_db)):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    return db_to_linear(snr_db) if snr_db.ndim else np.float64(db_to_linear(float(snr_db)))


def _rho(rho) -> np.ndarray:
    rho = np.asarray(rho, dtype=float)
    if not np.all(np.isfinite(rho) & (rho > 0)):
        raise ValueError(f"rho (complex channel uses per source sample) must be finite and > 0, got {rho}")
    return rho


def _probability(p) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    return p


def awgn_capacity(snr_db, real: bool = False):
    """``log2(1 + SNR)`` bits per complex use (``0.5·log2(1 + SNR)`` per real use with ``real=True``).

    With an SINR in place of the SNR it is the rate of a user treating interference as noise."""
    c = np.log2(1.0 + _snr(snr_db))
    return 0.5 * c if real else c


def bsc_capacity(p):
    """``1 - h2(p)`` bits per use of a binary symmetric channel."""
    p = _probability(p)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return 1.0 - np.nan_to_num(h)


def bec_capacity(p):
    """``1 - p`` bits per use of a binary erasure channel."""
    return 1.0 - _probability(p)


def gaussian_opta_sdr_db(snr_db, rho):
    """Optimal (OPTA) signal-to-distortion ratio in dB for an i.i.d. Gaussian source, ``rho`` channel uses per sample.

    ``R(D) = 0.5·log2(σ²/D) = rho·log2(1 + SNR)`` gives ``SDR = (1 + SNR)^(2·rho)``. A converse for a
    Gaussian source (with MSE distortion); for real images it is only a Gaussian-equivalent reference.
    """
    return 20.0 * _rho(rho) * np.log10(1.0 + _snr(snr_db))


def uncoded_gaussian_sdr_db(snr_db):
    """SDR (dB) of a Gaussian source sent uncoded, one *real* channel use per sample, LMMSE-decoded.

    Equal to ``10·log10(1 + SNR)``.

    With one real use per sample (``rho = 1/2``) this meets :func:`gaussian_opta_sdr_db` (Goblick 1965).
    """
    return 10.0 * np.log10(1.0 + _snr(snr_db))


def reverse_waterfilling(variances, rate_bits: float) -> np.ndarray:
    """Per-component distortions of the Gaussian rate-distortion solution at a total rate of ``rate_bits``.

    For independent Gaussian components with ``variances`` λ_i (e.g. PCA eigenvalues), ``D_i = min(θ, λ_i)``
    with the water level θ chosen so that ``Σ_i max(0, 0.5·log2(λ_i/θ)) = rate_bits``.
    """
    lam = np.asarray(variances, dtype=float)
    if lam.ndim != 1 or np.any(lam < 0) or not np.all(np.isfinite(lam)):
        raise ValueError("variances must be a 1-D array of finite non-negative numbers")
    if not np.isfinite(rate_bits) or rate_bits < 0:
        raise ValueError(f"rate_bits must be finite and >= 0, got {rate_bits}")
    positive = lam[lam > 0]
    if rate_bits == 0 or positive.size == 0:
        return lam.copy()
    log2_lam = np.log2(positive)

    def rate(log2_theta):
        return 0.5 * np.sum(np.maximum(log2_lam - log2_theta, 0.0))

    # bisection on log2(theta); the smallest component alone would need theta = max·2^(-2R)
    lo, hi = log2_lam.max() - 2.0 * rate_bits - 2.0, log2_lam.max()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rate(mid) > rate_bits else (lo, mid)
    return np.minimum(lam, np.exp2(0.5 * (lo + hi)))


def gaussian_equivalent_opta_mse(variances, n_symbols: int, snr_db) -> np.ndarray:
    """Mean squared error per sample of the Gaussian-equivalent OPTA: reverse water-filling on ``variances``
    (the source covariance eigenvalues) at the rate ``n_symbols·log2(1 + SNR)`` bits per source vector.

    For non-Gaussian sources (images) this is achievable-in-principle, **not** a converse.
    """
    lam = np.asarray(variances, dtype=float)
    caps = np.atleast_1d(n_symbols * awgn_capacity(snr_db))
    out = np.array([reverse_waterfilling(lam, float(c)).mean() for c in caps])
    return out.reshape(np.shape(snr_db))


def _scaled_exp1(x: np.ndarray) -> np.ndarray:
    """``e^x·E1(x)`` for ``x > 0`` without overflow: scipy's ``exp1`` up to x = 50, above it the asymptotic
    series ``(1/x)·Σ_{k<25} (−1)^k k!/x^k`` (its first omitted term, 25!/50^25 ≈ 5e-18, is below
    double precision)."""
    from scipy.special import exp1

    x = np.asarray(x, dtype=float)
    small = np.minimum(x, _ASYMPTOTIC_FROM)
    direct = np.exp(small) * exp1(small)
    large = np.maximum(x, _ASYMPTOTIC_FROM)
    term, series = np.ones_like(large), np.zeros_like(large)
    for k in range(25):
        series = series + term
        term = -term * (k + 1) / large
    return np.where(x < _ASYMPTOTIC_FROM, direct, series / large)


_ASYMPTOTIC_FROM = 50.0


def rayleigh_ergodic_capacity(snr_db):
    """``E[log2(1 + |h|²·SNR)]`` for ``h ~ CN(0, 1)``: ``log2(e)·e^{1/SNR}·E1(1/SNR)``, finite and accurate
    at any SNR (at low SNR it tends to ``log2(e)·SNR``)."""
    return np.log2(np.e) * _scaled_exp1(1.0 / _snr(snr_db))


def rayleigh_outage_probability(rate, snr_db):
    """``P(log2(1 + |h|²·SNR) < R) = 1 - exp(-(2^R - 1)/SNR)`` for Rayleigh block fading, accurate also
    where it is tiny (``-expm1`` of ``expm1(R·ln 2)/SNR``)."""
    rate = np.asarray(rate, dtype=float)
    if np.any(rate < 0):
        raise ValueError("rate must be >= 0 bits per channel use")
    return -np.expm1(-np.expm1(rate * np.log(2.0)) / _snr(snr_db))


def rayleigh_outage_capacity(epsilon, snr_db):
    """Largest rate with outage probability ``epsilon``: ``log2(1 - SNR·ln(1 - ε))``, accurate for tiny ε."""
    eps = np.asarray(epsilon, dtype=float)
    if np.any((eps <= 0) | (eps >= 1)):
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
    return np.log1p(-_snr(snr_db) * np.log1p(-eps)) / np.log(2.0)


def separation_bits(n_symbols: int, snr_design_db) -> np.ndarray:
    """Bit budget of an ideal capacity-achieving channel code: ``floor(n_symbols·log2(1 + SNR_design))``."""
    return np.floor(n_symbols * awgn_capacity(snr_design_db))


def gaussian_separation_sdr_db(snr_test_db, snr_design_db, rho):
    """Separation curve for a Gaussian source: source code at the capacity of ``snr_design_db`` plus an ideal
    channel code. It reaches the OPTA at the design SNR and stays there above it; below the design SNR the
    code fails (outage) and the receiver outputs the mean, i.e. SDR = 0 dB (the cliff)."""
    snr_test_db = np.asarray(snr_test_db, dtype=float)
    _snr(snr_test_db)
    level = gaussian_opta_sdr_db(snr_design_db, rho)
    return np.where(snr_test_db >= snr_design_db, level, 0.0)
