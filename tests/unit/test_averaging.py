"""Output/weight averaging, temperature fitting and the FalseFalseTrue rate in
commlab.ensembles.averaging."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from commlab.ensembles import averaging as av


def test_output_average_is_the_weighted_mean_of_logits():
    a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 3.0]])
    assert np.allclose(av.output_average([a, b]), [[0.5, 1.5]])
    assert np.allclose(av.output_average([a, b], weights=[3, 1]), [[0.75, 0.75]])
    with pytest.raises(ValueError, match="weights"):
        av.output_average([a, b], weights=[1, -1])
    with pytest.raises(ValueError, match="shape"):
        av.output_average([a, np.zeros((2, 2))])
    with pytest.raises(ValueError, match="at least one"):
        av.output_average([])


def test_nll_and_log_softmax():
    logits = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])
    assert np.allclose(np.exp(av.log_softmax(logits)).sum(1), 1.0)
    assert av.nll(logits, [0, 0]) == pytest.approx((np.log(2) + np.log(4 / 3)) / 2)
    with pytest.raises(ValueError, match="labels"):
        av.nll(logits, [0, 2])


def test_fit_temperature_recovers_the_scale_of_overconfident_logits():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(20000, 5)) * 1.5
    labels = np.array([rng.choice(5, p=p) for p in np.exp(av.log_softmax(true_logits))])
    assert av.fit_temperature(true_logits * 4.0, labels) == pytest.approx(4.0, rel=0.05)
    assert av.fit_temperature(true_logits, labels) == pytest.approx(1.0, rel=0.05)
    with pytest.raises(ValueError, match="bounds"):
        av.fit_temperature(true_logits, labels, bounds=(0.0, 10.0))


def test_falsefalsetrue_rate_by_hand():
    y = np.array([0, 1, 2, 3])
    a = np.array([1, 1, 0, 0])  # wrong on 0, 2, 3
    b = np.array([2, 0, 1, 3])  # wrong on 0, 1, 2
    ens = np.array([0, 1, 0, 3])  # right on 0, 1, 3
    assert av.falsefalsetrue_rate(a, b, ens, y) == pytest.approx(0.25)  # only sample 0
    with pytest.raises(ValueError, match="1-D"):
        av.falsefalsetrue_rate(a, b, ens, y[:3])


def test_interpolate_numpy_and_torch_and_linear_models_agree_with_output_averaging():
    rng = np.random.default_rng(1)
    theta_a = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=3)}
    theta_b = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=3)}
    mid = av.interpolate(theta_a, theta_b, 0.5)
    x = rng.normal(size=(10, 4))
    logits = [x @ t["w"].T + t["b"] for t in (theta_a, theta_b)]
    assert np.allclose(x @ mid["w"].T + mid["b"], av.output_average(logits))
    assert np.allclose(av.interpolate(theta_a, theta_b, 0.0)["w"], theta_a["w"])
    state = av.interpolate({"w": torch.zeros(2)}, {"w": torch.ones(2)}, 0.25)
    assert torch.allclose(state["w"], torch.full((2,), 0.25))
    with pytest.raises(ValueError, match="lam"):
        av.interpolate(theta_a, theta_b, 1.5)
    with pytest.raises(ValueError, match="names"):
        av.interpolate(theta_a, {"w": theta_b["w"]}, 0.5)
    with pytest.raises(ValueError, match="shapes"):
        av.interpolate(theta_a, {"w": theta_b["w"][:2], "b": theta_b["b"]}, 0.5)
