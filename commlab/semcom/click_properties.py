"""Acoustic properties of click trains measured on their band-energy spectrogram (the CDEV notebook's
"measurements"): click count by peak detection, inter-click interval (ICI) statistics, spectral centroid
and energy.

They act on log10 band energies ``[N, bands, frames]`` (:func:`commlab.data.click_trains.band_log_energies`),
so the same code measures real codas and a generative model's outputs. The extractors are robust by
design: an output without clicks has count 0 and NaN for every property that needs clicks, never an
exception (extreme latent values produce degenerate outputs).

Per coda, with frame energies :math:`e_j = \\log_{10} \\sum_b 10^{x_{bj}}` and the floor
:math:`m = \\mathrm{median}_j\\, e_j`:

* **clicks**: frames j that are local maxima (:math:`e_j > e_{j-1}`, :math:`e_j \\ge e_{j+1}`) with
  :math:`e_j \\ge m + \\text{threshold}`, kept greedily from the loudest so that kept peaks are at least
  ``min_separation`` frames apart; each click time is refined by a parabola through
  :math:`e_{j-1}, e_j, e_{j+1}`: :math:`\\hat t = (j + \\delta)\\,\\text{hop}`,
  :math:`\\delta = \\tfrac12 (e_{j-1} - e_{j+1}) / (e_{j-1} - 2 e_j + e_{j+1})`;
* ``ici_mean`` :math:`= (\\hat t_n - \\hat t_1)/(n - 1)` (needs n >= 2); ``ici_cv`` = std / mean of the ICIs
  (n >= 3); ``ici_trend`` = least-squares slope of :math:`\\log \\Delta_k` against k (n >= 3; < 0 accelerating);
  ``ici_irregularity`` = standard deviation of the residuals of that line (n >= 4; the timing jitter, which
  the CV mixes with the rhythm);
* ``centroid_hz`` :math:`= \\sum_b f_b P_b / \\sum_b P_b`, :math:`P_b = \\sum_{j \\in \\text{clicks}} 10^{x_{bj}}`
  (n >= 1);
* ``energy_db`` :math:`= 10 \\log_{10} \\tfrac1F \\sum_j 10^{e_j}`, the mean frame energy (always defined).
"""

from __future__ import annotations

import numpy as np

from commlab._checks import check_int, check_positive

PROPERTIES = ("click_count", "ici_mean", "ici_cv", "ici_trend", "ici_irregularity", "centroid_hz", "energy_db")
"""The measured properties, in the order :func:`click_properties` returns them."""


def detect_clicks(frame_energy: np.ndarray, *, threshold: float = 1.0, min_separation: int = 3) -> np.ndarray:
    """Click positions of one coda, in fractional frames (sorted float64 ``[n]``, possibly empty).

    Args:
        frame_energy: float ``[F]`` log10 frame energies :math:`e_j` (module docstring).
        threshold: log10 units above the median frame energy a peak must reach (1.0 = 10 dB).
        min_separation: minimum distance in frames between two kept peaks (>= 1).
    """
    e = np.asarray(frame_energy, dtype=np.float64)
    if e.ndim != 1:
        raise ValueError(f"frame_energy must be 1-D [F], got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("frame_energy must be finite")
    if len(e) < 3:
        return np.empty(0)
    inner = e[1:-1]
    peak = (inner > e[:-2]) & (inner >= e[2:]) & (inner >= np.median(e) + threshold)
    candidates = np.flatnonzero(peak) + 1
    kept: list[int] = []
    for j in candidates[np.argsort(-e[candidates], kind="stable")]:  # loudest first
        if all(abs(j - k) >= min_separation for k in kept):
            kept.append(int(j))
    kept_arr = np.array(sorted(kept), dtype=np.int64)
    left, mid, right = e[kept_arr - 1], e[kept_arr], e[kept_arr + 1]
    curvature = left - 2 * mid + right
    delta = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1.0), 0.0)
    return kept_arr + delta


def click_properties(log_energy: np.ndarray, *, band_hz: np.ndarray, hop_s: float, threshold: float = 1.0,
                     min_separation: int = 3) -> dict[str, np.ndarray]:
    """The :data:`PROPERTIES` of each coda (module docstring for the definitions).

    Args:
        log_energy: float ``[N, bands, frames]`` log10 band energies (data or a model's outputs).
        band_hz: float ``[bands]`` band centre frequencies in Hz.
        hop_s: frame hop in seconds.
        threshold, min_separation: peak detection (:func:`detect_clicks`).

    Returns:
        ``{name: float64 [N]}``; ``click_count`` is a whole number, the ICI properties are NaN for codas with
        too few clicks and ``centroid_hz`` for codas with none.
    """
    x = np.asarray(log_energy, dtype=np.float64)
    band_hz = np.asarray(band_hz, dtype=np.float64)
    if x.ndim != 3 or band_hz.shape != (x.shape[1],):
        raise ValueError(f"log_energy must be [N, bands, frames] and band_hz [bands], got {x.shape}, {band_hz.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("log_energy must be finite")
    hop_s = check_positive("hop_s", hop_s)
    min_separation = check_int("min_separation", min_separation, low=1)
    x = np.clip(x, -30.0, 30.0)  # extreme latent values: keep 10**x finite
    peak = x.max(axis=1, keepdims=True)
    frame_energy = peak[:, 0] + np.log10(np.power(10.0, x - peak).sum(axis=1))  # e_j, [N, F]
    n = len(x)
    out = {name: np.full(n, np.nan) for name in PROPERTIES}
    out["energy_db"] = 10 * np.log10(np.power(10.0, frame_energy).mean(axis=1))
    for i in range(n):
        t = detect_clicks(frame_energy[i], threshold=threshold, min_separation=min_separation) * hop_s
        out["click_count"][i] = len(t)
        if len(t) >= 1:
            power = np.power(10.0, x[i][:, np.round(t / hop_s).astype(np.int64)]).sum(axis=1)  # P_b
            out["centroid_hz"][i] = float(band_hz @ power / power.sum())
        if len(t) >= 2:
            out["ici_mean"][i] = (t[-1] - t[0]) / (len(t) - 1)
        if len(t) >= 3:
            ici = np.diff(t)
            out["ici_cv"][i] = ici.std() / ici.mean()
            k, log_ici = np.arange(len(ici)), np.log(np.maximum(ici, 1e-9))
            slope, intercept = np.polyfit(k, log_ici, 1)
            out["ici_trend"][i] = slope
            if len(t) >= 4:
                out["ici_irregularity"][i] = (log_ici - slope * k - intercept).std()
    return out
