"""Byzantine attacks in commlab.distributed.robust: what each sends, shapes, seeding, ALIE's z_max."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch

from commlab.distributed import robust as R


def honest(n=10, d=7, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 1.0


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(R.ATTACKS))
@pytest.mark.parametrize("f", [0, 3])
def test_attacks_replace_the_last_f_rows_only(name, f):
    x = honest()
    before = x.clone()
    out = R.ATTACKS[name]()(x, f, generator=gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, before)                              # the input is not changed
    assert torch.equal(out[:10 - f], x[:10 - f])               # honest rows pass through
    assert f == 0 or not torch.allclose(out[10 - f:], x[10 - f:])


def test_what_each_attack_sends():
    x, f = honest(), 3
    good, mu = x[:7], x[:7].mean(dim=0)
    assert torch.equal(R.SignFlip()(x, f)[7:], -4.0 * x[7:])
    assert torch.equal(R.Drop()(x, f)[7:], torch.zeros(3, 7, dtype=x.dtype))
    ipm = R.InnerProductManipulation(epsilon=0.5)(x, f)[7:]
    assert torch.allclose(ipm, (-0.5 * mu).expand(3, -1))
    assert bool((ipm @ mu < 0).all())                           # negative inner product with the honest mean
    alie = R.ALittleIsEnough(z=1.5)(x, f)[7:]
    by_hand = [[sum(c) / 7 - 1.5 * math.sqrt(sum((v - sum(c) / 7) ** 2 for v in c) / 6) for c in zip(*good.tolist(),
                                                                                                    strict=True)]]
    assert torch.allclose(alie, torch.tensor(by_hand * 3, dtype=x.dtype), atol=1e-12)
    noise = R.GaussianNoise(sigma=200.0)(torch.zeros(2000, 50), 1999, generator=gen(2))[1:]
    assert 195 < float(noise.std()) < 205 and abs(float(noise.mean())) < 1.0


def test_random_attacks_follow_their_generator():
    x = honest()
    attack = R.GaussianNoise()
    assert torch.equal(attack(x, 3, generator=gen(5)), attack(x, 3, generator=gen(5)))
    assert not torch.equal(attack(x, 3, generator=gen(5)), attack(x, 3, generator=gen(6)))
    with pytest.raises(TypeError, match="explicit torch.Generator"):
        attack(x, 3)
    assert torch.equal(R.SignFlip()(x, 3), R.SignFlip()(x, 3, generator=gen(9)))   # deterministic ones ignore it


def test_alie_z_max_formula():
    # s = floor(N/2 + 1) - f honest workers to sway; z_max = Phi^-1((N - s) / N)
    assert math.isclose(R.alie_z_max(50, 24), NormalDist().inv_cdf(48 / 50))   # s = 2
    assert math.isclose(R.alie_z_max(50, 24), 1.7507, abs_tol=1e-4)
    assert math.isclose(R.alie_z_max(15, 3), NormalDist().inv_cdf(10 / 15))    # s = 5: z = 0.4307
    assert math.isclose(R.alie_z_max(15, 3), 0.4307, abs_tol=1e-4)
    zs = [R.alie_z_max(20, f) for f in range(1, 11)]
    assert all(a < b for a, b in zip(zs, zs[1:], strict=False))   # more attackers, a bolder shift
    x = honest(15, 4)
    mu, sd = x[:12].mean(dim=0), x[:12].std(dim=0)
    assert torch.allclose(R.ALittleIsEnough()(x, 3)[12:], (mu - R.alie_z_max(15, 3) * sd).expand(3, -1))
    with pytest.raises(ValueError, match=r"f must be in \[0, 7\]"):
        R.alie_z_max(15, 8)


def test_alie_stays_inside_the_honest_spread_and_moves_the_median():
    # the paper's point: the forged value is within one standard deviation per coordinate, yet it
    # drags a coordinate-wise rule away from the honest median more than far-away noise does
    x = honest(15, 2000, seed=3)
    forged = R.ALittleIsEnough()(x, 3)
    noisy = R.GaussianNoise()(x, 3, generator=gen(4))
    clean = R.CoordinateMedian()(x[:12])
    assert bool(((forged[12:] - x[:12].mean(dim=0)).abs() <= x[:12].std(dim=0)).all())
    shift_alie = float((R.CoordinateMedian()(forged) - clean).mean())      # -0.28 at this seed
    shift_noise = float((R.CoordinateMedian()(noisy) - clean).mean())      # -0.002
    assert shift_alie < -0.15 and abs(shift_noise) < 0.1 * abs(shift_alie)


def test_bad_attack_arguments():
    x = honest()
    with pytest.raises(ValueError, match=r"f must be in \[0, 9\]"):
        R.SignFlip()(x, 10)
    with pytest.raises(ValueError, match=r"f must be in \[0, 8\]"):
        R.ALittleIsEnough(z=1.0)(x, 9)                          # needs two honest rows for a std
    with pytest.raises(ValueError, match="NaN or Inf"):
        R.Drop()(x.masked_fill(x > 2, math.inf), 1)
    with pytest.raises(ValueError, match="sigma"):
        R.GaussianNoise(sigma=0.0)


def test_flip_labels_is_a_data_level_attack():
    y = torch.tensor([0, 1, 2, 9, 4])
    assert R.flip_labels(y, 10).tolist() == [9, 8, 7, 0, 5]
    assert torch.equal(R.flip_labels(R.flip_labels(y, 10), 10), y)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 8\]"):
        R.flip_labels(y, 9)
    with pytest.raises(TypeError, match="integer"):
        R.flip_labels(y.float(), 10)
