"""Rayleigh reference curves at extreme SNRs and tiny probabilities, against 40-digit mpmath."""

import mpmath as mp
import numpy as np
import pytest

from commlab.channels import bounds

mp.mp.dps = 40
SNRS_DB = [-150.0, -100.0, -60.0, -40.0, -30.0, -28.5, -28.0, -10.0, 0.0, 10.0, 40.0, 100.0, 200.0]


def _snr(db):
    return mp.mpf(10) ** (mp.mpf(db) / 10)


@pytest.mark.parametrize("snr_db", SNRS_DB)
def test_ergodic_capacity_is_finite_and_exact_at_any_snr(snr_db):
    x = 1 / _snr(snr_db)
    exact = mp.log(mp.e, 2) * mp.exp(x) * mp.e1(x)  # log2(e) e^{1/SNR} E1(1/SNR)
    got = bounds.rayleigh_ergodic_capacity(snr_db)
    assert np.isfinite(got) and got == pytest.approx(float(exact), rel=1e-13)


def test_ergodic_capacity_on_arrays_spans_the_switch_to_the_series():
    snr_db = np.linspace(-20.0, -14.0, 61)  # 1/SNR from 100 down to 25, across x = 50
    got = bounds.rayleigh_ergodic_capacity(snr_db)
    exact = [float(mp.log(mp.e, 2) * mp.exp(1 / _snr(d)) * mp.e1(1 / _snr(d))) for d in snr_db]
    np.testing.assert_allclose(got, exact, rtol=1e-13)
    assert np.all(np.diff(got) > 0)
    # the low-SNR limit log2(e)·SNR (1 − SNR + …)
    assert bounds.rayleigh_ergodic_capacity(-120.0) == pytest.approx(np.log2(np.e) * 1e-12, rel=1e-11)


@pytest.mark.parametrize(("rate", "snr_db"), [(1e-10, 0.0), (1e-6, 60.0), (0.01, 100.0), (1.0, 130.0),
                                              (2.0, 10.0), (8.0, -10.0)])
def test_outage_probability_is_accurate_far_below_1e_12(rate, snr_db):
    exact = -mp.expm1(-mp.expm1(rate * mp.log(2)) / _snr(snr_db))
    got = bounds.rayleigh_outage_probability(rate, snr_db)
    assert got == pytest.approx(float(exact), rel=1e-13)


@pytest.mark.parametrize("epsilon", [1e-15, 1e-9, 1e-3, 0.5])
@pytest.mark.parametrize("snr_db", [-40.0, 0.0, 30.0])
def test_outage_capacity_inverts_the_outage_probability(epsilon, snr_db):
    exact = mp.log(1 - _snr(snr_db) * mp.log(1 - mp.mpf(epsilon)), 2)
    rate = bounds.rayleigh_outage_capacity(epsilon, snr_db)
    assert rate == pytest.approx(float(exact), rel=1e-12)
    assert bounds.rayleigh_outage_probability(rate, snr_db) == pytest.approx(epsilon, rel=1e-9)
