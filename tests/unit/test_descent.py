"""commlab.compress.descent: compressed gradient descent against hand-written loops, bits, divergence."""

import math

import pytest
import torch

from commlab.compress import Identity, RandK, TopK
from commlab.compress.descent import compressed_descent
from commlab.compress.ef import EF14, EF21, EF21W, EControl, Plain
from commlab.problems import heterogeneous_least_squares


def problem(dtype=torch.float64):
    return heterogeneous_least_squares(6, 8, 5, heavy_frac=1 / 3, scale=5.0, generator=torch.Generator().manual_seed(0),
                                       dtype=dtype)


def top1(v):
    out = torch.zeros_like(v)
    idx = v.abs().argmax(dim=1)  # first maximum: the lower index wins ties, like TopK
    out[torch.arange(v.shape[0]), idx] = v[torch.arange(v.shape[0]), idx]
    return out


def test_uncompressed_mechanisms_are_gradient_descent():
    p, gamma = problem(), 0.01
    x = torch.zeros(p.d, dtype=torch.float64)
    expected = [x]
    for _ in range(20):
        x = x - gamma * p.grad(x)
        expected.append(x)
    expected = torch.stack(expected)
    for mechanism in (Plain(Identity()), EF14(Identity()), EF21(Identity())):
        trace = compressed_descent(mechanism, p.grads, torch.zeros(p.d, dtype=torch.float64), gamma=gamma, steps=20)
        assert torch.allclose(trace.iterates, expected, atol=1e-12), type(mechanism).__name__
    grad_sq = torch.tensor([p.grad_norm_sq(x) for x in expected], dtype=torch.float64)
    assert torch.allclose(trace.grad_norm_sq, grad_sq, rtol=1e-12)


def test_ef21_with_dense_start_matches_the_papers_loop():
    p, gamma = problem(), 0.02
    x = torch.zeros(p.d, dtype=torch.float64)
    h = p.grads(x)
    expected = [x]
    for _ in range(30):
        x = x - gamma * h.mean(0)  # x_{t+1} = x_t − γ g_t
        h = h + top1(p.grads(x) - h)  # g_i,t+1 = g_i,t + C(∇f_i(x_{t+1}) − g_i,t)
        expected.append(x)
    trace = compressed_descent(EF21(TopK(k=1)), p.grads, torch.zeros(p.d, dtype=torch.float64), gamma=gamma,
                               steps=30, start=True)
    assert torch.allclose(trace.iterates, torch.stack(expected), atol=1e-12)


def test_ef14_compresses_the_scaled_step():
    p, gamma = problem(), 0.02
    x, e = torch.zeros(p.d, dtype=torch.float64), torch.zeros(p.n, p.d, dtype=torch.float64)
    expected = [x]
    for _ in range(15):
        message = top1(e + gamma * p.grads(x))
        e = e + gamma * p.grads(x) - message
        x = x - message.mean(0)
        expected.append(x)
    trace = compressed_descent(EF14(TopK(k=1)), p.grads, torch.zeros(p.d, dtype=torch.float64), gamma=gamma, steps=15)
    assert torch.allclose(trace.iterates, torch.stack(expected), atol=1e-12)


@pytest.mark.parametrize("start", [False, True])
def test_econtrol_with_zero_eta_is_ef21(start):
    p = problem()
    x0 = torch.zeros(p.d, dtype=torch.float64)
    a = compressed_descent(EControl(TopK(k=1), eta=0.0), p.grads, x0, gamma=0.02, steps=40, start=start)
    b = compressed_descent(EF21(TopK(k=1)), p.grads, x0, gamma=0.02, steps=40, start=start)
    assert torch.allclose(a.iterates, b.iterates, rtol=1e-12, atol=1e-14)  # EF21 sums w_i h_i with w_i = 1/n


def test_ef21w_equals_ef21_for_a_homogeneous_compressor():
    p = problem()
    x0 = torch.zeros(p.d, dtype=torch.float64)
    a = compressed_descent(EF21W(TopK(k=1), smoothness=p.L_i), p.grads, x0, gamma=0.01, steps=50, start=True)
    b = compressed_descent(EF21(TopK(k=1)), p.grads, x0, gamma=0.01, steps=50, start=True)
    assert torch.allclose(a.iterates, b.iterates, rtol=1e-10, atol=1e-12)
    assert not torch.equal(EF21W(TopK(k=1), smoothness=p.L_i).start(p.grads(x0)).parts[0].data,
                           EF21(TopK(k=1)).start(p.grads(x0)).parts[0].data)  # the messages themselves differ


def test_bits_count_the_dense_start_and_each_compressed_round():
    p = problem(torch.float32)
    index_bits = math.ceil(math.log2(p.d))
    x0 = torch.zeros(p.d)
    trace = compressed_descent(EF21(TopK(k=1)), p.grads, x0, gamma=0.01, steps=5, start=True)
    assert trace.bits.tolist() == [0.0] + [32.0 * p.d + t * (32 + index_bits) for t in range(5)]
    trace = compressed_descent(Plain(TopK(k=1)), p.grads, x0, gamma=0.01, steps=3)
    assert trace.bits.tolist() == [t * (32 + index_bits) for t in range(4)]
    randk = compressed_descent(Plain(RandK(k=2)), p.grads, x0, gamma=0.01, steps=3,
                               generator=torch.Generator().manual_seed(1))
    assert randk.bits[-1] == 3 * (2 * 32 + 2 * index_bits)


def test_a_diverging_run_stops_with_nan_iterates():
    p = problem()
    trace = compressed_descent(Plain(Identity()), p.grads, torch.ones(p.d, dtype=torch.float64), gamma=1e3, steps=500)
    assert trace.diverged and math.isinf(trace.grad_norm_sq[-1])
    fine = compressed_descent(Plain(Identity()), p.grads, torch.ones(p.d, dtype=torch.float64), gamma=1e-3, steps=5)
    assert not fine.diverged


def test_bad_input():
    p = problem()
    x0 = torch.zeros(p.d, dtype=torch.float64)
    with pytest.raises(TypeError, match="mechanism"):
        compressed_descent(TopK(k=1), p.grads, x0, gamma=0.1, steps=1)
    with pytest.raises(ValueError, match="gamma"):
        compressed_descent(Plain(TopK(k=1)), p.grads, x0, gamma=0.0, steps=1)
    with pytest.raises(ValueError, match="steps"):
        compressed_descent(Plain(TopK(k=1)), p.grads, x0, gamma=0.1, steps=0)
    with pytest.raises(ValueError, match="x0"):
        compressed_descent(Plain(TopK(k=1)), p.grads, x0[None], gamma=0.1, steps=1)
    with pytest.raises(ValueError, match="start"):
        compressed_descent(EF14(TopK(k=1)), p.grads, x0, gamma=0.1, steps=1, start=True)
    with pytest.raises(ValueError, match="oracle"):
        compressed_descent(Plain(TopK(k=1)), lambda x: x, x0, gamma=0.1, steps=1)
