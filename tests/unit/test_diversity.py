"""commlab.ensembles.diversity: the Jensen gap and the other diversity terms against their direct definitions,
the exact loss decomposition, the objective's limits, finite gradients and refusals."""

import math

import pytest
import torch

from commlab.ensembles import diversity as dv


def _case(M=3, B=5, C=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(M, B, C, generator=g, dtype=dtype) * 2, torch.randint(C, (B,), generator=g)


def _softmax_rows(logits):
    # probabilities by hand, one member and example at a time
    M, B, C = logits.shape
    p = [[[0.0] * C for _ in range(B)] for _ in range(M)]
    for m in range(M):
        for b in range(B):
            e = [math.exp(float(v)) for v in logits[m, b]]
            s = sum(e)
            p[m][b] = [v / s for v in e]
    return p


def test_jensen_gap_equals_its_direct_definition():
    logits, y = _case()
    p = _softmax_rows(logits)
    M, B, _ = logits.shape
    for b in range(B):
        yb = int(y[b])
        mean_member_ce = sum(-math.log(p[m][b][yb]) for m in range(M)) / M
        ensemble_ce = -math.log(sum(p[m][b][yb] for m in range(M)) / M)
        assert float(dv.jensen_gap(logits, y)[b]) == pytest.approx(mean_member_ce - ensemble_ce, abs=1e-12)
        assert float(dv.ensemble_nll(logits, y)[b]) == pytest.approx(ensemble_ce, abs=1e-12)
    assert torch.all(dv.jensen_gap(logits, y) >= 0)


def test_entropy_gap_and_probability_variance_equal_their_direct_definitions():
    logits, _ = _case(M=4, B=3, C=5, seed=1)
    p = _softmax_rows(logits)
    M, B, C = logits.shape
    for b in range(B):
        bar = [sum(p[m][b][c] for m in range(M)) / M for c in range(C)]
        h_bar = -sum(q * math.log(q) for q in bar)
        h_members = sum(-sum(q * math.log(q) for q in p[m][b]) for m in range(M)) / M
        assert float(dv.entropy_gap(logits)[b]) == pytest.approx(h_bar - h_members, abs=1e-12)
        var = sum(sum((p[m][b][c] - bar[c]) ** 2 for m in range(M)) / M for c in range(C)) / C
        assert float(dv.probability_variance(logits)[b]) == pytest.approx(var, abs=1e-12)


def test_identical_members_have_no_diversity():
    logits, y = _case(M=1)
    same = logits.expand(4, -1, -1)
    for value in (dv.jensen_gap(same, y), dv.entropy_gap(same), dv.probability_variance(same)):
        assert torch.allclose(value, torch.zeros_like(value), atol=1e-12)


def test_decomposition_is_exact_in_float32_logits_too():
    logits, y = _case(M=4, B=200, C=10, seed=2, dtype=torch.float32)
    d = dv.decomposition(logits, y)
    assert abs(d["ensemble_nll"] - (d["member_nll"] - d["jensen_gap"])) <= 1e-12
    assert 0 <= d["member_accuracy"] <= 1 and 0 <= d["ensemble_accuracy"] <= 1
    # the accuracies by hand
    assert d["member_accuracy"] == pytest.approx(float((logits.argmax(-1) == y).double().mean()))
    bar = torch.softmax(logits.double(), -1).mean(0)
    assert d["ensemble_accuracy"] == pytest.approx(float((bar.argmax(-1) == y).double().mean()))


def test_objective_runs_from_independent_members_to_the_ensemble_loss():
    logits, y = _case(M=4, B=16, C=6, seed=3)
    average_member = dv.member_nll(logits, y).mean()
    assert torch.allclose(dv.diversity_objective(logits, y, 0.0), average_member)
    assert torch.allclose(dv.diversity_objective(logits, y, 1.0), dv.ensemble_nll(logits, y).mean())
    for measure, term in (("entropy_gap", dv.entropy_gap(logits)),
                          ("probability_variance", dv.probability_variance(logits))):
        assert torch.allclose(dv.diversity_objective(logits, y, 0.5, measure), average_member - 0.5 * term.mean())
    # encouraging diversity lowers the objective of a diverse ensemble, discouraging raises it
    assert dv.diversity_objective(logits, y, 0.5) < average_member < dv.diversity_objective(logits, y, -0.5)


def test_gradients_are_finite_even_for_extreme_logits():
    logits, y = _case(M=3, B=8, C=5, seed=4, dtype=torch.float32)
    logits = (logits * 200).requires_grad_()           # probabilities underflow to 0 in float32
    for measure in dv.MEASURES:
        (grad,) = torch.autograd.grad(dv.diversity_objective(logits, y, 0.5, measure), logits)
        assert torch.isfinite(grad).all(), measure
    # gamma = 1: the objective's gradient is the ensemble loss's
    small, y2 = _case(M=2, B=3, C=3, seed=5)
    small.requires_grad_()
    (grad,) = torch.autograd.grad(dv.diversity_objective(small, y2, 1.0), small)
    (direct,) = torch.autograd.grad(dv.ensemble_nll(small, y2).mean(), small)
    assert torch.allclose(grad, direct)


def test_bad_input_is_refused():
    logits, y = _case()
    with pytest.raises(ValueError, match="logits"):
        dv.jensen_gap(logits[0], y)
    with pytest.raises(ValueError, match="labels"):
        dv.jensen_gap(logits, y.float())
    with pytest.raises(ValueError, match="labels"):
        dv.jensen_gap(logits, torch.full_like(y, 9))
    with pytest.raises(ValueError, match="measure"):
        dv.diversity_objective(logits, y, 0.5, "kl")
    with pytest.raises(ValueError, match="gamma"):
        dv.diversity_objective(logits, y, float("nan"))
    with pytest.raises(ValueError, match="gamma"):                 # unbounded below above 1
        dv.diversity_objective(logits, y, 1.5)
    assert torch.isfinite(dv.diversity_objective(logits, y, 1.5, "entropy_gap"))
