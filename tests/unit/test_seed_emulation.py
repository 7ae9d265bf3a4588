"""commlab.ensembles.emulation: conditioning features on hand-built seeds, disjoint seed/target
splits, the pooled spread and the seed Gaussian's moments and calibration, the emulator learning a
case-dependent spread, generation shape, determinism per seed, state_dict round trip, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from commlab.ensembles.emulation import (
    SeedEmulator,
    pooled_spread,
    sample_seed_gaussian,
    seed_features,
    seed_gaussian,
    training_pairs,
)
from commlab.ensembles.scores import spread_skill


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_seed_features_by_hand():
    seeds = torch.tensor([[[1.0, 4.0], [3.0, 0.0]]])                             # N = 1, S = 2, K = 2
    c = seed_features(seeds, clim_mean=torch.tensor([1.0, 0.0]), clim_std=2.0, spread=torch.tensor([0.5, 4.0]))
    # seed mean (2, 2): ((2 − 1)/2, (2 − 0)/2); first seed's deviation (−1, 2) / (0.5, 4)
    assert c.tolist() == [[0.5, 1.0, -2.0, 0.5]]
    three = torch.tensor([[[0.0], [3.0], [6.0]]])                                 # S = 3: mean and 2 deviations
    assert seed_features(three, clim_mean=0.0, clim_std=1.0, spread=3.0).tolist() == [[3.0, -1.0, 0.0]]


def test_training_pairs_split_each_case_into_disjoint_groups():
    members = torch.arange(2 * 7 * 3, dtype=torch.float64).reshape(2, 7, 3)
    seeds, targets = training_pairs(members, 2)
    assert seeds.shape == (6, 2, 3) and targets.shape == (6, 5, 3)               # P = 7 // 2 = 3
    for p in range(3):
        for n in range(2):
            row = p * 2 + n
            assert torch.equal(seeds[row], members[n, 2 * p:2 * p + 2])
            together = torch.cat([seeds[row], targets[row]])
            assert sorted(together[:, 0].tolist()) == members[n, :, 0].tolist()  # every member once
    one, _ = training_pairs(members, 3, n_splits=1)
    assert torch.equal(one, members[:, :3])


def test_pooled_spread_and_seed_gaussian_moments():
    gen = _gen(0)
    sigma = torch.tensor([0.5, 2.0])
    members = 3.0 + sigma * torch.randn(4000, 10, 2, generator=gen, dtype=torch.float64)
    assert pooled_spread(members).tolist() == pytest.approx(sigma.tolist(), rel=0.02)
    seeds = members[:5, :2]
    mean, std = seed_gaussian(seeds, sigma)
    assert torch.equal(mean, seeds.mean(1))
    assert std.shape == (5, 2) and std[0].tolist() == pytest.approx((sigma * math.sqrt(1.5)).tolist())
    draws = sample_seed_gaussian(seeds, sigma, 40_000, generator=gen)
    assert draws.shape == (5, 40_000, 2)
    assert (draws.mean(1) - mean).abs().max() < 0.04
    assert draws.std(1).div(std).sub(1).abs().max() < 0.02


def test_seed_gaussian_is_calibrated_for_exchangeable_members():
    # the truth and the members are exchangeable draws about a case mean: N(s̄, σ²(1 + 1/S)) is the
    # predictive law of the truth, so its spread–skill ratio is ~1 (a pooled σ, not the seeds' own
    # two-member spread)
    gen = _gen(1)
    centre = 10 * torch.randn(3000, 1, 4, generator=gen, dtype=torch.float64)
    members = centre + 0.3 * torch.randn(3000, 3, 4, generator=gen, dtype=torch.float64)
    seeds, truth = members[:, :2], members[:, 2]
    ensemble = sample_seed_gaussian(seeds, 0.3, 50, generator=gen)
    assert float(spread_skill(ensemble, truth, member_dim=-2).ratio) == pytest.approx(1.0, abs=0.04)
    narrow = seeds.mean(1, keepdim=True) + 0.3 * torch.randn(3000, 50, 4, generator=gen, dtype=torch.float64)
    assert float(spread_skill(narrow, truth, member_dim=-2).ratio) < 0.85     # without the 1 + 1/S term


def _two_regime_cases(n_cases: int, gen: torch.Generator) -> torch.Tensor:
    """Members N(μ, σ²I) in K = 2 with σ = 0.1 where μ₀ < 0 and 0.4 where μ₀ > 0: ``[N, 8, 2]``."""
    centre = 4 * torch.rand(n_cases, 1, 2, generator=gen) - 2
    sigma = torch.where(centre[..., :1] > 0, 0.4, 0.1)
    return centre + sigma * torch.randn(n_cases, 8, 2, generator=gen)


def test_emulator_learns_a_case_dependent_spread():
    gen = _gen(2)
    seeds, targets = training_pairs(_two_regime_cases(1500, gen), 2)
    emulator = SeedEmulator(2, 2, hidden=(64, 64), generator=gen)
    losses = emulator.fit(seeds, targets, steps=1500, batch_size=256, lr=3e-3, generator=gen)
    assert losses[-200:].mean() < 0.8 * losses[:20].mean()
    test = torch.tensor([[-1.0, 0.5], [1.0, -0.5]])                              # one case in each regime
    test_seeds = test[:, None] + torch.tensor([0.1, 0.4])[:, None, None] * torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    out = emulator.sample(test_seeds, 4000, generator=gen)
    spread = out.std(1).mean(1)                                                   # per case, mean over K
    # truth: σ·sqrt(1 + 1/2) about the seed mean, 0.12 and 0.49; a pooled σ would give one value for both
    assert 0.07 < float(spread[0]) < 0.2 and 0.35 < float(spread[1]) < 0.65
    assert (out.mean(1) - test_seeds.mean(1)).abs().max() < 0.1


def _fitted(seed: int = 3) -> tuple[SeedEmulator, torch.Tensor]:
    gen = _gen(seed)
    members = _two_regime_cases(50, gen)
    emulator = SeedEmulator(2, 2, hidden=(16,), time_dim=8, generator=gen)
    emulator.fit(members[:, :2], members[:, 2:], steps=5, batch_size=16, lr=1e-3, generator=gen)
    return emulator, members[:3, :2]


def test_generation_shape_and_determinism_per_seed():
    emulator, seeds = _fitted()
    a = emulator.sample(seeds, 7, generator=_gen(10), steps=4)
    b = emulator.sample(seeds, 7, generator=_gen(10), steps=4)
    c = emulator.sample(seeds, 7, generator=_gen(11), steps=4)
    assert a.shape == (3, 7, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    again, _ = _fitted()                                                          # same seed, same training
    assert torch.equal(again.sample(seeds, 7, generator=_gen(10), steps=4), a)


def test_state_dict_round_trip_carries_the_normalisation():
    emulator, seeds = _fitted()
    fresh = SeedEmulator(2, 2, hidden=(16,), time_dim=8, generator=_gen(99))
    assert not fresh.fitted
    fresh.load_state_dict(emulator.state_dict())
    assert fresh.fitted
    assert torch.equal(fresh.sample(seeds, 5, generator=_gen(4), steps=3),
                       emulator.sample(seeds, 5, generator=_gen(4), steps=3))


def test_bad_input():
    emulator, seeds = _fitted()
    with pytest.raises(RuntimeError, match="not fitted"):
        SeedEmulator(2, 2, hidden=(4,), generator=_gen(0)).sample(seeds, 3, generator=_gen(0))
    with pytest.raises(ValueError, match="S = 2"):
        emulator.sample(seeds[:, :1], 3, generator=_gen(0))
    with pytest.raises(ValueError, match="K = 2"):
        emulator.sample(torch.zeros(3, 2, 5), 3, generator=_gen(0))
    with pytest.raises(ValueError, match="finite"):
        emulator.sample(torch.full((1, 2, 2), float("nan")), 3, generator=_gen(0))
    with pytest.raises(TypeError, match="generator"):
        emulator.sample(seeds, 3, generator=0)
    with pytest.raises(TypeError, match="floating point"):
        emulator.sample(seeds.long(), 3, generator=_gen(0))
    with pytest.raises(ValueError, match="n_members"):
        emulator.sample(seeds, 0, generator=_gen(0))
    with pytest.raises(ValueError, match="one row per case"):
        emulator.fit(seeds, torch.zeros(2, 4, 2), steps=1, batch_size=2, lr=1e-3, generator=_gen(0))
    with pytest.raises(ValueError, match="spread must be finite and > 0"):
        emulator.fit(seeds, seeds, steps=1, batch_size=2, lr=1e-3, generator=_gen(0), spread=-1.0)
    with pytest.raises(ValueError, match="n_splits"):
        training_pairs(torch.zeros(2, 5, 3), 2, n_splits=3)
    with pytest.raises(ValueError, match="n_seeds"):
        training_pairs(torch.zeros(2, 5, 3), 5)
    with pytest.raises(ValueError, match=r"\[N >= 1"):
        pooled_spread(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="spread must be > 0"):
        seed_gaussian(seeds, torch.tensor([0.1, 0.0]))
    with pytest.raises(ValueError, match="clim_std and spread"):
        seed_features(seeds, clim_mean=0.0, clim_std=0.0, spread=1.0)
