"""commlab.distributed.byzantine: robust data-parallel SGD (gather, attack the messages, aggregate, momentum
step) and the side-by-side loop that trains several such methods on one stacked model."""

import math

import pytest
import torch

from commlab.comm import SimComm
from commlab.distributed import robust as R
from commlab.distributed.byzantine import RobustSGD, fit_side_by_side
from commlab.seeding import SeedTree
from commlab.train.loop import fit


class Recording(R.Aggregator):
    """The mean, keeping every stack it was given."""

    name = "recording"

    def __init__(self):
        self.seen = []

    def _aggregate(self, x):
        self.seen.append(x.clone())
        return x.mean(dim=0)


def _grads(n, d, step, dtype=torch.float64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(100 + step), dtype=dtype)


def test_mean_without_attack_is_sgd_with_momentum_on_the_mean_gradient():
    n, d, lr, mu = 4, 6, 0.05, 0.9
    params = torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    start = params[0].clone()
    method = RobustSGD(SimComm(n), params, aggregator=R.Mean(), lr=lr, momentum=mu)
    assert torch.equal(params, start.expand(n, d))                  # the initial broadcast of worker 0
    reference = start.clone().requires_grad_(True)
    opt = torch.optim.SGD([reference], lr=lr, momentum=mu)
    for t in range(5):
        g = _grads(n, d, t)
        method.step(g)
        reference.grad = g.mean(dim=0)
        opt.step()
    assert torch.allclose(params, reference.detach().expand(n, d), atol=1e-14)


def test_the_aggregator_sees_the_honest_rows_and_the_attackers_messages():
    n, d, f, seed = 7, 5, 2, 3
    agg = Recording()
    attack = R.GaussianNoise(sigma=10.0)
    method = RobustSGD(SimComm(n), torch.zeros(n, d, dtype=torch.float64), aggregator=agg, lr=0.1, attack=attack,
                       byzantine=f, seed=seed)
    for t in range(3):
        method.step(_grads(n, d, t))
    for t, seen in enumerate(agg.seen):
        honest = _grads(n, d, t)
        assert torch.equal(seen[:n - f], honest[:n - f])
        assert torch.equal(seen, attack(honest, f, SeedTree(seed).torch("attack", t)))   # the step's own draws
        assert not torch.allclose(seen[n - f:], honest[n - f:])
    assert not torch.equal(agg.seen[0][n - f:], agg.seen[1][n - f:])                      # fresh draws each step


def test_every_replica_takes_the_same_step_byzantine_ones_included():
    n, d = 6, 9
    params = torch.zeros(n, d, dtype=torch.float64)
    method = RobustSGD(SimComm(n), params, aggregator=R.CoordinateMedian(), lr=0.1, attack=R.SignFlip(), byzantine=2)
    for t in range(4):
        method.step(_grads(n, d, t))
    assert bool((params == params[0]).all()) and params.abs().sum() > 0


def test_the_meter_counts_d_values_per_worker_and_step():
    n, d, steps = 5, 11, 4
    for dtype, width in ((torch.float32, 4), (torch.float64, 8)):
        method = RobustSGD(SimComm(n), torch.zeros(n, d, dtype=dtype), aggregator=R.FlagAggregator(r=2), lr=0.1,
                           attack=R.Drop(), byzantine=1)
        for t in range(steps):
            event = method.step(_grads(n, d, t, dtype))
            assert event.kind == "sync" and event.bytes == d * width
        summary = method.summary()
        # every worker sends d values per step; the initial broadcast is worker 0's d values
        assert summary["bytes_per_worker"] == pytest.approx(steps * d * width + d * width / n)
        assert summary["syncs"] == steps and summary["peak_bytes_per_sync"] == d * width and summary["steps"] == steps


def test_a_checkpoint_resumes_bit_for_bit():
    n, d = 5, 8

    def build():
        return RobustSGD(SimComm(n), torch.zeros(n, d), aggregator=R.GeometricMedian(), lr=lambda t: 0.1 / (1 + t),
                         momentum=0.5, attack=R.GaussianNoise(3.0), byzantine=1, seed=9)

    straight = build()
    for t in range(6):
        straight.step(_grads(n, d, t, torch.float32))
    first = build()
    for t in range(3):
        first.step(_grads(n, d, t, torch.float32))
    resumed = build()
    resumed.load_state_dict(first.state_dict())
    for t in range(3, 6):
        resumed.step(_grads(n, d, t, torch.float32))
    assert torch.equal(resumed.params, straight.params) and torch.equal(resumed.buffer, straight.buffer)
    assert resumed.summary() == straight.summary()


def test_sign_flipping_stalls_the_mean_but_not_the_median():
    # quadratic: worker i's honest gradient is θ − c; 3 of 15 send −4 × theirs, so the mean of the
    # messages is (12 − 12)/15 (θ − c) = 0 and the mean never moves, while the median converges to c
    n, f, d = 15, 3, 4
    c = torch.arange(1.0, d + 1, dtype=torch.float64)
    out = {}
    for name, agg in (("mean", R.Mean()), ("median", R.CoordinateMedian()), ("flag", R.FlagAggregator(r=1))):
        params = torch.zeros(n, d, dtype=torch.float64)
        method = RobustSGD(SimComm(n), params, aggregator=agg, lr=0.1, momentum=0.5, attack=R.SignFlip(), byzantine=f)
        for _ in range(100):
            method.step(params - c)
        out[name] = float((params[0] - c).norm())
    assert out["mean"] == pytest.approx(float(c.norm()), abs=1e-12)
    assert out["median"] < 1e-6
    # the flag aggregate has the honest direction and norm 12/r, a fixed step size: it ends within a step of c
    assert out["flag"] < 0.1 * 12 / (1 - 0.5)


def test_side_by_side_equals_each_method_trained_alone():
    n, d, steps = 4, 6, 5
    arms = [lambda: R.Mean(), lambda: R.TrimmedMean(1), lambda: R.FlagAggregator(r=1, rescale="median_norm")]
    target = torch.linspace(-1, 1, d, dtype=torch.float64)

    def honest(params, t):                                   # rows of params [K, d] -> gradients, per-row noise
        noise = torch.randn(params.shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        return params - target + noise

    stacked = torch.zeros(len(arms) * n, d, dtype=torch.float64)
    methods = [RobustSGD(SimComm(n), stacked[k * n:(k + 1) * n], aggregator=make(), lr=0.1, attack=R.SignFlip(),
                         byzantine=1) for k, make in enumerate(arms)]
    calls = []

    def oracle(t):
        calls.append(t)
        g = torch.cat([honest(stacked[k * n:(k + 1) * n], t * 10 + k) for k in range(len(arms))])
        return (g ** 2).sum(dim=1), g

    records = fit_side_by_side(methods, oracle, steps, every=2,
                               evaluate=lambda step: [{"dist": float((m.params[0] - target).norm())} for m in methods])
    assert calls == list(range(steps))
    assert [(r["step"], r["method"]) for r in records] == [(s, k) for s in (0, 2, 4, 5) for k in range(len(arms))]
    assert math.isnan(records[0]["loss"]) and records[-1]["syncs"] == steps
    for k, make in enumerate(arms):
        alone = torch.zeros(n, d, dtype=torch.float64)
        method = RobustSGD(SimComm(n), alone, aggregator=make(), lr=0.1, attack=R.SignFlip(), byzantine=1)

        def own_oracle(t, alone=alone, k=k):
            g = honest(alone, t * 10 + k)
            return (g ** 2).sum(dim=1), g

        rows = fit(method, own_oracle, steps, every=steps)
        assert torch.equal(alone, stacked[k * n:(k + 1) * n])
        assert rows[-1]["loss"] == pytest.approx(records[-len(arms) + k]["loss"], rel=1e-12)
        assert records[-len(arms) + k]["dist"] == float((alone[0] - target).norm())


def test_bad_arguments_are_refused():
    comm, params = SimComm(4), torch.zeros(4, 3)
    with pytest.raises(TypeError, match="Aggregator"):
        RobustSGD(comm, params, aggregator=lambda x: x.mean(0), lr=0.1)
    with pytest.raises(TypeError, match="Attack"):
        RobustSGD(comm, params, aggregator=R.Mean(), lr=0.1, attack="gaussian", byzantine=1)
    with pytest.raises(ValueError, match="need an attack"):
        RobustSGD(comm, params, aggregator=R.Mean(), lr=0.1, byzantine=1)
    with pytest.raises(ValueError, match=r"byzantine must be in \[0, 3\]"):
        RobustSGD(comm, params, aggregator=R.Mean(), lr=0.1, attack=R.Drop(), byzantine=4)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        RobustSGD(comm, params, aggregator=R.Mean(), lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="lr"):
        RobustSGD(comm, params, aggregator=R.Mean(), lr=0.0)
    method = RobustSGD(comm, params, aggregator=R.Mean(), lr=0.1)
    with pytest.raises(ValueError, match="shape of params"):
        method.step(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="NaN or Inf"):
        method.step(torch.full((4, 3), math.nan))
    with pytest.raises(ValueError, match="gradient rows"):
        fit_side_by_side([method], lambda t: (torch.zeros(5), torch.zeros(5, 3)), 1)
    with pytest.raises(ValueError, match="one dict per method"):
        fit_side_by_side([method], lambda t: (torch.zeros(4), torch.zeros(4, 3)), 1, evaluate=lambda s: [])
    with pytest.raises(TypeError, match="Methods"):
        fit_side_by_side([], lambda t: None, 1)


def test_a_diverged_step_raises_or_is_skipped():
    n, d = 4, 3
    bad = torch.ones(n, d)
    bad[1, 2] = math.inf
    raising = RobustSGD(SimComm(n), torch.zeros(n, d), aggregator=R.Mean(), lr=0.1)
    with pytest.raises(ValueError, match="NaN or Inf"):
        raising.step(bad)
    params = torch.zeros(n, d)
    skipping = RobustSGD(SimComm(n), params, aggregator=R.Mean(), lr=0.1, attack=R.SignFlip(), byzantine=1,
                         nonfinite="skip")
    skipping.step(torch.ones(n, d))
    after_one = params.clone()
    skipping.step(bad)                                   # no update, the momentum buffer untouched
    assert torch.equal(params, after_one) and skipping.skipped == 1 and skipping.summary()["syncs"] == 2
    skipping.step(torch.ones(n, d))                      # finite again: training goes on
    assert not torch.equal(params, after_one) and skipping.state_dict()["skipped"] == 1
    with pytest.raises(ValueError, match="nonfinite"):
        RobustSGD(SimComm(n), torch.zeros(n, d), aggregator=R.Mean(), lr=0.1, nonfinite="ignore")
