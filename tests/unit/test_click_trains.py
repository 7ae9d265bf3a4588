"""The synthetic coda generator commlab.data.click_trains: seeded, shaped as documented, and each planted
factor changes the property it should (and not the others)."""

from __future__ import annotations

import numpy as np
import pytest

from commlab.data.click_trains import band_log_energies, click_trains

WORLD = {"start": (0.1, 0.1), "span": (0.6, 0.6)}


def test_same_generator_seed_gives_identical_codas_and_a_different_one_does_not():
    a = click_trains(20, rng=np.random.default_rng(3), **WORLD)
    b = click_trains(20, rng=np.random.default_rng(3), **WORLD)
    c = click_trains(20, rng=np.random.default_rng(4), **WORLD)
    assert np.array_equal(a.waves, b.waves) and np.array_equal(a.onsets, b.onsets, equal_nan=True)
    assert all(np.array_equal(a.factors[k], b.factors[k]) for k in a.factors)
    assert not np.array_equal(a.waves, c.waves)


def test_shapes_dtypes_and_ground_truth_onsets():
    d = click_trains(50, rng=np.random.default_rng(0), n_clicks=(3, 6), **WORLD)
    assert d.waves.shape == (50, 8000) and d.waves.dtype == np.float32 and len(d) == 50
    assert d.onsets.shape == (50, 6)
    n = d.factors["n_clicks"]
    assert n.dtype == np.int64 and n.min() >= 3 and n.max() <= 6
    for i in range(50):
        t = d.onsets[i]
        assert np.all(np.isfinite(t[:n[i]])) and np.all(np.isnan(t[n[i]:]))
        assert np.all(np.diff(t[:n[i]]) > 0)
        assert t[0] == pytest.approx(0.1) and t[n[i] - 1] - t[0] == pytest.approx(0.6)  # start and span
    assert d.ici_mean == pytest.approx(0.6 / (n - 1))


def _ici_log_slope(d) -> np.ndarray:
    slopes = []
    for i in range(len(d)):
        ici = np.diff(d.onsets[i, :d.factors["n_clicks"][i]])
        slopes.append(np.polyfit(np.arange(len(ici)), np.log(ici), 1)[0])
    return np.array(slopes)


def test_rhythm_class_sets_the_ici_trend_and_jitter_only_its_scatter():
    d = click_trains(300, rng=np.random.default_rng(1), jitter=(0.0, 0.0), **WORLD)
    slope = _ici_log_slope(d)
    np.testing.assert_allclose(slope, d.rhythm_log_ratio, atol=1e-9)  # Δ_k ∝ r^k exactly without jitter
    assert set(np.round(d.rhythm_log_ratio, 6)) == {0.0, round(np.log(0.85), 6), round(-np.log(0.85), 6)}
    j = click_trains(300, rng=np.random.default_rng(1), jitter=(0.2, 0.2), **WORLD)
    resid = np.abs(_ici_log_slope(j) - j.rhythm_log_ratio)
    assert resid.mean() > 0.01  # jitter moves the ICIs off the rhythm's line


def _peak_frequency(wave: np.ndarray, onset: float, sample_rate: int) -> float:
    """Frequency of the spectral peak of the first click alone (15 ms from its onset, zero-padded to 1 Hz bins)."""
    first = wave[int(onset * sample_rate):int(onset * sample_rate) + 120]
    spectrum = np.abs(np.fft.rfft(first, n=sample_rate)) ** 2
    return float(np.fft.rfftfreq(sample_rate, 1 / sample_rate)[np.argmax(spectrum)])


def test_centroid_factor_sets_the_click_frequency_and_gain_the_amplitude():
    d = click_trains(20, rng=np.random.default_rng(2), noise_std=0.0, gain_db=(-6.0, 6.0), **WORLD)
    for i in range(20):
        assert abs(_peak_frequency(d.waves[i], d.onsets[i, 0], 8000) - d.factors["centroid_hz"][i]) < 30
    energy = (d.waves.astype(np.float64) ** 2).sum(1) / d.factors["n_clicks"]
    # per-click energy scales as 10^(g/10); the click frequency changes it only slightly
    slope = np.polyfit(d.factors["gain_db"], 10 * np.log10(energy), 1)[0]
    assert slope == pytest.approx(1.0, abs=0.05)


def test_click_count_sets_the_number_of_energy_bursts_in_the_representation():
    d = click_trains(40, rng=np.random.default_rng(5), noise_std=0.0, **WORLD)
    x, band_hz, hop_s = band_log_energies(d.waves, sample_rate=8000)
    assert x.shape == (40, 16, 128) and x.dtype == np.float32 and hop_s == pytest.approx(0.008)
    assert band_hz[0] == pytest.approx(156.25) and np.allclose(np.diff(band_hz), 250.0)
    frame_energy = np.log10((10.0 ** x.astype(np.float64)).sum(1))
    loud = frame_energy > frame_energy.min() + 2
    bursts = (np.diff(loud.astype(int), axis=1) == 1).sum(1) + loud[:, 0]
    assert np.array_equal(bursts, d.factors["n_clicks"])


def test_band_energies_follow_parseval_for_a_sinusoid():
    t = np.arange(8256) / 8000
    tone = np.sin(2 * np.pi * 1000.0 * t)[None, :]
    x, band_hz, _ = band_log_energies(tone, sample_rate=8000, floor=1e-12)
    energy = 10.0 ** x[0].astype(np.float64)  # [bands, frames]
    assert np.argmax(energy[:, 10]) == np.argmin(np.abs(band_hz - 1000.0))
    # one-sided periodogram: sum over bins = windowed energy sum (x w)^2 = 128 * mean(w^2) / 2 = 24
    assert energy[:, 10].sum() == pytest.approx(128 * 0.375 * 0.5, rel=1e-3)


def test_bad_arguments_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n_clicks"):
        click_trains(5, rng=rng, n_clicks=(2, 5))
    with pytest.raises(ValueError, match="duration"):
        click_trains(5, rng=rng, span=(0.6, 0.95))
    with pytest.raises(ValueError, match="centroid_hz"):
        click_trains(5, rng=rng, centroid_hz=(500.0, 4500.0))
    with pytest.raises(ValueError, match="rhythm_ratio"):
        click_trains(5, rng=rng, rhythm_ratio=1.2)
    with pytest.raises(TypeError, match="rng"):
        click_trains(5, rng=0)
    with pytest.raises(ValueError, match="bands"):
        band_log_energies(np.zeros((2, 100)), sample_rate=8000, bands=5)
    with pytest.raises(ValueError, match="waves"):
        band_log_energies(np.zeros(100), sample_rate=8000)
