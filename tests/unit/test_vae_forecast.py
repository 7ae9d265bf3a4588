"""commlab.ensembles.vae_forecast: the KL term against torch's closed form and Monte Carlo, the
CRPS objective against a hand-computed fair CRPS and against scores.crps_ensemble, the L1 objective,
reparameterisation, a CRPS-trained prior learning the right spread on a toy, determinism per seed,
state_dict round trips, rollout shapes, and refusals."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from commlab.ensembles import vae_forecast as vf
from commlab.ensembles.scores import crps_ensemble


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _vae(seed: int = 0, k: int = 5, d: int = 3, **kw) -> vf.ConditionalVAE:
    return vf.ConditionalVAE(k, latent_dim=d, hidden=(16,), generator=_gen(seed), **kw)


def test_gaussian_kl_matches_torch_closed_form_and_monte_carlo():
    g = _gen(0)
    mu_q, ls_q, mu_p, ls_p = (torch.randn(6, 4, generator=g, dtype=torch.float64) * 0.7 for _ in range(4))
    q = torch.distributions.Normal(mu_q, ls_q.exp())
    p = torch.distributions.Normal(mu_p, ls_p.exp())
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(vf.gaussian_kl(mu_q, ls_q, mu_p, ls_p), expected, rtol=1e-12, atol=1e-12)
    z = mu_q + ls_q.exp() * torch.randn((200_000, 6, 4), generator=g, dtype=torch.float64)
    mc = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean(0)
    assert torch.allclose(mc, expected, rtol=0.03, atol=0.01)
    assert torch.equal(vf.gaussian_kl(mu_q, ls_q, mu_q, ls_q), torch.zeros(6, dtype=torch.float64))


class _TakeFirstLatent(nn.Module):
    """Decoder stand-in: g(x, z) = z_1 for every variable."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, features):
        return features[..., self.k:self.k + 1].expand(*features.shape[:-1], self.k)


class _StandardPrior(nn.Module):
    """Prior stand-in: μ_p = 0, ln σ_p = 0 (z ~ N(0, I))."""

    def __init__(self, d: int):
        super().__init__()
        self.d = d

    def forward(self, features):
        return torch.zeros(*features.shape[:-1], 2 * self.d)


def test_crps_objective_equals_a_hand_computed_fair_crps():
    k, d, m, s = 3, 2, 4, 2.0
    model = _vae(k=k, d=d, step_std=s)
    model.decoder, model.prior_net = _TakeFirstLatent(k), _StandardPrior(d)
    x = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.5, 0.0]])
    y = x + torch.tensor([[0.4, -1.0, 3.0], [0.0, 0.2, -0.5]])
    terms = vf.emulator_loss(model, x, y, objective="crps", generator=_gen(5), beta=0.0, n_samples=m)
    eps = torch.randn((m, 2, d), generator=_gen(5))[..., 0]  # the draws the objective makes: z_1 per sample
    # members x + s z_1; in units of s the increment members are z_1 and the target (y - x)/s
    target = (y - x) / s
    total = 0.0
    for b, j in itertools.product(range(2), range(k)):
        e = [float(eps[i, b]) for i in range(m)]
        t = float(target[b, j])
        skill = sum(abs(v - t) for v in e) / m
        spread = sum(abs(u - v) for u in e for v in e) / (2 * m * (m - 1))
        total += skill - spread
    assert terms.reconstruction.item() == pytest.approx(total / (2 * k), rel=1e-5)
    assert terms.total.item() == pytest.approx(terms.reconstruction.item(), rel=1e-12)


def test_crps_objective_is_scores_crps_of_the_decoded_samples():
    model = _vae(1, step_std=1.5)
    x = torch.randn(7, 5, generator=_gen(2))
    y = x + torch.randn(7, 5, generator=_gen(3))
    for source in ("prior", "posterior"):
        terms = vf.emulator_loss(model, x, y, objective="crps", generator=_gen(9), beta=0.3, n_samples=3,
                                 crps_z_source=source)
        mu, ls = model.prior(x) if source == "prior" else model.posterior(x, y)
        z = mu + ls.exp() * torch.randn((3, *mu.shape), generator=_gen(9))
        members = model.decode(x.expand(3, 7, 5), z)
        expected = crps_ensemble(members, y, member_dim=0, fair=True).mean() / 1.5
        kl = vf.gaussian_kl(*model.posterior(x, y), *model.prior(x)).mean()
        assert torch.allclose(terms.reconstruction, expected, rtol=1e-6)
        assert torch.allclose(terms.kl, kl, rtol=1e-6)
        assert torch.allclose(terms.total, expected + 0.3 * kl, rtol=1e-6)


def test_l1_objective_uses_one_posterior_draw():
    model = _vae(4, step_std=0.5)
    x = torch.randn(6, 5, generator=_gen(1))
    y = x + torch.randn(6, 5, generator=_gen(2))
    terms = vf.emulator_loss(model, x, y, objective="l1", generator=_gen(3), beta=2.0)
    mu, ls = model.posterior(x, y)
    z = mu + ls.exp() * torch.randn((1, *mu.shape), generator=_gen(3))[0]
    expected = ((model.decode(x, z) - y) / 0.5).abs().mean()
    assert torch.allclose(terms.reconstruction, expected, rtol=1e-6)
    assert torch.allclose(terms.total, expected + 2.0 * terms.kl, rtol=1e-6)


def test_crps_trained_prior_learns_the_spread_of_a_noisy_map():
    # y = x + 0.5 ξ: CRPS (a proper score) on the prior's samples should give them a spread near 0.5
    # around a mean near x.
    g = _gen(11)
    x = torch.randn(4000, 2, generator=g)
    y = x + 0.5 * torch.randn(4000, 2, generator=g)
    model = vf.ConditionalVAE(2, latent_dim=2, hidden=(32,), generator=_gen(12))
    vf.fit_emulator(model, x, y, objective="crps", steps=600, batch_size=128, lr=3e-3, generator=_gen(13),
                    beta=0.0, n_samples=4)
    with torch.no_grad():
        draws = model.sample(x[:500], 200, generator=_gen(14))
    assert 0.4 < float(draws.std(0).mean()) < 0.6
    assert float((draws.mean(0) - x[:500]).abs().mean()) < 0.15


def test_determinism_per_seed_and_state_dict_round_trip():
    x = torch.randn(200, 5, generator=_gen(0))
    y = x + torch.randn(200, 5, generator=_gen(1))
    runs = []
    for init in (0, 0, 1):
        model = _vae(init)
        history = vf.fit_emulator(model, x, y, objective="crps", steps=5, batch_size=16, lr=1e-3,
                                  generator=_gen(7))
        runs.append((model, history))
    (a, ha), (b, hb), (c, _) = runs
    assert ha == hb
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.decoder[0].weight, c.decoder[0].weight)
    assert torch.equal(a.rollout(x[:3], 4, 6, generator=_gen(2)), b.rollout(x[:3], 4, 6, generator=_gen(2)))
    clone = _vae(5)
    clone.load_state_dict(a.state_dict())
    assert torch.equal(clone.rollout(x[:3], 2, 3, generator=_gen(4)), a.rollout(x[:3], 2, 3, generator=_gen(4)))
    det = vf.ResidualMLP(5, hidden=(8,), generator=_gen(3), step_std=2.0)
    vf.fit_emulator(det, x, y, objective="mse", steps=3, batch_size=8, lr=1e-3, generator=_gen(4))
    det2 = vf.ResidualMLP(5, hidden=(8,), generator=_gen(9))
    det2.load_state_dict(det.state_dict())
    assert torch.equal(det2.rollout(x[:2], 3), det.rollout(x[:2], 3))
    assert float(det2.step_std) == 2.0


def test_rollout_shapes_and_start():
    model = _vae(k=6, d=2)
    x0 = torch.randn(4, 6, generator=_gen(0), dtype=torch.float64)
    members = model.rollout(x0, 3, 5, generator=_gen(1))
    assert members.shape == (4, 4, 5, 6) and members.dtype == torch.float32
    assert torch.equal(members[0], x0.float().unsqueeze(1).expand(4, 5, 6))
    assert float(members[1].std(1).mean()) > 0  # members differ after one step
    assert vf.ResidualMLP(6, hidden=(4,), generator=_gen(0)).rollout(x0, 2).shape == (3, 4, 6)


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda m, x, y: m.prior(x[:, :4]), ValueError, r"\[\.\.\., 5\]"),
    (lambda m, x, y: m.prior(x.long()), TypeError, "floating point"),
    (lambda m, x, y: m.posterior(x, y.clone().fill_(float("nan"))), ValueError, "finite"),
    (lambda m, x, y: m.posterior(x, y[:2]), ValueError, "same shape"),
    (lambda m, x, y: m.decode(x, torch.zeros(3, 2)), ValueError, "z must be"),
    (lambda m, x, y: vf.emulator_loss(m, x, y, objective="l2", generator=_gen(0)), ValueError, "objective"),
    (lambda m, x, y: vf.emulator_loss(m, x, y, objective="mse"), TypeError, "does not fit"),
    (lambda m, x, y: vf.emulator_loss(m, x, y, objective="crps", generator=_gen(0), n_samples=1),
     ValueError, "n_samples"),
    (lambda m, x, y: vf.emulator_loss(m, x, y, objective="crps", generator=_gen(0), crps_z_source="both"),
     ValueError, "crps_z_source"),
    (lambda m, x, y: vf.emulator_loss(m, x, y, objective="l1", generator=_gen(0), beta=-1.0), ValueError, "beta"),
    (lambda m, x, y: vf.emulator_loss(m, x, y, objective="l1", generator=3), TypeError, "generator"),
    (lambda m, x, y: vf.emulator_loss(m, x[None], y[None], objective="l1", generator=_gen(0)),
     ValueError, r"\[B, K\]"),
    (lambda m, x, y: vf.fit_emulator(m, x, y, objective="l1", steps=0, batch_size=2, lr=1e-3, generator=_gen(0)),
     ValueError, "steps"),
    (lambda m, x, y: vf.fit_emulator(m, x, y, objective="l1", steps=1, batch_size=2, lr=0.0, generator=_gen(0)),
     ValueError, "lr"),
    (lambda m, x, y: vf.fit_emulator(m, x, y, objective="l1", steps=1, batch_size=2, lr=1e-3, generator=_gen(0),
                                     lr_decay="step"), ValueError, "lr_decay"),
    (lambda m, x, y: m.rollout(x, 2, 0, generator=_gen(0)), ValueError, "n_members"),
    (lambda m, x, y: vf.ConditionalVAE(5, hidden=128, generator=_gen(0)), TypeError, "hidden"),
    (lambda m, x, y: vf.ConditionalVAE(5, latent_dim=0, generator=_gen(0)), ValueError, "latent_dim"),
    (lambda m, x, y: vf.ConditionalVAE(5, step_std=0.0, generator=_gen(0)), ValueError, "step_std"),
    (lambda m, x, y: vf.ResidualMLP(5, generator=None), TypeError, "generator"),
])
def test_bad_input_is_refused(call, error, match):
    model = _vae()
    x = torch.randn(3, 5, generator=_gen(0))
    y = x + 1.0
    with pytest.raises(error, match=match):
        call(model, x, y)


def _constant_step(model: nn.Module, last: nn.Linear) -> nn.Module:
    """Make the emulator's increment g ≡ 1, so that every step adds exactly s_Δ to each variable."""
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(1.0)
    return model


def test_rollout_keeps_a_diverged_member_nan_and_the_others_unchanged():
    # s_Δ = 1e37 per step: case 0 starts at 0 (finite for the 3 steps), case 1 at 3.35e38 overflows float32
    # (max 3.40e38) at step 1; x_std = 1e38 keeps the networks' standardised inputs small
    scales = {"x_mean": 0.0, "x_std": 1e38, "step_std": 1e37}
    vae = _vae(k=4, d=2, **scales)
    vae = _constant_step(vae, vae.decoder[-1])
    x0 = torch.tensor([[0.0] * 4, [3.35e38] * 4])
    members = vae.rollout(x0, 3, 3, generator=_gen(0))  # [4, 2, 3, 4]
    steps = torch.arange(4, dtype=torch.float32).view(4, 1, 1) * 1e37
    assert torch.equal(members[:, 0], steps.expand(4, 3, 4))
    assert torch.isnan(members[1:, 1]).all() and torch.equal(members[0, 1], x0[1].expand(3, 4))
    diverged = vf.diverged_members(members)  # [4, 2, 3]
    assert diverged.shape == (4, 2, 3)
    expected = torch.tensor([False, True, True, True]).view(4, 1, 1) & torch.tensor([False, True]).view(1, 2, 1)
    assert torch.equal(diverged, expected.expand(4, 2, 3))
    det = vf.ResidualMLP(4, hidden=(8,), generator=_gen(1), **scales)
    det = _constant_step(det, det.net[-1])
    states = det.rollout(x0, 2)
    assert torch.equal(states[:, 0], steps[:3, 0].expand(3, 4))
    assert torch.equal(vf.diverged_members(states), torch.tensor([[False, False], [False, True], [False, True]]))


def test_finite_rollout_is_the_plain_prior_decode_loop():
    model = _vae(k=6, d=2)
    x0 = torch.randn(3, 6, generator=_gen(5))
    members = model.rollout(x0, 4, 5, generator=_gen(6))
    gen, x, expected = _gen(6), x0.unsqueeze(-2).expand(3, 5, 6), [x0.unsqueeze(-2).expand(3, 5, 6)]
    with torch.no_grad():
        for _ in range(4):
            mu, log_sigma = model.prior(x)
            x = model.decode(x, model.reparameterise(mu, log_sigma, 1, gen)[0])
            expected.append(x)
    assert torch.equal(members, torch.stack(expected))
    assert not vf.diverged_members(members).any()
    with pytest.raises(TypeError, match="states"):
        vf.diverged_members(torch.zeros(3, dtype=torch.int64))
