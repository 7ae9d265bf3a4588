"""Selective-classification metrics and the window early-exit cascade in commlab.ensembles.cascade."""

from __future__ import annotations

import math

import numpy as np
import pytest

from commlab.ensembles import cascade as cc

SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
CORRECT = np.array([True, False, True, True, False])


def test_risk_at_coverage_by_hand():
    assert cc.risk_at_coverage(SCORES, CORRECT, 0.4) == pytest.approx(0.5)  # accepts 0.9 (ok), 0.8 (wrong)
    assert cc.risk_at_coverage(SCORES, CORRECT, 0.2) == 0.0
    assert cc.risk_at_coverage(SCORES, CORRECT, 1.0) == pytest.approx(0.4)
    assert cc.risk_at_coverage(SCORES, CORRECT, 0.5) == pytest.approx(1 / 3)  # ceil(2.5) = 3 accepted


def test_accepted_and_threshold_agree():
    rng = np.random.default_rng(0)
    scores = rng.random(1000)
    for coverage in (0.05, 0.3, 0.8, 1.0):
        accepted = cc.accepted_at_coverage(scores, coverage)
        assert accepted.sum() == math.ceil(coverage * 1000)
        assert np.array_equal(accepted, scores >= cc.threshold_at_coverage(scores, coverage))


def test_risk_coverage_curve_aurc_and_coverage_at_risk():
    coverage, risk = cc.risk_coverage_curve(SCORES, CORRECT)
    assert np.allclose(coverage, [0.2, 0.4, 0.6, 0.8, 1.0])
    assert np.allclose(risk, [0, 1 / 2, 1 / 3, 1 / 4, 2 / 5])
    assert cc.aurc(SCORES, CORRECT) == pytest.approx(np.mean([0, 1 / 2, 1 / 3, 1 / 4, 2 / 5]))
    assert cc.coverage_at_risk(SCORES, CORRECT, 0.3) == pytest.approx(0.8)
    assert cc.coverage_at_risk(SCORES, CORRECT, 0.0) == pytest.approx(0.2)
    assert cc.coverage_at_risk(1 - SCORES, CORRECT, 0.0) == 0.0


def test_msp_and_input_checks():
    assert np.allclose(cc.msp([[0.2, 0.8], [0.6, 0.4]]), [0.8, 0.6])
    with pytest.raises(ValueError, match="coverage"):
        cc.risk_at_coverage(SCORES, CORRECT, 0.0)
    with pytest.raises(ValueError, match="correct"):
        cc.risk_at_coverage(SCORES, CORRECT[:3], 0.5)
    with pytest.raises(ValueError, match="scores"):
        cc.aurc([0.1, np.nan], [True, False])
    with pytest.raises(ValueError, match="probs"):
        cc.msp([0.2, 0.8])


def _members(n=400, c=5, seed=0):
    rng = np.random.default_rng(seed)
    probs = [rng.dirichlet(np.ones(c), size=n) for _ in range(3)]
    calls = []

    def member(k):
        def predict(idx):
            calls.append((k, np.asarray(idx).copy()))
            return probs[k][idx]
        return predict

    return probs, [member(k) for k in range(3)], calls


def test_zero_window_is_member_one_and_infinite_window_is_the_ensemble():
    probs, members, calls = _members()
    none = cc.WindowCascade([0.5], 0.0, [1.0, 3.0]).run(members[:2], 400)
    assert np.allclose(none.probs, probs[0]) and none.passed_fraction() == 0.0 and none.macs_per_sample == 1.0
    assert [k for k, _ in calls] == [0]
    full = cc.WindowCascade([0.5], math.inf, [1.0, 3.0]).run(members[:2], 400)
    assert np.allclose(full.probs, (probs[0] + probs[1]) / 2) and full.macs_per_sample == 4.0


def test_window_forwards_only_samples_near_the_threshold():
    probs, members, calls = _members()
    s1 = probs[0].max(1)
    tau = float(np.median(s1))
    result = cc.WindowCascade([tau], 0.05, [2.0, 2.0]).run(members[:2], 400)
    window = np.abs(s1 - tau) < 0.05
    assert np.array_equal(calls[1][1], np.flatnonzero(window))
    assert np.allclose(result.probs[window], (probs[0][window] + probs[1][window]) / 2)
    assert np.allclose(result.probs[~window], probs[0][~window])
    assert result.macs_per_sample == pytest.approx(2.0 + 2.0 * window.mean())
    assert np.allclose(result.scores, result.probs.max(1))


def test_three_stage_cascade_uses_the_running_ensemble_score():
    probs, members, _ = _members()
    tau = [0.45, 0.4]
    result = cc.WindowCascade(tau, 0.1, [1.0, 1.0, 1.0]).run(members, 400)
    s1 = probs[0].max(1)
    to2 = np.abs(s1 - tau[0]) < 0.1
    s12 = ((probs[0] + probs[1]) / 2).max(1)
    to3 = to2 & (np.abs(s12 - tau[1]) < 0.1)
    assert np.array_equal(result.exit_stage, to2.astype(int) + to3.astype(int))
    assert np.allclose(result.probs[to3], sum(probs)[to3] / 3)
    assert result.passed_fraction(2) == pytest.approx(to3.mean())
    assert result.macs_per_sample == pytest.approx(1 + to2.mean() + to3.mean())


def test_run_does_not_modify_member_outputs():
    p1 = np.full((4, 2), 0.5)
    cc.WindowCascade([0.5], 1.0, [1, 1]).run([lambda i: p1[i], lambda i: p1[i]], 4)
    assert np.all(p1 == 0.5)


def test_cascade_rejects_bad_configuration():
    with pytest.raises(ValueError, match="thresholds"):
        cc.WindowCascade([0.5, 0.5], 0.1, [1, 1])
    with pytest.raises(ValueError, match="half_width"):
        cc.WindowCascade([0.5], -0.1, [1, 1])
    with pytest.raises(ValueError, match="macs"):
        cc.WindowCascade([0.5], 0.1, [1, 0])
    with pytest.raises(ValueError, match="members"):
        cc.WindowCascade([0.5], 0.1, [1, 1]).run([lambda i: None], 3)


def test_wider_windows_forward_a_superset_of_samples():
    # Moved from the notebook's former claim `window-monotone-passed`: the window |s - tau| < delta is
    # nested in delta, so a wider window forwards every sample a narrower one does, and its passed share
    # and MACs never fall.
    probs, members, _ = _members(n=2000)
    tau = float(np.quantile(probs[0].max(1), 0.2))
    results = [cc.WindowCascade([tau], d, [1.0, 1.0]).run(members[:2], 2000) for d in (0.0, 0.02, 0.05, 0.1, 0.2)]
    for narrow, wide in zip(results[:-1], results[1:], strict=True):
        assert np.all(wide.exit_stage >= narrow.exit_stage)
        assert wide.passed_fraction() >= narrow.passed_fraction()
        assert wide.macs_per_sample >= narrow.macs_per_sample
    assert results[-1].passed_fraction() > results[1].passed_fraction() > 0.0
