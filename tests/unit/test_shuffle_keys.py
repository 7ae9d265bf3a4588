"""The keyed shuffles as implicit keys (what the OMDMA notebook stated as the claim omdma-key-privacy): a receiver
that de-shuffles with a wrong key gets a vector with no positional relation to the user's features, so what it
decodes is no better than decoding noise; the right key recovers the features."""

import math

import torch

from commlab import channels as ch
from commlab import semcom


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def smooth_features(b=400, k=2, n=98, seed=1):
    """Spatially smooth unit-power features with a position-dependent mean (strong positional structure)."""
    base = 0.5 * torch.linspace(-1, 1, n)
    raw = base + 0.5 * torch.cumsum(torch.randn(b, k, n, generator=gen(seed)), dim=-1) / math.sqrt(n)
    z = torch.complex(raw, raw.roll(5, dims=-1)).reshape(b * k, n)
    return ch.power_normalize(z).reshape(b, k, n)


def per_example_corr(a, b):
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    num = (a * b.conj()).sum(dim=1).real
    return (num / (a.abs().square().sum(dim=1) * b.abs().square().sum(dim=1)).sqrt()).mean().item()


def test_wrong_key_loses_the_positions_and_the_right_key_keeps_them():
    z = smooth_features()
    frames = list(range(z.shape[0]))
    access = semcom.ShuffledAccess(98, ["alice", "bob"], ch.MultiUserMAC(no=0.01))
    res = access.transmit(z, generator=gen(2), frames=frames)
    right = access.receive(res, 0, frames=frames)
    # the right key: the wanted features plus white interference of equal power, correlation about 1/sqrt(2)
    assert per_example_corr(right, z[:, 0]) > 0.6
    for key in ("eve", "mallory", "bob-guess"):
        wrong = access.receive(res, 0, key=key, frames=frames)
        assert abs(per_example_corr(wrong, z[:, 0])) < 0.05
        assert abs(per_example_corr(wrong, z[:, 1])) < 0.05  # nor the other user's
        # what is left is the value histogram only: the same power as the right-key vector
        assert abs(wrong.abs().square().mean().item() - right.abs().square().mean().item()) < 1e-4
        # its positional structure is gone: the mean profile over examples is flat, unlike the features'
        profile = wrong.real.mean(dim=0)
        assert profile.std().item() < 0.2 * z[:, 0].real.mean(dim=0).std().item()
    # a least-squares linear decoder fitted on the right-key vectors recovers the features; on wrong-key vectors
    # it does no better than on pure noise of the same mean and power
    target = torch.view_as_real(z[:, 0]).reshape(len(z), -1)

    def fit_and_score(x_train, x_test):
        a = torch.cat([torch.view_as_real(x_train).reshape(len(z), -1), torch.ones(len(z), 1)], dim=1)
        w = torch.linalg.lstsq(a[:300], target[:300]).solution
        b = torch.cat([torch.view_as_real(x_test).reshape(len(z), -1), torch.ones(len(z), 1)], dim=1)
        return (b[300:] @ w - target[300:]).square().mean().item()

    wrong = access.receive(res, 0, key="eve", frames=frames)
    noise = wrong.mean(dim=1, keepdim=True) + ch.complex_normal(wrong.shape, generator=gen(3)) * (
        (wrong - wrong.mean(dim=1, keepdim=True)).abs().square().mean(dim=1, keepdim=True).sqrt())
    good = fit_and_score(right, right)
    eavesdropper = fit_and_score(right, wrong)
    blind = fit_and_score(right, noise)
    assert good < 0.5 * eavesdropper
    assert eavesdropper < 1.2 * blind
