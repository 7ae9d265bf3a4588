"""The learned factorized-prior feature codec (semcom.learned_codec): its bytes decode to exactly the features of
its test path, training lowers the loss, λ trades rate for distortion, the rate estimate matches the bytes."""

import pytest
import torch

from commlab.semcom.learned_codec import LearnedFeatureCodec, train_learned_codec
from commlab.semcom.metrics import bpfp


def _features(n=96, seed=0):
    """Correlated non-negative features [n, 4, 6, 6], like post-ReLU maps."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn((n, 1, 6, 6), generator=g)
    mix = torch.tensor([1.0, 0.8, -0.5, 0.3])[None, :, None, None]
    return torch.relu(base * mix + 0.3 * torch.randn((n, 4, 6, 6), generator=g))


def _trained(lam, steps=150, seed=0):
    x = _features()
    codec = LearnedFeatureCodec(4, mean=float(x.mean()), std=float(x.std()))
    losses = train_learned_codec(codec, x, lam=lam, steps=steps, batch_size=16, lr=1e-2,
                                 generator=torch.Generator().manual_seed(seed))
    return codec, x, losses


def test_bytes_decode_to_the_test_path_exactly_and_training_lowers_the_loss():
    codec, x, losses = _trained(16.0)
    assert sum(losses[-20:]) / 20 < losses[0]
    streams = codec.compress(x[:10])
    with torch.no_grad():
        fhat, bits = codec(x[:10])
    assert len(streams) == 10
    assert torch.equal(codec.decompress(streams), fhat)
    # the model's rate estimate and the rANS bytes agree to within the 6-byte header and 4-byte state per stream
    assert abs(8 * sum(len(s) for s in streams) - float(bits)) <= 10 * 8 * (6 + 4 + 1)


def test_lambda_trades_rate_for_distortion():
    x = _features(seed=1)
    out = {}
    for lam in (1.0, 64.0):
        codec, _, _ = _trained(lam)
        with torch.no_grad():
            fhat, _ = codec(x)
        out[lam] = (bpfp(codec.compress(x), x.numel()), float((fhat - x).square().mean()))
    assert out[1.0][0] < out[64.0][0] and out[1.0][1] > out[64.0][1]


def test_training_is_seeded_and_has_a_state_dict():
    a, _, la = _trained(8.0, steps=20, seed=3)
    b, _, lb = _trained(8.0, steps=20, seed=3)
    assert la == lb
    c = LearnedFeatureCodec(4, mean=0.0, std=1.0)
    c.load_state_dict(a.state_dict())
    x = _features(8, seed=2)
    assert c.compress(x) == a.compress(x) == b.compress(x)


def test_bad_input_is_rejected():
    codec = LearnedFeatureCodec(4, mean=0.0, std=1.0)
    with pytest.raises(ValueError, match="std"):
        LearnedFeatureCodec(4, mean=0.0, std=0.0)
    with pytest.raises(ValueError, match=r"\[N, 4, H, W\]"):
        codec.compress(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="finite"):
        codec.compress(torch.full((1, 4, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="sequence"):
        codec.decompress(b"abc")
    other = LearnedFeatureCodec(5, mean=0.0, std=1.0).compress(torch.zeros(1, 5, 2, 2))
    with pytest.raises(ValueError, match="channels"):
        codec.decompress(other)
    with pytest.raises(ValueError, match="batch_size"):
        train_learned_codec(codec, torch.zeros(4, 4, 2, 2), lam=1.0, steps=1, batch_size=8, lr=1e-2,
                            generator=torch.Generator())
    with pytest.raises(ValueError, match="lam"):
        train_learned_codec(codec, torch.zeros(4, 4, 2, 2), lam=0.0, steps=1, batch_size=2, lr=1e-2,
                            generator=torch.Generator())
