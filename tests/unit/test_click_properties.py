"""Property extractors of commlab.semcom.click_properties on hand-built frame energies and codas."""

from __future__ import annotations

import numpy as np
import pytest

from commlab.semcom.click_properties import PROPERTIES, click_properties, detect_clicks

HOP = 0.008
BANDS = np.arange(4) * 1000.0 + 500.0  # 500, 1500, 2500, 3500 Hz


def _coda(frames: list[int], band: int | list[float] = 1, length: int = 128, floor: float = -5.0) -> np.ndarray:
    """log10 energies [1, 4, length]: a floor, and at each click frame energy 1 (log 0) in the given band(s)."""
    x = np.full((1, 4, length), floor)
    weights = np.eye(4)[band] if isinstance(band, int) else np.asarray(band, dtype=float)
    for j in frames:
        x[0, :, j] = np.log10(weights + 10.0**floor)
    return x


def test_peaks_counted_and_timed_on_hand_built_clicks():
    props = click_properties(_coda([10, 30, 50, 70]), band_hz=BANDS, hop_s=HOP)
    assert props["click_count"][0] == 4
    assert props["ici_mean"][0] == pytest.approx(20 * HOP)
    assert props["ici_cv"][0] == pytest.approx(0.0, abs=1e-12)
    assert props["ici_trend"][0] == pytest.approx(0.0, abs=1e-9)
    assert props["ici_irregularity"][0] == pytest.approx(0.0, abs=1e-9)
    assert props["centroid_hz"][0] == pytest.approx(1500.0, rel=1e-4)


def test_parabolic_refinement_finds_the_vertex_between_frames():
    e = np.full(20, -5.0)
    e[9:12] = [-1.0, 0.0, -0.5]  # a parabola through these has its vertex at 10 + 0.5 * 0.5 / 1.5
    assert detect_clicks(e) == pytest.approx([10 + 0.5 * (-1.0 + 0.5) / (-1.0 - 0.0 - 0.5)])


def test_trend_sign_follows_accelerating_and_decelerating_rhythms():
    accelerating = click_properties(_coda([10, 40, 62, 78, 90]), band_hz=BANDS, hop_s=HOP)
    decelerating = click_properties(_coda([10, 22, 38, 60, 90]), band_hz=BANDS, hop_s=HOP)
    assert accelerating["ici_trend"][0] < -0.2 and decelerating["ici_trend"][0] > 0.2
    assert accelerating["ici_cv"][0] > 0.2


def test_irregular_timing_raises_irregularity_but_a_steady_trend_does_not():
    steady = [10]
    for k in range(5):
        steady.append(steady[-1] + int(round(20 * 0.8**k)))
    irregular = [10, 30, 42, 70, 80, 105]
    s = click_properties(_coda(steady), band_hz=BANDS, hop_s=HOP)
    r = click_properties(_coda(irregular), band_hz=BANDS, hop_s=HOP)
    assert r["ici_irregularity"][0] > 5 * s["ici_irregularity"][0]


def test_centroid_is_the_energy_weighted_band_frequency():
    props = click_properties(_coda([20, 60], band=[1.0, 0.0, 3.0, 0.0]), band_hz=BANDS, hop_s=HOP)
    assert props["centroid_hz"][0] == pytest.approx((500 + 3 * 2500) / 4, rel=1e-4)


def test_close_peaks_are_merged_and_quiet_ones_ignored():
    x = _coda([20, 22, 60])  # 20 and 22 closer than min_separation = 3: the louder (first) is kept
    x[0, 1, 22] = -0.2
    props = click_properties(x, band_hz=BANDS, hop_s=HOP)
    assert props["click_count"][0] == 2
    quiet = _coda([20, 60])
    quiet[0, :, 60] = -4.5  # 0.5 log10 above the floor, under the 10 dB threshold
    assert click_properties(quiet, band_hz=BANDS, hop_s=HOP)["click_count"][0] == 1


def test_degenerate_outputs_give_zero_clicks_and_nans_not_errors():
    flat = np.zeros((1, 4, 128))
    one = _coda([40])
    huge = np.full((1, 4, 128), 500.0)  # an extreme latent value's output: clipped, finite
    props = click_properties(np.concatenate([flat, one, huge]), band_hz=BANDS, hop_s=HOP)
    assert props["click_count"].tolist() == [0, 1, 0]
    assert np.isnan(props["ici_mean"]).all() and np.isnan(props["ici_cv"]).all()
    assert np.isnan(props["centroid_hz"][[0, 2]]).all() and np.isfinite(props["centroid_hz"][1])
    assert np.isfinite(props["energy_db"]).all()
    assert set(props) == set(PROPERTIES)
    two = click_properties(_coda([40, 60]), band_hz=BANDS, hop_s=HOP)
    assert np.isfinite(two["ici_mean"][0]) and np.isnan(two["ici_cv"][0]) and np.isnan(two["ici_irregularity"][0])


def test_energy_is_the_mean_frame_energy_in_db():
    x = np.full((1, 4, 10), np.log10(0.25))  # each frame sums to 1 -> 0 dB
    assert click_properties(x, band_hz=BANDS, hop_s=HOP)["energy_db"][0] == pytest.approx(0.0, abs=1e-9)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="log_energy"):
        click_properties(np.zeros((4, 128)), band_hz=BANDS, hop_s=HOP)
    with pytest.raises(ValueError, match="band_hz"):
        click_properties(np.zeros((1, 4, 128)), band_hz=BANDS[:3], hop_s=HOP)
    with pytest.raises(ValueError, match="finite"):
        click_properties(np.full((1, 4, 128), np.nan), band_hz=BANDS, hop_s=HOP)
    with pytest.raises(ValueError, match="hop_s"):
        click_properties(np.zeros((1, 4, 128)), band_hz=BANDS, hop_s=0.0)
