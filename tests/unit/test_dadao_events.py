"""DADAO's events (commlab.distributed.dadao): a gossip jump conserves Σ_k (y_k + z_k) and Σ_k z̃_k and
touches only its two ends, after both ends' lazy ODE updates; a gradient jump is the brief's; the fast
loop of play() equals the event-by-event methods; a seeded stream replays bit for bit; state_dict
resumes exactly; the event streams follow their rates and graphs; DADAO converges on a tiny problem."""

import numpy as np
import pytest
import torch

from commlab.distributed import graphs as G
from commlab.distributed.dadao import DADAO, Events, dadao_events
from commlab.problems.ridge import heterogeneous_ridge

N, D = 5, 3


def _problem(seed=0):
    p = heterogeneous_ridge(N, D, 20, generator=torch.Generator().manual_seed(seed), lam=0.2)
    H, c = p.arrays()
    return p, (lambda i, x: H[i] @ x - c[i])


def _method(seed=0, chi_1_star=0.8):
    p, grad = _problem(seed)
    x0 = np.random.default_rng(seed).standard_normal((N, D))
    return p, DADAO(grad, x0, L=p.L_max, mu=p.mu_min, chi_1_star=chi_1_star)


def _scramble(m, rng):
    m.state[...] = rng.standard_normal(m.state.shape)
    m.last[...] = rng.uniform(0, 1, m.n)
    m.time = float(m.last.max())


def test_gossip_conserves_y_plus_z_and_z_tilde():
    _, m = _method()
    rng = np.random.default_rng(1)
    _scramble(m, rng)
    t = m.time + 0.7
    before = np.stack([m.flow.propagator(t - m.last[k]) @ m.state[k] for k in range(N)])  # all at time t
    m.gossip_step(1, 3, t)
    after = before.copy()
    after[[1, 3]] = m.state[[1, 3]]
    np.testing.assert_allclose((after[:, 2] + after[:, 4]).sum(0), (before[:, 2] + before[:, 4]).sum(0), atol=1e-12)
    np.testing.assert_allclose(after[:, 5].sum(0), before[:, 5].sum(0), atol=1e-10)
    # only z, z̃ of the two ends moved, by the brief's jump
    k = m.constants
    w = before[1, 2] + before[1, 4] - before[3, 2] - before[3, 4]
    np.testing.assert_allclose(after[1, 4], before[1, 4] - k.beta * w, atol=1e-12)
    np.testing.assert_allclose(after[3, 5], before[3, 5] + k.beta_tilde * w, atol=1e-10)
    np.testing.assert_allclose(after[[1, 3]][:, :4], before[[1, 3]][:, :4], atol=1e-12)
    assert m.last[1] == m.last[3] == t


def test_gossip_advances_the_partner_node():
    """The classic bug: forgetting the partner's lazy ODE update. Node j's rows other than z, z̃ must be
    its state flowed to the event time."""
    _, m = _method()
    _scramble(m, np.random.default_rng(2))
    t = m.time + 3.0
    flowed = m.flow.propagator(t - m.last[4]) @ m.state[4]
    m.gossip_step(0, 4, t)
    np.testing.assert_allclose(m.state[4, :4], flowed[:4], atol=1e-12)


def test_gradient_jump_is_the_briefs():
    p, m = _method()
    _scramble(m, np.random.default_rng(3))
    t = m.time + 0.4
    s = m.flow.propagator(t - m.last[2]) @ m.state[2]
    others = m.state[[0, 1, 3, 4]].copy()
    m.gradient_step(2, t)
    k = m.constants
    r = (p.H[2].numpy() @ s[0] - p.c[2].numpy()) - k.nu * s[0] - s[3]
    np.testing.assert_allclose(m.state[2, 0], s[0] - k.gamma * r, atol=1e-12)
    np.testing.assert_allclose(m.state[2, 1], s[1] - k.gamma_tilde * r, atol=1e-12)
    np.testing.assert_allclose(m.state[2, 3], s[3] + (k.delta + k.delta_tilde) * r, atol=1e-12)
    np.testing.assert_allclose(m.state[2, [2, 4, 5]], s[[2, 4, 5]], atol=1e-12)
    np.testing.assert_array_equal(m.state[[0, 1, 3, 4]], others)
    assert m.gradients == 1 and m.communications == 0


def _stream(seed=0, horizon=40.0):
    return dadao_events(N, [G.cycle_graph(N)], 3.0, horizon=horizon, seed=seed)


def test_play_equals_event_by_event():
    p, fast = _method()
    _, slow = _method()
    ev = _stream()
    fast.play(ev, x_star=p.x_star.numpy(), every=7)
    for t, kind, i, j in zip(ev.time, ev.kind, ev.i, ev.j, strict=True):
        slow.gradient_step(int(i), t) if kind == 0 else slow.gossip_step(int(i), int(j), t)
    np.testing.assert_allclose(fast.state, slow.state, rtol=1e-12, atol=1e-13)
    assert (fast.gradients, fast.communications) == (slow.gradients, slow.communications) == (ev.gradients,
                                                                                              ev.communications)


def test_seeded_replay_is_identical_and_seeds_differ():
    p, a = _method()
    _, b = _method()
    ta = a.play(_stream(seed=5), x_star=p.x_star.numpy(), every=10)
    tb = b.play(_stream(seed=5), x_star=p.x_star.numpy(), every=10)
    np.testing.assert_array_equal(a.state, b.state)
    for x, y in zip(ta, tb, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(_stream(seed=5).time, _stream(seed=6).time)


def test_state_dict_resumes_exactly():
    p, whole = _method()
    _, part = _method()
    ev = _stream()
    half = len(ev) // 2
    whole.play(ev, x_star=p.x_star.numpy())
    part.play(Events(*(a[:half] for a in ev)), x_star=p.x_star.numpy())
    _, resumed = _method()
    resumed.load_state_dict(part.state_dict())
    resumed.play(Events(*(a[half:] for a in ev)), x_star=p.x_star.numpy())
    np.testing.assert_array_equal(resumed.state, whole.state)
    _, other = _method(chi_1_star=2.0)
    with pytest.raises(ValueError, match="constants"):
        other.load_state_dict(part.state_dict())


def test_converges_linearly_on_a_tiny_problem():
    p, m = _method()
    n_events = 60000
    ev = dadao_events(N, [G.path_graph(N)], 4.0, horizon=n_events / (N + 4.0), seed=0)
    tr = m.play(ev, x_star=p.x_star.numpy(), every=500)
    assert tr.distance[-1] < 1e-10 * tr.distance[0]
    mid = len(tr.distance) // 2  # linear: the log-distance keeps falling over the second half
    assert tr.distance[-1] < 1e-3 * tr.distance[mid // 2]
    assert tr.first_below(1e-6, "events") < tr.events[-1]
    assert tr.first_below(0.0) == np.inf


def test_event_rates_and_time_varying_graphs():
    graphs = [G.cycle_graph(N), G.star_graph(N), G.complete_graph(N)]
    ev = dadao_events(N, graphs, 8.0, horizon=3000.0, seed=1, switch_rate=2.0)
    assert abs(ev.gradients / 3000.0 - N) < 0.2  # total gradient rate n (1 per node)
    assert abs(ev.communications / 3000.0 - 8.0) < 0.3  # total gossip rate λ_mix
    assert np.all(np.diff(ev.time) >= 0)
    gossip = ev.kind == 1
    current = (np.floor(ev.time[gossip] * 2.0).astype(int)) % 3
    for g, edges in enumerate(graphs):
        pairs = set(zip(ev.i[gossip][current == g].tolist(), ev.j[gossip][current == g].tolist(), strict=True))
        assert pairs <= set(edges) and len(pairs) == len(edges)  # every edge of the current graph, nothing else
    capped = dadao_events(N, graphs, 8.0, horizon=3000.0, seed=1, switch_rate=2.0, max_events=100)
    assert len(capped) == 100 and np.array_equal(capped.time, ev.time[:100])


def test_refusals():
    p, m = _method()
    with pytest.raises(ValueError, match="time order"):
        m.gradient_step(0, 1.0)
        m.gradient_step(1, 0.5)
    with pytest.raises(ValueError, match="distinct"):
        m.gossip_step(2, 2, 2.0)
    with pytest.raises(ValueError, match="x_star"):
        m.play(_stream(), x_star=np.zeros(D + 1))
    with pytest.raises(ValueError, match="non-zero"):
        m.play(_stream(), x_star=np.zeros(D))
    with pytest.raises(ValueError, match="x0"):
        DADAO(lambda i, x: x, np.zeros(4), L=1.0, mu=0.5, chi_1_star=1.0)
    with pytest.raises(TypeError, match="grad"):
        DADAO(None, np.zeros((3, 2)), L=1.0, mu=0.5, chi_1_star=1.0)
    with pytest.raises(ValueError, match="switch_rate"):
        dadao_events(N, [G.cycle_graph(N), G.star_graph(N)], 1.0, horizon=1.0, seed=0)
    with pytest.raises(ValueError, match="non-empty"):
        dadao_events(N, [], 1.0, horizon=1.0, seed=0)
    with pytest.raises(ValueError, match="lambda_mix"):
        dadao_events(N, [G.cycle_graph(N)], 0.0, horizon=1.0, seed=0)
