"""Error feedback and shifts: exact identities of each update rule, state handling, bad input."""

import pytest
import torch

from commlab.compress import Identity, RandK, ScaledSign, TopK
from commlab.compress.ef import DIANA, EF14, EF21, EF21W, EControl, Plain


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def grads(t, W=4, d=20):
    return torch.randn(W, d, generator=gen(100 + t), dtype=torch.float64)


def test_ef14_loses_nothing_sent_plus_error_equals_input():
    ef = EF14(TopK(k=2))
    sent = torch.zeros(4, 20, dtype=torch.float64)
    total = torch.zeros_like(sent)
    for t in range(30):
        g = grads(t)
        total += g
        payload = ef.client_step(g)
        sent += ef.compressor.decompress(payload)
    assert torch.allclose(sent + ef.state["e"], total, atol=1e-12)


def test_ef21_server_tracks_the_mean_of_worker_estimates_and_converges_to_fixed_gradients():
    ef = EF21(TopK(k=3))
    g = grads(0)
    start = ef.start(g)
    assert start.bits == 4 * 20 * 64  # dense float64 initial message
    assert torch.allclose(ef.state["server"], g.mean(dim=0))
    target = grads(1)
    for _ in range(30):  # with a fixed target, h_i -> target_i geometrically (contraction)
        estimate, _ = ef.step(target)
    assert torch.allclose(estimate, ef.state["h"].mean(dim=0))
    assert torch.allclose(ef.state["h"], target, atol=1e-8)


def test_ef21w_with_uniform_smoothness_is_ef21():
    a, b = EF21(TopK(k=2)), EF21W(TopK(k=2), smoothness=torch.ones(4))
    for t in range(10):
        assert torch.allclose(a.step(grads(t))[0], b.step(grads(t))[0])


def test_ef21w_equals_ef21_for_a_homogeneous_compressor():
    """C(c v) = c C(v) makes EF21-W's weighted estimate equal to EF21's (EF21-W paper, §4)."""
    L = torch.tensor([1.0, 30.0, 2.0, 5.0], dtype=torch.float64)
    a, b = EF21(TopK(k=2)), EF21W(TopK(k=2), smoothness=L)
    a.start(grads(0)), b.start(grads(0))
    for t in range(1, 20):
        assert torch.allclose(a.step(grads(t))[0], b.step(grads(t))[0], atol=1e-10)


def test_econtrol_with_eta_zero_is_ef21():
    a, b = EF21(ScaledSign()), EControl(ScaledSign(), eta=0.0)
    for t in range(10):
        assert torch.allclose(a.step(grads(t))[0], b.step(grads(t))[0])


def test_econtrol_error_is_the_accumulated_compression_error():
    ec = EControl(TopK(k=1), eta=0.05)
    ec.start(grads(0))
    for t in range(1, 15):
        e, h = ec.state["e"].clone(), ec.state["h"].clone()
        g = grads(t)
        payload = ec.client_step(g)
        delta = ec.compressor.decompress(payload)
        assert torch.allclose(ec.state["e"], e + g - h - delta)
        assert torch.allclose(ec.state["h"], h + delta)


def test_identity_compressor_makes_every_mechanism_exact():
    g = grads(0)
    for mechanism in (Plain(Identity()), EF14(Identity()), EF21(Identity()), EControl(Identity()), DIANA(Identity())):
        assert torch.allclose(mechanism.step(g)[0], g.mean(dim=0)), type(mechanism).__name__


def test_diana_estimate_is_unbiased_and_shifts_learn_the_gradient():
    target = grads(0)
    diana = DIANA(RandK(0.25))
    for t in range(400):
        diana.step(target, gen(t))
    assert torch.allclose(diana.state["h"], target, atol=1e-6)
    assert diana.shift_rate == pytest.approx(1 / 4)


def test_state_dict_round_trip_continues_identically():
    a = EControl(TopK(k=2), eta=0.1)
    for t in range(5):
        a.step(grads(t))
    b = EControl(TopK(k=2), eta=0.1)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.step(grads(9))[0], b.step(grads(9))[0])


def test_payload_bits_are_the_uplink():
    payload = EF21(TopK(k=1)).client_step(torch.randn(5, 64))
    assert payload.row_bits == (32 + 6,) * 5


def test_bad_input():
    ef = EF21(TopK(k=1))
    ef.step(torch.randn(4, 10))
    with pytest.raises(ValueError, match="state was built for"):
        ef.step(torch.randn(3, 10))
    with pytest.raises(ValueError, match=r"\[W, d\]"):
        EF14(TopK(k=1)).step(torch.randn(10))
    with pytest.raises(ValueError, match="NaN or Inf"):
        EF14(TopK(k=1)).step(torch.full((2, 3), float("nan")))
    with pytest.raises(TypeError, match="Compressor"):
        EF14("topk")
    with pytest.raises(ValueError, match="weights"):
        EF21W(TopK(k=1), smoothness=torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="4 workers but 3 weights"):
        EF21W(TopK(k=1), smoothness=torch.ones(3)).step(torch.randn(4, 10))
    with pytest.raises(ValueError, match="eta"):
        EControl(TopK(k=1), eta=2.0)
    with pytest.raises(ValueError, match="shift_rate"):
        DIANA(TopK(k=1))
