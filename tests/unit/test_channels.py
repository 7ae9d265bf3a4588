"""commlab.channels against the SNR convention of shared/briefs/_conventions.md §4."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from commlab import channels as ch
from commlab.channels import bounds

N = 1_000_000


def unit_symbols(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ch.power_normalize(ch.complex_normal((1, n), generator=g), mode="per_batch")


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_measured_snr_matches_requested(snr_db):
    x = unit_symbols()
    g = torch.Generator().manual_seed(1)
    w = ch.AWGN(snr_db)(x, generator=g) - x
    measured = 10 * math.log10(1.0 / w.abs().square().double().mean().item())
    assert abs(measured - snr_db) < 0.05
    no = 10 ** (-snr_db / 10)
    assert w.real.double().var().item() == pytest.approx(no / 2, rel=0.01)
    assert w.imag.double().var().item() == pytest.approx(no / 2, rel=0.01)


def test_real_channel_mode_has_variance_no_per_real():
    g = torch.Generator().manual_seed(2)
    x = torch.zeros(4, N // 4)
    w = ch.AWGN(6.0, real=True)(x, generator=g)
    assert w.dtype == torch.float32
    assert w.double().var().item() == pytest.approx(10 ** -0.6, rel=0.01)


def test_no_overrides_snr_and_ebnodb2no_matches_sionna():
    x = unit_symbols(200_000)
    w = ch.AWGN(snr_db=30.0, no=0.5)(x, generator=torch.Generator().manual_seed(0)) - x
    assert w.abs().square().mean().item() == pytest.approx(0.5, rel=0.01)
    assert ch.ebnodb2no(5, 2, 0.5) == pytest.approx(0.31623, abs=1e-5)


def test_noise_is_zero_mean_circular_and_independent_of_signal():
    x = unit_symbols()
    g = torch.Generator().manual_seed(3)
    w = (ch.AWGN(0.0)(x, generator=g) - x).to(torch.complex128)
    power = w.abs().square().mean()
    assert (w.mean().abs() / power.sqrt()).item() < 0.01
    assert ((w * w).mean().abs() / power).item() < 0.01  # circular: E[n^2] ~ 0
    corr = (w * x.to(torch.complex128).conj()).mean().abs() / (power * x.abs().double().square().mean()).sqrt()
    assert corr.item() < 0.01
    # nominal mode: the noise does not scale with the input
    big = ch.AWGN(0.0)(100 * x, generator=torch.Generator().manual_seed(3)) - 100 * x
    assert torch.allclose(big, w.to(big.dtype), atol=1e-3)


def test_measured_power_mode_scales_with_signal():
    x = 3.0 * unit_symbols(100_000)
    w = ch.AWGN(10.0, power="measured")(x, generator=torch.Generator().manual_seed(0)) - x
    assert w.abs().square().mean().item() == pytest.approx(0.9, rel=0.02)


@pytest.mark.parametrize("mode", ["per_example", "per_batch", "peak"])
def test_power_norm_exact_scale_invariant_and_differentiable(mode):
    g = torch.Generator().manual_seed(4)
    z = (ch.complex_normal((8, 3, 50), generator=g) * 5).requires_grad_(True)
    out = ch.PowerNorm(power=2.0, mode=mode)(z)
    p = ch.average_power(out, mode)
    assert torch.allclose(p, torch.full_like(p, 2.0), atol=1e-5)
    assert torch.allclose(ch.PowerNorm(2.0, mode)(z * 7.3), out, atol=1e-5)
    out.real.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_real_complex_round_trip_and_pairing():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    z = ch.real_to_complex(x)
    assert z.shape == (2, 6) and z.dtype == torch.complex64
    assert z[0, 0] == complex(0, 6)  # first half real parts, second half imaginary parts
    assert torch.equal(ch.complex_to_real(z, (3, 4)), x)


def test_seeded_determinism_and_global_rng_untouched():
    x = unit_symbols(1000)
    state = torch.get_rng_state()
    a = ch.AWGN(5.0)(x, generator=torch.Generator().manual_seed(7))
    b = ch.AWGN(5.0)(x, generator=torch.Generator().manual_seed(7))
    fa = ch.RayleighBlockFading(5.0)(x, generator=torch.Generator().manual_seed(7))
    fb = ch.RayleighBlockFading(5.0)(x, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and torch.equal(fa, fb)
    assert torch.equal(state, torch.get_rng_state())


def test_per_example_snr_broadcasting():
    g = torch.Generator().manual_seed(5)
    x = torch.zeros(3, 2, 100_000, dtype=torch.complex64)
    snr = torch.tensor([0.0, 10.0, 20.0])
    w = ch.AWGN(0.0)(x, generator=g, snr_db=snr)
    measured = -10 * torch.log10(w.abs().square().mean(dim=(1, 2)))
    assert torch.allclose(measured, snr, atol=0.05)


def test_awgn_gradient_flows_to_input():
    x = unit_symbols(100).requires_grad_(True)
    ch.AWGN(10.0)(x, generator=torch.Generator().manual_seed(0)).abs().square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_rayleigh_gain_statistics_and_blocks():
    g = torch.Generator().manual_seed(6)
    x = torch.ones(200_000, 4, dtype=torch.complex64)
    res = ch.RayleighBlockFading(10.0).transmit(x, generator=g)
    assert res.h.shape == (200_000, 1)  # one gain per example, broadcast over its symbols
    noiseless = ch.RayleighBlockFading(no=0.0, csi="none", equalizer=None).transmit(x[:5] * torch.arange(1, 5),
                                                                                     generator=g)
    assert torch.allclose(noiseless.y / torch.arange(1, 5), noiseless.y[:, :1].expand(5, 4))
    power = res.h[:, 0].abs().square().double().numpy()
    assert power.mean() == pytest.approx(1.0, rel=0.01)
    assert stats.kstest(power[:20_000], "expon").pvalue > 0.01
    blocks = ch.RayleighBlockFading(10.0, block_size=3).transmit(torch.ones(2, 7, dtype=torch.complex64),
                                                                 generator=g).h
    assert torch.equal(blocks[:, 0], blocks[:, 2]) and not torch.equal(blocks[:, 2], blocks[:, 3])
    assert torch.equal(blocks[:, 3], blocks[:, 5]) and not torch.equal(blocks[:, 5], blocks[:, 6])


def test_rayleigh_outage_matches_closed_form():
    snr_db, rate, n = 10.0, 2.0, 200_000
    g = torch.Generator().manual_seed(8)
    h = ch.RayleighBlockFading(snr_db).transmit(torch.ones(n, 1, dtype=torch.complex64), generator=g).h[:, 0]
    empirical = (torch.log2(1 + h.abs().square() * 10.0) < rate).double().mean().item()
    p = bounds.rayleigh_outage_probability(rate, snr_db)
    assert abs(empirical - p) < 2 * math.sqrt(p * (1 - p) / n)
    assert bounds.rayleigh_outage_probability(bounds.rayleigh_outage_capacity(0.1, snr_db), snr_db) == \
        pytest.approx(0.1)


def test_rayleigh_ergodic_capacity_matches_monte_carlo():
    h2 = np.random.default_rng(0).exponential(size=1_000_000)
    for snr_db in (0.0, 10.0):
        mc = np.log2(1 + h2 * 10 ** (snr_db / 10)).mean()
        assert bounds.rayleigh_ergodic_capacity(snr_db) == pytest.approx(mc, rel=0.005)


def test_rician_gain_power_and_los_limit():
    g = torch.Generator().manual_seed(9)
    x = torch.ones(100_000, 1, dtype=torch.complex64)
    h = ch.RicianBlockFading(10.0, k_factor=3.0).transmit(x, generator=g).h
    assert h.abs().square().mean().item() == pytest.approx(1.0, rel=0.02)
    assert h.mean().real.item() == pytest.approx(math.sqrt(0.75), abs=0.01)
    los = ch.RicianBlockFading(10.0, k_factor=1e9).transmit(x[:10], generator=g).h
    assert torch.allclose(los, torch.ones_like(los), atol=1e-3)


@pytest.mark.parametrize("csi,eq", [("perfect", "zf"), ("perfect", "mmse"), ("noisy", "mmse")])
def test_equalisation_recovers_signal(csi, eq):
    g = torch.Generator().manual_seed(10)
    x = ch.power_normalize(ch.complex_normal((2000, 64), generator=g))
    res = ch.RayleighBlockFading(30.0, csi=csi, equalizer=eq).transmit(x, generator=g)
    mse_eq = (res.y - x).abs().square().mean().item()
    mse_raw = (res.y_raw - x).abs().square().mean().item()
    assert mse_eq < 0.2 * mse_raw
    if csi == "perfect":
        assert torch.equal(res.h_hat, res.h)
    with pytest.raises(ValueError, match="csi='none'"):
        ch.RayleighBlockFading(10.0, csi="none", equalizer="zf")
    assert ch.RayleighBlockFading(10.0, csi="none", equalizer=None).transmit(x, generator=g).h_hat is None


def test_uncoded_gaussian_source_meets_goblick_bound():
    """Gaussian source, one real channel use per sample, LMMSE: SDR = 10·log10(1 + SNR) within 0.1 dB."""
    snr_db = 10.0
    g = torch.Generator().manual_seed(11)
    s = torch.randn(1, N, generator=g, dtype=torch.float64)
    y = ch.AWGN(snr_db, real=True)(s, generator=g)
    snr = 10 ** (snr_db / 10)
    s_hat = snr / (1 + snr) * y
    sdr = 10 * math.log10(s.var().item() / (s - s_hat).square().mean().item())
    assert abs(sdr - bounds.uncoded_gaussian_sdr_db(snr_db)) < 0.1
    assert bounds.uncoded_gaussian_sdr_db(snr_db) == pytest.approx(bounds.gaussian_opta_sdr_db(snr_db, 0.5))


def test_multi_user_superposition_and_sinr():
    g = torch.Generator().manual_seed(12)
    x = ch.power_normalize(ch.complex_normal((4000, 3, 32), generator=g).reshape(4000, 96)).reshape(4000, 3, 32)
    mac = ch.MultiUserMAC(20.0, powers=[1.0, 2.0, 0.5])
    res = mac.transmit(x, generator=g)
    clean = x[:, 0] + math.sqrt(2.0) * x[:, 1] + math.sqrt(0.5) * x[:, 2]
    assert (res.y - clean).abs().square().mean().item() == pytest.approx(0.01, rel=0.03)
    sinr = mac.sinr(res.h, res.no)
    assert sinr[0, 1].item() == pytest.approx(2.0 / (1.5 + 0.01))
    ray = ch.MultiUserMAC(no=0.1, fading="rayleigh").transmit(x, generator=g)
    assert ray.h.shape == (4000, 3) and ray.h.abs().square().mean().item() == pytest.approx(1.0, rel=0.05)


def test_binary_channels():
    g = torch.Generator().manual_seed(13)
    bits = torch.randint(0, 2, (200_000,), generator=g)
    out = ch.BinarySymmetricChannel(0.1)(bits, generator=g)
    assert (out != bits).double().mean().item() == pytest.approx(0.1, abs=0.003)
    er = ch.BinaryErasureChannel(0.2)(bits.bool(), generator=g)
    kept = er != ch.ERASED
    assert (~kept).double().mean().item() == pytest.approx(0.2, abs=0.003)
    assert torch.equal(er[kept].long(), bits[kept])
    assert bounds.bsc_capacity(0.11) == pytest.approx(0.5, abs=0.001) and bounds.bec_capacity(0.2) == 0.8
    with pytest.raises(ValueError, match="only 0 and 1"):
        ch.BinarySymmetricChannel(0.1)(torch.tensor([0, 2]), generator=g)


def test_bounds_closed_forms():
    assert bounds.awgn_capacity(0.0) == pytest.approx(1.0)
    assert bounds.awgn_capacity(0.0, real=True) == pytest.approx(0.5)
    assert bounds.gaussian_opta_sdr_db(10.0, 1 / 8) == pytest.approx(20 / 8 * math.log10(11))
    sep = bounds.gaussian_separation_sdr_db([0.0, 5.0, 10.0, 20.0], 10.0, 0.125)
    assert sep[0] == 0.0 and sep[1] == 0.0 and sep[2] == sep[3] == pytest.approx(bounds.gaussian_opta_sdr_db(10, 0.125))
    assert bounds.separation_bits(98, 10.0) == math.floor(98 * math.log2(11))
    # reverse water-filling: rate 0 keeps all variance; equal variances share the rate equally
    lam = np.array([4.0, 1.0, 0.25])
    assert np.allclose(bounds.reverse_waterfilling(lam, 0.0), lam)
    d = bounds.reverse_waterfilling(np.ones(4), 4.0)
    assert np.allclose(d, 0.25, rtol=1e-6)
    d = bounds.reverse_waterfilling(lam, 1.0)  # water level theta=1: 0.5*log2(4) = 1 bit on the first only
    assert np.allclose(d, [1.0, 1.0, 0.25], rtol=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "10"])
def test_bad_snr_rejected(bad):
    with pytest.raises((ValueError, TypeError), match="snr_db"):
        ch.AWGN(bad)
    x = unit_symbols(10)
    if not isinstance(bad, str):
        with pytest.raises(ValueError, match="snr_db"):
            ch.AWGN(0.0)(x, generator=None, snr_db=torch.tensor([bad]))


def test_bad_inputs_rejected_clearly():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(TypeError, match="complex"):
        ch.AWGN(10.0)(torch.randn(2, 4), generator=g)
    with pytest.raises(TypeError, match="complex"):
        ch.RayleighBlockFading(10.0)(torch.randn(2, 4), generator=g)
    with pytest.raises(TypeError, match="real"):
        ch.AWGN(10.0, real=True)(unit_symbols(4), generator=g)
    with pytest.raises(ValueError, match="snr_db"):
        ch.AWGN(0.0)(unit_symbols(10).expand(3, 10), generator=g, snr_db=torch.zeros(4))
    with pytest.raises(ValueError, match="powers"):
        ch.MultiUserMAC(10.0, powers=[1.0, 1.0])(torch.zeros(2, 3, 4, dtype=torch.complex64), generator=g)
    with pytest.raises(ValueError, match="even"):
        ch.real_to_complex(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="generator"):
        ch.AWGN(10.0)(unit_symbols(4), generator=0)
    with pytest.raises(TypeError, match="generator"):
        ch.AWGN(10.0)(unit_symbols(4))  # generator must be given explicitly
    with pytest.raises(ValueError, match="snr_db or no"):
        ch.AWGN()
    with pytest.raises(ValueError, match="mode"):
        ch.PowerNorm(mode="rms")
    with pytest.raises(ValueError, match="p must be in"):
        ch.BinarySymmetricChannel(1.5)


def test_binary_channel_capacities_reject_impossible_probabilities():
    assert bounds.bsc_capacity(0.0) == pytest.approx(1.0) and bounds.bsc_capacity(0.5) == pytest.approx(0.0)
    assert bounds.bec_capacity(0.25) == pytest.approx(0.75)
    for capacity in (bounds.bsc_capacity, bounds.bec_capacity):
        with pytest.raises(ValueError, match="probability"):
            capacity(1.5)
