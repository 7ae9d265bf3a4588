"""Decentralised flow matching: the mixture identity at float precision on a Gaussian-mixture toy, the exact
velocity against the Gaussian closed form, top-k renormalisation, the routed mixture velocity, the router
learning cluster ids with time conditioning, and the equal-FLOP accounting."""

import numpy as np
import pytest
import torch

from commlab.ensembles.decentralized_flow import (
    GaussianMixture,
    RoutedVelocity,
    TimeRouter,
    fit_router,
    router_accuracy,
    split_steps,
    top_k_weights,
    training_flops,
)
from commlab.models.flow_matching import FlowMatchingMLP, gaussian_velocity, sample_ode

CLUSTERS = [[0, 1], [2, 3], [4, 5], [6, 7]]


def _grid():
    g = torch.linspace(-3, 3, 25, dtype=torch.float64)
    xy = torch.cartesian_prod(g, g)                                               # [625, 2]
    ts = torch.tensor([0.0, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0], dtype=torch.float64)
    return xy.repeat(len(ts), 1), ts.repeat_interleave(xy.shape[0])


def test_mixture_identity_holds_at_float_precision():
    # v(x, t) = Σ_k P(k | x_t = x) v_k(x, t): exact cluster posteriors and per-cluster velocities
    gm = GaussianMixture.ring(8, radius=2.0, std=0.25)
    x, t = _grid()
    experts = [gm.components(c).velocity for c in CLUSTERS]
    mix = RoutedVelocity(experts, lambda x, t: gm.cluster_posterior(x, t, CLUSTERS))
    err = (mix(x, t) - gm.velocity(x, t)).abs().max()
    assert float(err) < 1e-9
    # and it is not trivially satisfied: the posterior-free average of the experts is far off
    avg = RoutedVelocity(experts, lambda x, t: torch.full((x.shape[0], 4), 0.25, dtype=torch.float64))
    assert float((avg(x, t) - gm.velocity(x, t)).abs().max()) > 0.5


def test_unequal_weights_and_stds_identity():
    gm = GaussianMixture([[0.0, 0.0], [2.0, 1.0], [-1.0, 3.0]], [0.3, 0.7, 0.5], [0.2, 0.5, 0.3])
    x, t = _grid()
    clusters = [[0, 2], [1]]
    mix = RoutedVelocity([gm.components(c).velocity for c in clusters],
                         lambda x, t: gm.cluster_posterior(x, t, clusters))
    assert float((mix(x, t) - gm.velocity(x, t)).abs().max()) < 1e-9


def test_single_component_velocity_is_the_gaussian_closed_form():
    gm = GaussianMixture([[1.5, -0.5]], [0.4], [1.0])
    x, t = _grid()
    assert torch.allclose(gm.velocity(x, t), gaussian_velocity(x, t, torch.tensor([1.5, -0.5]), 0.4), atol=1e-10)


def test_exact_velocity_transports_noise_to_the_mixture():
    gm = GaussianMixture.ring(4, radius=2.0, std=0.2)
    gen = torch.Generator().manual_seed(0)
    x = sample_ode(gm.velocity, torch.randn(4000, 2, dtype=torch.float64, generator=gen), steps=200, method="heun")
    # every sample lands near one ring component, in roughly equal shares
    nearest = torch.cdist(x, gm.means).min(1)
    assert float(nearest.values.mean()) < 0.3
    share = torch.bincount(nearest.indices, minlength=4).double() / 4000
    assert float((share - 0.25).abs().max()) < 0.04


def test_posterior_and_sampling():
    gm = GaussianMixture.ring(8)
    x, t = _grid()
    post = gm.posterior(x, t)
    assert torch.allclose(post.sum(1), torch.ones(len(x), dtype=torch.float64))
    assert torch.allclose(gm.posterior(x[:5], 1.0), torch.full((5, 8), 1 / 8, dtype=torch.float64))
    x0, m = gm.sample(20_000, generator=torch.Generator().manual_seed(1))
    assert float((x0 - gm.means[m]).std()) == pytest.approx(0.2, rel=0.03)
    assert torch.allclose(gm.velocity(x[:3], 1.0), x[:3])                       # x − E x₀, E x₀ = 0 on the ring
    with pytest.raises(ValueError, match="t must lie"):
        gm.velocity(x[:2], 1.5)
    with pytest.raises(ValueError, match="partition"):
        gm.cluster_posterior(x[:2], 0.5, [[0, 1]])
    with pytest.raises(ValueError, match="stds"):
        GaussianMixture([[0.0]], [0.0], [1.0])


def test_top_k_weights_renormalise():
    gen = torch.Generator().manual_seed(2)
    probs = torch.softmax(torch.randn(500, 6, generator=gen), dim=1)
    for k in (1, 2, 3, 6):
        w = top_k_weights(probs, k)
        assert torch.allclose(w.sum(1), torch.ones(500), atol=1e-6)
        assert torch.equal((w > 0).sum(1), torch.full((500,), k))
        kept = torch.topk(probs, k, dim=1).indices
        expected = probs.gather(1, kept) / probs.gather(1, kept).sum(1, keepdim=True)
        assert torch.allclose(w.gather(1, kept), expected)
    assert torch.equal(top_k_weights(probs, 1).argmax(1), probs.argmax(1))
    assert torch.allclose(top_k_weights(probs, 6), probs)
    with pytest.raises(ValueError, match="sum to one"):
        top_k_weights(probs * 2, 1)
    with pytest.raises(ValueError, match="k must be"):
        top_k_weights(probs, 7)


def test_routed_velocity_sparse_matches_dense_weighting():
    gen = torch.Generator().manual_seed(3)
    experts = [FlowMatchingMLP(3, hidden=(16,), generator=gen) for _ in range(4)]
    router = TimeRouter(3, 4, hidden=(16,), generator=gen)
    x, t = torch.randn(64, 3, generator=gen), torch.rand(64, generator=gen)
    with torch.no_grad():
        v_all = torch.stack([e(x, t) for e in experts], dim=1)                   # [B, K, d]
        for k in (None, 1, 2):
            mix = RoutedVelocity(experts, router.probabilities, top_k=k)
            w = mix.weights(x, t)
            assert torch.allclose(mix(x, t), (w[:, :, None] * v_all).sum(1), atol=1e-6)
        top1 = RoutedVelocity(experts, router.probabilities, top_k=1)(x, t)
        pick = router.probabilities(x, t).argmax(1)
        assert torch.allclose(top1, v_all[torch.arange(64), pick], atol=1e-6)
    with pytest.raises(ValueError, match="router returned"):
        RoutedVelocity(experts[:3], router.probabilities)(x, t)


def test_router_learns_clusters_and_needs_time():
    # two clusters at ±2 in every coordinate: separable at small t, indistinguishable at t = 1
    gen = torch.Generator().manual_seed(4)
    labels = torch.randint(2, (2000,), generator=gen)
    data = (4 * labels[:, None].float() - 2) + 0.3 * torch.randn(2000, 4, generator=gen)
    router = TimeRouter(4, 2, hidden=(32,), generator=gen)
    state = {k: v.clone() for k, v in router.state_dict().items()}
    losses = fit_router(router, data, labels, steps=400, batch_size=128, lr=3e-3, generator=gen)
    assert losses[-50:].mean() < losses[:10].mean()
    acc = router_accuracy(router, data, labels, [0.0, 0.5, 1.0], generator=gen)
    assert acc[0] > 0.99 and acc[1] > 0.9
    assert abs(acc[2] - 0.5) < 0.06                                                # chance at pure noise
    assert torch.allclose(router.probabilities(data[:3], 1.0).sum(1), torch.ones(3))
    fresh = TimeRouter(4, 2, hidden=(32,), generator=torch.Generator())
    fresh.load_state_dict(router.state_dict())
    assert torch.equal(fresh(data[:5], 0.2), router(data[:5], 0.2))
    assert any(not torch.equal(state[k], v) for k, v in router.state_dict().items())
    with pytest.raises(ValueError, match="labels"):
        fit_router(router, data, labels + 5, steps=1, batch_size=2, lr=1e-3, generator=gen)


def test_router_training_is_deterministic():
    def run():
        gen = torch.Generator().manual_seed(5)
        data, labels = torch.randn(100, 2, generator=gen), torch.randint(3, (100,), generator=gen)
        router = TimeRouter(2, 3, hidden=(8,), generator=gen)
        return fit_router(router, data, labels, steps=20, batch_size=16, lr=1e-3, generator=gen)
    assert np.array_equal(run(), run())


def test_equal_flop_accounting():
    gen = torch.Generator().manual_seed(6)
    model = FlowMatchingMLP(64, hidden=(256, 256), generator=gen)
    weights = (64 + 32) * 256 + 256 * 256 + 256 * 64
    assert training_flops(model, 10) == 6.0 * weights * 10
    # K experts of one architecture sharing the monolithic budget of 2,000 steps x 128 spend its FLOPs
    mono = training_flops(model, 2000 * 128)
    for shares in ([1, 1, 1, 1], [412, 290, 377, 269], [1, 0, 2]):
        steps = split_steps(2000, shares)
        assert sum(steps) == 2000
        assert sum(training_flops(model, s * 128) for s in steps) == mono
        exact = 2000 * np.asarray(shares) / np.sum(shares)
        assert np.abs(np.asarray(steps) - exact).max() < 1
    assert split_steps(2000, [1, 1, 1, 1]) == [500] * 4
    assert split_steps(10, [1, 1, 1]) == [4, 3, 3]
    with pytest.raises(ValueError, match="shares"):
        split_steps(10, [0, 0])
    with pytest.raises(ValueError, match="nn.Linear"):
        training_flops(torch.nn.ReLU(), 1)
