"""commlab.semcom: Deep JSCC, keyed shuffles, denoisers, interference statistics, digital baseline, metrics."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from commlab import channels as ch
from commlab import semcom


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- keyed shuffles -------------------------------------------------------------------------------

def test_keyed_permutation_golden_values():
    """Stable across versions and processes: changing these values breaks every stored key."""
    assert semcom.keyed_permutation(0, 10).tolist() == [4, 7, 9, 6, 8, 1, 3, 5, 0, 2]
    assert semcom.keyed_permutation(1, 10).tolist() == [0, 7, 5, 9, 3, 8, 2, 1, 6, 4]
    assert semcom.keyed_permutation("alice", 12).tolist() == [2, 0, 1, 5, 6, 10, 7, 9, 4, 3, 8, 11]
    assert semcom.keyed_permutation(semcom.frame_key("alice", 3), 8).tolist() == [5, 0, 6, 7, 4, 3, 2, 1]


def test_keyed_permutation_ignores_global_rng_and_distinguishes_key_types():
    torch.manual_seed(1)
    a = semcom.keyed_permutation(5, 98)
    torch.manual_seed(2)
    np.random.seed(3)
    assert torch.equal(a, semcom.keyed_permutation(5, 98))
    assert sorted(a.tolist()) == list(range(98))
    assert not torch.equal(semcom.keyed_permutation(5, 98), semcom.keyed_permutation("5", 98))


@pytest.mark.parametrize("granularity,tokens", [("element", None), ("token", 49)])
def test_shuffle_round_trip_is_exact_and_differentiable(granularity, tokens):
    z = ch.complex_normal((3, 2, 98), generator=gen()).requires_grad_(True)
    sh = semcom.Shuffler(98, "user-1", granularity, tokens)
    s = sh.shuffle(z)
    assert not torch.equal(s, z)
    assert torch.equal(sh.unshuffle(s), z)
    assert torch.equal(sh.shuffle(sh.unshuffle(z)), z)
    s.real.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z.real).to(z.grad.dtype))


@pytest.mark.parametrize("granularity,tokens", [("element", None), ("token", 7)])
def test_per_frame_key_schedule(granularity, tokens):
    z = ch.complex_normal((5, 2, 14), generator=gen())
    sh = semcom.Shuffler(14, "k", granularity, tokens)
    frames = [3, 4, 5, 6, 7]
    s = sh.shuffle(z, frames)
    assert torch.equal(sh.unshuffle(s, frames), z)
    for b, f in enumerate(frames):  # example b uses the permutation of frame f, the same for every row
        perm = sh.frame_permutations([f])[0]
        assert torch.equal(s[b], z[b][..., perm])
    assert not torch.equal(sh.frame_permutations([3])[0], sh.frame_permutations([4])[0])
    assert semcom.keyed_permutation(semcom.frame_key(0, 2), 10).tolist() == \
        semcom.keyed_permutation("int:0#frame:2", 10).tolist()
    with pytest.raises(ValueError, match="frames"):
        sh.shuffle(z, [1, 2])


def test_token_shuffle_keeps_feature_vectors_together():
    sh = semcom.Shuffler(6, 3, "token", tokens=3)  # 2 features x 3 positions, feature-major
    z = torch.tensor([[10, 11, 12, 20, 21, 22]])
    s = sh.shuffle(z)
    positions = s[0, :3] - 10
    assert torch.equal(s[0, 3:] - 20, positions)  # both features moved to the same new positions
    assert torch.equal(positions, semcom.keyed_permutation(3, 3))


def test_shuffler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="granularity"):
        semcom.Shuffler(10, 0, "block")
    with pytest.raises(ValueError, match="tokens"):
        semcom.Shuffler(10, 0, "token", tokens=3)
    with pytest.raises(TypeError, match="key"):
        semcom.Shuffler(10, 1.5)
    with pytest.raises(ValueError, match="n_symbols=10"):
        semcom.Shuffler(10, 0).shuffle(torch.zeros(2, 11))


def test_shuffled_access_recovers_single_user_and_whitens_interference():
    b, n = 400, 98
    # spatially smooth features with a position-dependent mean: strongly correlated across positions
    base = 0.3 * torch.linspace(-1, 1, n)
    raw = base + 0.3 * torch.cumsum(torch.randn(b, 2, n, generator=gen(1)), dim=-1) / math.sqrt(n)
    z = ch.power_normalize(torch.complex(raw, raw.roll(7, dims=-1)).reshape(b * 2, n)).reshape(b, 2, n)
    one = semcom.ShuffledAccess(n, ["a"], ch.MultiUserMAC(no=0.0))
    res = one.transmit(z[:, :1], generator=gen())
    assert torch.allclose(one.receive(res, 0), z[:, 0], atol=1e-6)
    stats = {}
    for keys in (None, ["a", "b"]):
        acc = semcom.ShuffledAccess(n, keys, ch.MultiUserMAC(no=0.0))
        r = acc.receive(acc.transmit(z, generator=gen()), 0)
        stats[keys is None] = semcom.interference_statistics(r - z[:, 0], z[:, 0])
        assert torch.allclose(acc.sinr(acc.transmit(z, generator=gen()))[0], torch.tensor([1.0, 1.0]))
    assert stats[True]["lag1"] > 0.5 and stats[True]["corr_signal"] > 0.3
    assert abs(stats[False]["lag1"]) < 0.1 and abs(stats[False]["corr_signal"]) < 0.1
    wrong = acc.receive(acc.transmit(z, generator=gen()), 0, key="c")
    assert (wrong - z[:, 0]).abs().square().mean() > 1.0
    frames = list(range(b))
    per_frame = acc.receive(acc.transmit(z, generator=gen(), frames=frames), 0, frames=frames)
    st = semcom.interference_statistics(per_frame - z[:, 0], z[:, 0])
    assert abs(st["lag1"]) < 0.1 and abs(st["corr_signal"]) < 0.05


def test_interference_statistics_of_white_gaussian_noise():
    w = ch.complex_normal((200, 256), generator=gen(2))
    s = ch.complex_normal((200, 256), generator=gen(3))
    st = semcom.interference_statistics(w, s)
    assert abs(st["lag1"]) < 0.02 and abs(st["corr_signal"]) < 0.02
    assert abs(st["excess_kurtosis"]) < 0.15 and st["ks"] < 0.02
    assert semcom.correlation(s, s) == pytest.approx(1.0)
    acf = semcom.autocorrelation(w, 3)
    assert acf[0] == pytest.approx(1.0) and np.all(np.abs(acf[1:]) < 0.02)
    alternating = torch.tensor([[1, -1, 1, -1, 1, -1]], dtype=torch.complex64)
    assert semcom.lag1_autocorrelation(alternating) == pytest.approx(-5 / 6)


def test_feature_moments_and_interference_model():
    feats = ch.complex_normal((1000, 20), generator=gen(4)) * 0.5 + torch.linspace(0, 1, 20)
    mu, spread = semcom.feature_moments(feats)
    assert torch.allclose(mu, feats.mean(0)) and spread == pytest.approx(0.25, rel=0.05)
    z = feats[:6].reshape(2, 3, 20)
    acc = semcom.ShuffledAccess(20, ["a", "b", "c"], ch.MultiUserMAC(no=0.5, powers=[1.0, 4.0, 1.0]))
    res = acc.transmit(z, generator=gen(5))
    mean, var, sinr = acc.interference_model(res, 0, mu, spread)
    expected = 2 * acc.shufflers[0].unshuffle(acc.shufflers[1].shuffle(mu)) + \
        acc.shufflers[0].unshuffle(acc.shufflers[2].shuffle(mu))
    assert torch.allclose(mean, expected.expand(2, 20), atol=1e-6)
    assert torch.allclose(var, torch.full((2,), 5 * spread / 2 + 0.25))
    assert torch.allclose(sinr, torch.full((2,), 1 / (5 * spread + 0.5)))
    # for zero-mean unit-spread features the model's SINR is the MAC's (which counts unit-power users)
    assert torch.allclose(acc.interference_model(res, 0, mu * 0, 1.0)[2], acc.sinr(res)[:, 0])
    res_f = acc.transmit(z, generator=gen(5), frames=[0, 1])
    mean_f = acc.interference_model(res_f, 0, mu, spread, frames=[0, 1])[0]
    sh = acc.shufflers
    expected_1 = (2 * sh[0].unshuffle(sh[1].shuffle(mu[None], [1]), [1])
                  + sh[0].unshuffle(sh[2].shuffle(mu[None], [1]), [1]))
    assert torch.allclose(mean_f[1:], expected_1, atol=1e-6)


# --- denoisers -------------------------------------------------------------------------------------

def correlated_features(n_examples=4000, n=8, seed=5):
    mix = torch.randn(2 * n, 2 * n, generator=gen(100)) / math.sqrt(2 * n)
    x = torch.randn(n_examples, 2 * n, generator=gen(seed)) @ mix + 0.2
    return ch.real_to_complex(x)


def test_wiener_matches_closed_form_mmse():
    feats = correlated_features()
    den = semcom.WienerFeatureDenoiser(feats)
    sigma2 = 0.3
    test = correlated_features(2000, seed=6)
    r = test + ch.complex_normal(test.shape, generator=gen(7)) * math.sqrt(2 * sigma2)
    mse = (den(r, sigma2) - test).abs().square().sum(dim=1).mean().item()
    lam = den.eigenvalues.numpy()
    assert mse == pytest.approx(float(np.sum(lam * sigma2 / (lam + sigma2))), rel=0.08)
    assert mse < (r - test).abs().square().sum(dim=1).mean().item()
    # a known noise mean is removed
    shifted = den(r + 0.5, sigma2, noise_mean=0.5)
    assert torch.allclose(shifted, den(r, sigma2), atol=1e-4)
    with pytest.raises(ValueError, match="batch"):
        den(r, torch.ones(3))


def test_vp_schedule_start_step_matches_sinr():
    sched = semcom.VPSchedule(1000)
    sinr = torch.tensor([0.1, 1.0, 10.0, 100.0], dtype=torch.float64)
    t = sched.start_step(sinr)
    assert torch.all(t[:-1] > t[1:])
    assert torch.allclose(sched.alpha_bar[t], sinr / (1 + sinr), atol=2e-3)
    assert torch.allclose(sched.snr(t), sinr, rtol=0.05)
    with pytest.raises(ValueError, match="sinr"):
        sched.start_step(float("nan"))


def test_diffusion_denoiser_reduces_error():
    torch.manual_seed(0)
    feats = ch.power_normalize(correlated_features(4000, n=8))
    den = semcom.DiffusionFeatureDenoiser(8, hidden=64, schedule=semcom.VPSchedule(200))
    losses = den.fit(feats, steps=400, generator=gen(8), batch_size=128, lr=2e-3)
    assert np.mean(losses[-50:]) < np.mean(losses[:50])
    test = ch.power_normalize(correlated_features(1000, n=8, seed=9))
    sinr = 1.0
    r = ch.AWGN(snr_db=0.0)(test, generator=gen(10))
    out = den(r, sinr, ddim_steps=10, renormalize=False)
    linear_mse = (r / 2 - test).abs().square().mean()  # the best scalar estimate, r·SINR/(1 + SINR)
    wiener_mse = (semcom.WienerFeatureDenoiser(feats)(r, 0.5) - test).abs().square().mean()
    diffusion_mse = (out - test).abs().square().mean()
    assert diffusion_mse < linear_mse and diffusion_mse < 1.3 * wiener_mse


# --- Deep JSCC ------------------------------------------------------------------------------------

def test_deep_jscc_shapes_power_and_bandwidth_ratio():
    torch.manual_seed(0)
    model = semcom.DeepJSCC((1, 28, 28), latent_channels=4, filters=8, kernel_size=3)
    assert model.n_symbols == 98 and model.bandwidth_ratio == pytest.approx(1 / 8)
    x = torch.rand(5, 1, 28, 28, generator=gen())
    z = model.encode(x)
    assert z.shape == (5, 98) and z.dtype == torch.complex64
    assert torch.allclose(ch.average_power(z), torch.ones(5), atol=1e-5)
    out = model(x, ch.AWGN(10.0), generator=gen())
    assert out.shape == x.shape and bool(((out > 0) & (out < 1)).all())
    colour = semcom.DeepJSCC((3, 32, 32), latent_channels=8, filters=8)
    assert colour.bandwidth_ratio == pytest.approx(1 / 12)
    with pytest.raises(ValueError, match="divisible by 4"):
        semcom.DeepJSCC((1, 30, 30))
    with pytest.raises(TypeError, match="complex"):
        model.decode(torch.randn(5, 196))
    with pytest.raises(ValueError, match=r"x must be \[batch, 1, 28, 28\]"):
        model.encode(torch.rand(5, 1, 32, 32))


def test_adaptive_jscc_needs_snr_and_uses_it():
    torch.manual_seed(0)
    model = semcom.DeepJSCC((1, 28, 28), latent_channels=2, filters=16, kernel_size=3, adaptive=True)
    x = torch.rand(4, 1, 28, 28, generator=gen())
    with pytest.raises(ValueError, match="snr_db"):
        model.encode(x)
    assert not torch.allclose(model.encode(x, 0.0), model.encode(x, 20.0))
    out = model(x, ch.AWGN(0.0), generator=gen(), snr_db=torch.tensor([0.0, 5.0, 10.0, 20.0]))
    assert out.shape == x.shape


def test_train_jscc_learns_and_is_seeded():
    x = torch.rand(64, 1, 28, 28, generator=gen(1)) * torch.linspace(0, 1, 28)  # a smooth-ish structure

    def run():
        torch.manual_seed(0)
        model = semcom.DeepJSCC((1, 28, 28), latent_channels=4, filters=8, kernel_size=3)
        losses = semcom.train_jscc(model, x, snr_db=(0.0, 20.0), epochs=8, batch_size=16, generator=gen(2))
        return losses, semcom.jscc_psnr(model, x, snr_db=10.0, generator=gen(3))

    (la, pa), (lb, pb) = run(), run()
    assert la == lb and torch.equal(pa, pb)
    assert np.mean(la[-4:]) < np.mean(la[:4])


# --- digital baseline and metrics -----------------------------------------------------------------

def test_uniform_quantizer_matches_max_1960():
    assert semcom.gaussian_uniform_quantizer(1) == pytest.approx((1.596, 0.3634), abs=2e-3)
    assert semcom.gaussian_uniform_quantizer(2) == pytest.approx((0.9957, 0.1188), abs=2e-3)
    assert semcom.gaussian_uniform_quantizer(0)[1] == 1.0


def test_separation_baseline_cliff_and_budget():
    g = gen(11)
    basis = torch.randn(5, 64, generator=g)
    imgs = (0.5 + 0.1 * torch.randn(600, 5, generator=g) @ basis).clamp(0, 1).reshape(600, 1, 8, 8)
    sep = semcom.SeparationBaseline(imgs[:500], n_symbols=4, snr_design_db=10.0)
    assert sep.total_bits == math.floor(4 * math.log2(11)) == int(sep.bits.sum())
    test = imgs[500:]
    below, above = sep(test, 9.9), sep(test, 10.0)
    assert torch.allclose(below, imgs[:500].mean(0, keepdim=True).expand_as(below), atol=1e-6)
    assert semcom.psnr(test, above).mean() > semcom.psnr(test, below).mean() + 3
    assert torch.equal(sep(test, 25.0), above)
    other = sep.redesign(4, 20.0)
    assert other.total_bits == math.floor(4 * math.log2(101)) and sep.total_bits == math.floor(4 * math.log2(11))
    assert torch.equal(other(test, 15.0), below)
    mixed = sep(test, torch.where(torch.arange(100) % 2 == 0, 5.0, 15.0))  # per-image SNR: outage on even images
    assert torch.equal(mixed[0::2], below[0::2]) and torch.equal(mixed[1::2], above[1::2])


def test_psnr_and_ssim():
    x = torch.full((2, 1, 16, 16), 0.5)
    y = x + torch.tensor([0.1, 0.01]).reshape(2, 1, 1, 1)
    assert torch.allclose(semcom.psnr(x, y), torch.tensor([20.0, 40.0]), atol=1e-3)
    g = gen(12)
    a = torch.rand(3, 3, 32, 32, generator=g)
    b = (a + 0.1 * torch.randn(3, 3, 32, 32, generator=g)).clamp(0, 1)
    ours = semcom.ssim(a, b)
    for i in range(3):
        ref = structural_similarity(a[i].numpy(), b[i].numpy(), data_range=1.0, channel_axis=0,
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert ours[i].item() == pytest.approx(ref, abs=1e-4)
    assert torch.allclose(semcom.ssim(a, a), torch.ones(3))
    with pytest.raises(ValueError, match="same shape"):
        semcom.psnr(a, b[:2])
