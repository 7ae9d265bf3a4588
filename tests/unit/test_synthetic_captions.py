"""The caption generator: deterministic per seed, the documented formula, and its checks."""

import pytest
import torch

from commlab.data.synthetic_captions import CaptionGenerator


def _images(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_same_seed_same_codes_and_captions():
    x, y = _images()
    a = CaptionGenerator(seed=3).fit(x)
    b = CaptionGenerator(seed=3).fit(x)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.projection, b.projection)
    assert torch.equal(a(x, y, torch.Generator().manual_seed(5)), b(x, y, torch.Generator().manual_seed(5)))
    c = CaptionGenerator(seed=4).fit(x)
    assert not torch.equal(a.codes, c.codes)
    assert not torch.equal(a(x, y, torch.Generator().manual_seed(5)), a(x, y, torch.Generator().manual_seed(6)))


def test_no_noise_no_dropout_gives_the_clean_formula():
    x, y = _images()
    gen = CaptionGenerator(noise=0.0, dropout=0.0, instance_scale=0.5, seed=1).fit(x)
    t = gen(x, y, torch.Generator().manual_seed(0))
    flat = x.reshape(len(x), -1)
    standard = (flat - flat.mean(0)) / flat.std(0)
    assert torch.allclose(t, gen.codes[y] + 0.5 * standard @ gen.projection.T, atol=1e-5)
    assert set(gen.codes.unique().tolist()) == {-1.0, 1.0}
    zero = CaptionGenerator(noise=0.0, dropout=0.0, instance_scale=0.0, seed=1)
    assert torch.equal(zero(x, y, torch.Generator()), zero.codes[y])


def test_dropout_rate_and_noise_level():
    x, y = _images(2000)
    gen = CaptionGenerator(noise=0.0, dropout=0.3, instance_scale=0.0, seed=2)
    t = gen(x, y, torch.Generator().manual_seed(0))
    assert (t == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)
    noisy = CaptionGenerator(noise=0.5, dropout=0.0, instance_scale=0.0, seed=2)
    assert (noisy(x, y, torch.Generator().manual_seed(0)) - noisy.codes[y]).std().item() == pytest.approx(0.5, rel=0.02)


def test_state_dict_round_trip_and_bad_input():
    x, y = _images()
    gen = CaptionGenerator(seed=0).fit(x)
    other = CaptionGenerator(seed=0)
    other.load_state_dict(gen.state_dict())
    assert torch.equal(other(x, y, torch.Generator().manual_seed(1)), gen(x, y, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="settings"):
        CaptionGenerator(seed=1).load_state_dict(gen.state_dict())
    with pytest.raises(ValueError, match="labels must lie"):
        gen(x, y + 10, torch.Generator())
    with pytest.raises(ValueError, match="pixels"):
        gen(torch.zeros(3, 10), y[:3], torch.Generator())
    with pytest.raises(ValueError, match="dropout"):
        CaptionGenerator(dropout=1.0)
    with pytest.raises(TypeError, match="generator"):
        gen(x, y, 0)
