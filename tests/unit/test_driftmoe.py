"""DriftMoE (commlab.ensembles.driftmoe): router weights, correctness mask, test-then-train order,
seeded determinism, the one-expert reduction, recovery times, and bad input."""

import numpy as np
import pytest
import torch

pytest.importorskip("river")
from river import tree  # noqa: E402
from river.datasets import synth  # noqa: E402

from commlab.ensembles import driftmoe as dm  # noqa: E402


def sea(n=600, drift_every=300, seed=0):
    concepts = [synth.SEA(variant=v, noise=0.1, seed=seed + v) for v in (0, 1)]
    return dm.drift_stream(concepts, n, drift_every)


def moe(n_experts=4, seed=0, **kw):
    return dm.DriftMoE(3, n_experts, generator=torch.Generator().manual_seed(seed), **kw)


def test_mixture_weights_sum_to_one():
    model = moe(6)
    stream, _ = sea(200)
    for x, y in stream[:50]:
        model.learn_one(x, y)
    for x, _ in stream[50:60]:
        w = model.weights_one(x)
        assert w.shape == (6,) and torch.all(w >= 0)
        assert abs(float(w.sum()) - 1.0) < 1e-6
    batch = dm.mixture_weights(torch.randn(5, 7, generator=torch.Generator().manual_seed(1)))
    assert torch.allclose(batch.sum(-1), torch.ones(5))


def test_correctness_mask_multi_hot_and_fallback():
    assert dm.correctness_mask([True, False, True], [0.9, 0.2, 0.6]).tolist() == [1.0, 0.0, 1.0]
    # none right: one-hot on the expert that gave the true answer the highest probability
    assert dm.correctness_mask([False, False, False], [0.1, 0.4, 0.3]).tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        dm.correctness_mask([True], [0.1, 0.2])


def test_router_is_trained_toward_the_mask():
    """Two fixed experts, one always right on x: the router's logit for it rises above the other's."""

    class Const:
        def __init__(self, label):
            self.label = label

        def predict_proba_one(self, x):
            return {self.label: 1.0}

        def learn_one(self, x, y):
            pass

    labels = iter([False, True])
    model = dm.DriftMoE(3, 2, top_k=1, lr=1e-2, expert_factory=lambda: Const(next(labels)),
                        generator=torch.Generator().manual_seed(0))
    x = {"a": 1.0, "b": 2.0, "c": 3.0}
    for _ in range(200):
        model.learn_one(x, True)
    assert model.route_one(x) == 1 and model.predict_one(x) is True


class Spy:
    """A river-style model that logs the order of calls."""

    def __init__(self):
        self.log = []

    def predict_one(self, x):
        self.log.append(("predict", x["i"]))
        return x["i"] % 2 == 0

    def learn_one(self, x, y):
        self.log.append(("learn", x["i"]))


def test_prequential_predicts_each_sample_before_learning_it():
    spy = Spy()
    stream = [({"i": i}, i % 2 == 0) for i in range(5)]
    result = dm.prequential(spy, stream)
    assert spy.log == [(k, i) for i in range(5) for k in ("predict", "learn")]
    assert result.correct.all() and result.accuracy == 1.0


def test_driftmoe_does_not_see_the_label_before_predicting():
    # a fresh tree knows no class: the first prediction must be None (hence wrong), never the label
    result = dm.prequential(moe(2), sea(5)[0])
    assert result.y_pred[0] is None and not result.correct[0]


def test_seeded_determinism():
    stream, _ = sea(300)
    a, b, c = (dm.prequential(moe(4, seed=s), stream) for s in (3, 3, 4))
    assert np.array_equal(a.routes, b.routes) and list(a.y_pred) == list(b.y_pred)
    assert not np.array_equal(a.routes, c.routes)
    s1, s2 = sea(100, seed=5)[0], sea(100, seed=5)[0]
    assert s1 == s2


def test_one_expert_reduces_to_that_expert():
    stream, _ = sea(600)
    single = dm.prequential(tree.HoeffdingTreeClassifier(), stream)
    mixture = dm.prequential(moe(1, top_k=1), stream)
    assert list(mixture.y_pred) == list(single.y_pred)
    assert np.all(mixture.routes == 0)


def test_task_variant_one_expert_per_class_learns():
    stream, _ = sea(800, drift_every=800)
    result = dm.prequential(moe(2, variant="task", classes=[False, True]), stream)
    assert result.accuracy > 0.65 and len(result.routes) == 0


def test_state_dict_round_trip():
    stream, _ = sea(300)
    model = moe(3)
    for x, y in stream[:200]:
        model.learn_one(x, y)
    state = model.state_dict()
    twin = moe(3, seed=9)
    twin.load_state_dict(state)
    for x, y in stream[200:]:
        assert model.predict_one(x) == twin.predict_one(x) and model.route_one(x) == twin.route_one(x)
        model.learn_one(x, y)
        twin.learn_one(x, y)


def test_drift_stream_abrupt_and_gradual():
    a = [({"v": 0}, 0)] * 10**4
    b = [({"v": 1}, 1)] * 10**4
    samples, drifts = dm.drift_stream([iter(a), iter(b)], 400, 100)
    assert drifts == [100, 200, 300]
    assert [y for _, y in samples] == [(t // 100) % 2 for t in range(400)]
    samples, _ = dm.drift_stream([iter(a), iter(b)], 200, 100, width=40, seed=0)
    labels = np.array([y for _, y in samples])
    assert labels[:60].sum() == 0 and labels[140:].all()  # far from the drift: pure concepts
    assert 0 < labels[80:120].sum() < 40  # inside the transition: a mixture


def test_sliding_accuracy_and_kappa():
    acc = dm.sliding_accuracy([1, 0, 1, 1], 2)
    assert np.allclose(acc, [1.0, 0.5, 0.5, 1.0])
    y = [0, 0, 1, 1]
    assert dm.cohen_kappa(y, y) == 1.0
    assert dm.cohen_kappa(y, [0, 1, 0, 1]) == pytest.approx(0.0)
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    assert dm.cohen_kappa(list(t), list(p)) == pytest.approx(sklearn.cohen_kappa_score(t, p))


def test_recovery_times_on_a_hand_built_curve():
    curve = np.full(30, 0.9)
    curve[10:14] = [0.7, 0.75, 0.85, 0.895]  # dips at 10, back within 0.01 of 0.9 at 13 -> 3 samples
    curve[20:] = [0.5] * 10  # second drift at 20 never recovers before the end -> censored at 10
    assert dm.recovery_times(curve, [10, 20], tolerance=0.01).tolist() == [3, 10]
    assert dm.recovery_times(np.full(10, 0.8), [5]).tolist() == [0]  # no dip: recovered at once


def test_bad_input():
    with pytest.raises(TypeError):
        dm.DriftMoE(3, 4, generator=0)
    with pytest.raises(ValueError):
        moe(4, top_k=5)
    with pytest.raises(ValueError):
        moe(4, variant="router")
    with pytest.raises(ValueError):
        moe(3, variant="task", classes=[0, 1])
    model = moe(2)
    with pytest.raises(ValueError):
        model.predict_one({"a": 1.0})
    with pytest.raises(ValueError):
        model.predict_one({"a": 1.0, "b": float("nan"), "c": 0.0})
    with pytest.raises(TypeError):
        model.predict_one([1.0, 2.0, 3.0])
    with pytest.raises(TypeError):
        dm.prequential(object(), [])
    with pytest.raises(ValueError):
        dm.prequential(Spy(), [])
    with pytest.raises(ValueError):
        dm.sliding_accuracy([], 3)
    with pytest.raises(ValueError):
        dm.recovery_times([0.5, 0.6, 0.7], [2, 1])
    with pytest.raises(ValueError):
        dm.recovery_times([0.5, 0.6, 0.7], [3])
    with pytest.raises(ValueError):
        dm.drift_stream([iter([])], 10, 5)
