"""Message distillation (commlab.semcom.interactive_distillation): the KD loss against a hand computation,
exact bits from payloads, equal bits between the interactive and one-way arms, determinism for a seed,
what reaches the student, bad input, and state_dict round trips."""

import math

import pytest
import torch

from commlab.compress import Uniform
from commlab.semcom.interactive_distillation import (
    FeatureKD,
    LogitKD,
    MessageChannel,
    MessageDistillation,
    NoKD,
    SplitMLP,
    equal_bits_message_dim,
    fit_distillation,
    kd_kl,
)

D_IN, D_T, D_S, C = 12, 16, 6, 4


def _teacher():
    teacher = SplitMLP((D_IN, D_T, C), seed=1)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g)
    y = torch.randint(C, (n,), generator=g)
    return x, y


def _arm(teacher, channel, *, q=4, interactive=True, seed=3):
    return MessageDistillation(SplitMLP((D_IN, D_S, C), seed=2), teacher.up, teacher_dim=D_T, n_classes=C,
                               message_dim=q, uplink=channel, downlink=channel, interactive=interactive,
                               width=8, seed=seed)


def _fit(arm, teacher, steps=5, seed=0):
    x, y = _data()
    with torch.no_grad():
        out = (teacher.hidden(x), teacher(x))
    return fit_distillation(arm, (x[:20], y[:20]), x, *out, steps=steps, batch_size=10, transfer_batch=16,
                            lr=1e-2, generator=torch.Generator().manual_seed(seed))


def test_kd_kl_matches_a_hand_computation():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    t = torch.tensor([[0.0, 2.0, 0.0]])
    tau = 2.0
    p_t = [math.exp(v / tau) for v in (0.0, 2.0, 0.0)]
    p_t = [v / sum(p_t) for v in p_t]
    p_s = [math.exp(v / tau) for v in (1.0, 0.0, -1.0)]
    p_s = [v / sum(p_s) for v in p_s]
    expected = tau**2 * sum(a * math.log(a / b) for a, b in zip(p_t, p_s, strict=True))
    assert kd_kl(s, t, tau).item() == pytest.approx(expected, rel=1e-6)
    assert kd_kl(t, t, tau).item() == pytest.approx(0.0, abs=1e-7)
    batch = torch.cat([s, t])  # the batch mean of per-row terms
    assert kd_kl(batch, torch.cat([t, t]), tau).item() == pytest.approx(expected / 2, rel=1e-6)


def test_kd_kl_rejects_bad_input():
    with pytest.raises(ValueError, match="tau"):
        kd_kl(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match="same shape"):
        kd_kl(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="student_logits"):
        kd_kl(torch.zeros(3), torch.zeros(3), 1.0)


def test_channel_bits_come_from_the_payloads():
    m = torch.randn(5, 6)
    g = torch.Generator().manual_seed(0)
    received, bits = MessageChannel("ideal")(m, g)
    assert bits == 5 * 6 * 32 and torch.equal(received, m)
    channel = MessageChannel("quantise", bits=3)
    received, bits = channel(m, torch.Generator().manual_seed(1))
    payload = Uniform(3).compress(m, torch.Generator().manual_seed(1))
    assert bits == payload.bits == 5 * (6 * 3 + 64)
    assert torch.allclose(received, Uniform(3).decompress(payload))
    assert channel.bits_per_message(6) == 6 * 3 + 64
    awgn = MessageChannel("awgn", snr_db=10.0)
    assert awgn(m, g)[1] == pytest.approx(5 * 3 * math.log2(11.0))
    assert MessageChannel("noise")(m, g)[1] == 0.0


def test_quantiser_passes_gradients_straight_through():
    m = torch.randn(3, 4, requires_grad=True)
    received, _ = MessageChannel("quantise", bits=2)(m, torch.Generator().manual_seed(0))
    (received * torch.arange(4.0)).sum().backward()
    assert torch.equal(m.grad, torch.arange(4.0).expand(3, 4))


def test_awgn_channel_is_power_normalised_and_noise_channel_ignores_its_input():
    m = 100.0 * torch.randn(2000, 8)
    received, _ = MessageChannel("awgn", snr_db=20.0)(m, torch.Generator().manual_seed(0))
    power = received.square().sum(1).mean() / 4  # per complex symbol: unit signal + N0 = 0.01
    assert power.item() == pytest.approx(1.01, rel=0.02)
    a, _ = MessageChannel("noise")(m, torch.Generator().manual_seed(5))
    b, _ = MessageChannel("noise")(torch.zeros_like(m), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_equal_bits_between_arms_from_payloads():
    teacher = _teacher()
    for channel, expected_q in ((MessageChannel("ideal"), 8), (MessageChannel("quantise", bits=4), 8 + 16),
                                (MessageChannel("quantise", bits=2), 8 + 32)):
        q_one_way = equal_bits_message_dim(4, channel, channel)
        assert q_one_way == expected_q
        interactive = _fit(_arm(teacher, channel, q=4), teacher)
        one_way = _fit(_arm(teacher, channel, q=q_one_way, interactive=False), teacher)
        assert interactive["bits_up"] > 0 and one_way["bits_up"] == 0
        assert interactive["bits_up"] + interactive["bits_down"] == one_way["bits_down"]
    with pytest.raises(ValueError, match="no one-way message width"):
        equal_bits_message_dim(4, MessageChannel("ideal"), MessageChannel("quantise", bits=5))  # 5q' + 64 = 212
    awgn = MessageChannel("awgn", snr_db=3.0)
    assert equal_bits_message_dim(4, awgn, awgn) == 8


def test_protocol_is_deterministic_for_a_seed():
    teacher = _teacher()
    runs = []
    for _ in range(2):
        arm = _arm(teacher, MessageChannel("quantise", bits=3))
        history = _fit(arm, teacher)
        runs.append((history, arm.state_dict()))
    (h1, s1), (h2, s2) = runs
    assert h1["loss"] == h2["loss"]
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    h3 = _fit(_arm(teacher, MessageChannel("quantise", bits=3)), teacher, seed=1)
    assert h3["loss"] != h1["loss"]


def test_codec_loss_never_reaches_the_student():
    teacher = _teacher()
    arm = _arm(teacher, MessageChannel("ideal"))
    x, y = _data()
    with torch.no_grad():
        h_t, l_t = teacher.hidden(x), teacher(x)
    arm.weight = 0.0  # student loss = CE on the labelled batch only; the rest is the codec's loss
    loss, _ = arm.losses(x[:0], y[:0], x, h_t, l_t, torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in arm.student.parameters())
    assert arm.enc_s[0].weight.grad.abs().sum() > 0 and arm.dec_s[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_student_learns_from_the_reply_through_its_hidden_state():
    teacher = _teacher()
    arm = _arm(teacher, MessageChannel("ideal"))
    x, y = _data()
    with torch.no_grad():
        h_t, l_t = teacher.hidden(x), teacher(x)
        arm.dec_s[-1].weight.normal_()  # a non-trivial reply
    arm.weight = 1.0  # no CE: the student's only signal is the reply
    loss, _ = arm.losses(x[:4], y[:4], x, h_t, l_t, torch.Generator().manual_seed(0))
    loss.backward()
    assert arm.student.low[0].weight.grad.abs().sum() > 0


def test_baselines_count_their_fp32_messages_and_train():
    teacher = _teacher()
    student = lambda: SplitMLP((D_IN, D_S, C), seed=2)  # noqa: E731
    arms = ((NoKD(student()), 0), (LogitKD(student()), 32 * C), (FeatureKD(student(), D_T, seed=4), 32 * D_T))
    for arm, bits in arms:
        history = _fit(arm, teacher, steps=30)
        assert history["bits_down_per_sample"] == bits and history["bits_up"] == 0
        assert history["loss"][-1] < history["loss"][0]


def test_bad_input_raises():
    teacher = _teacher()
    with pytest.raises(ValueError, match="kind"):
        MessageChannel("fibre")
    with pytest.raises(ValueError, match="bits is required"):
        MessageChannel("quantise")
    with pytest.raises(ValueError, match="bits"):
        MessageChannel("quantise", bits=17)
    with pytest.raises(ValueError, match="snr_db is required"):
        MessageChannel("awgn")
    with pytest.raises(ValueError, match="snr_db is required"):
        MessageChannel("ideal", snr_db=3.0)
    with pytest.raises(ValueError, match="q must be even"):
        MessageChannel("awgn", snr_db=3.0)(torch.zeros(2, 3), torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        MessageChannel("ideal")(torch.zeros(2, 3), None)
    with pytest.raises(ValueError, match=r"\[B, q\]"):
        MessageChannel("ideal")(torch.zeros(3), torch.Generator())
    with pytest.raises(TypeError, match="uplink"):
        MessageDistillation(SplitMLP((D_IN, D_S, C), seed=2), teacher.up, teacher_dim=D_T, n_classes=C,
                            message_dim=4, uplink="ideal", downlink=MessageChannel(), seed=0)
    with pytest.raises(ValueError, match="message_dim"):
        _arm(teacher, MessageChannel(), q=0)
    with pytest.raises(ValueError, match="hidden layer"):
        SplitMLP((D_IN, C), seed=0)
    arm = _arm(teacher, MessageChannel())
    x, y = _data()
    with pytest.raises(ValueError, match="teacher_logits"):
        arm.losses(x, y, x, teacher.hidden(x), teacher(x)[:, :2], torch.Generator())
    with pytest.raises(ValueError, match="y_lab"):
        arm.losses(x, y[:3], x, teacher.hidden(x), teacher(x), torch.Generator())
    with pytest.raises(ValueError, match="one row per transfer example"):
        fit_distillation(arm, (x, y), x, teacher.hidden(x)[:3], teacher(x), steps=1, batch_size=4,
                         transfer_batch=4, lr=1e-3, generator=torch.Generator())
    with pytest.raises(TypeError, match="arm"):
        fit_distillation(teacher, (x, y), x, teacher.hidden(x), teacher(x), steps=1, batch_size=4,
                         transfer_batch=4, lr=1e-3, generator=torch.Generator())


def test_state_dict_round_trip_reproduces_the_round():
    teacher = _teacher()
    arm = _arm(teacher, MessageChannel("quantise", bits=4))
    _fit(arm, teacher)
    copy = _arm(teacher, MessageChannel("quantise", bits=4), seed=99)
    x, _ = _data()
    logits = teacher(x)
    before = copy.round(x, logits, torch.Generator().manual_seed(0))["reply_logits"]
    copy.load_state_dict(arm.state_dict())
    a = arm.round(x, logits, torch.Generator().manual_seed(0))
    b = copy.round(x, logits, torch.Generator().manual_seed(0))
    assert not torch.equal(before, b["reply_logits"])
    assert torch.equal(a["reply_logits"], b["reply_logits"]) and a["bits_down"] == b["bits_down"]
    assert {"student.low.0.weight", "enc_s.0.weight", "dec_t.2.weight", "enc_t.0.weight", "dec_s.2.bias",
            "reply_head.0.weight"} <= set(arm.state_dict())
