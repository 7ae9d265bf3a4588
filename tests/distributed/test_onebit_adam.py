"""1-bit Adam: the two-stage compressed all-reduce against hand computations, the optimiser's warm-up
against torch's Adam, SimComm against two gloo processes, checkpoints and argument checks."""

import io
import math

import pytest
import torch
from onebit_workers import least_squares_onebit, onebit_descent

from commlab.comm import SimComm
from commlab.comm.launch import run_workers
from commlab.distributed.onebit_adam import OneBitAdam, chunk_size, compressed_allreduce_1bit

S3 = math.sqrt(3)


def buffers(L, d, N, dtype=torch.float32):
    return torch.zeros(L, d, dtype=dtype), torch.zeros(L, chunk_size(d, N), dtype=dtype)


def test_one_compressed_allreduce_by_hand_with_padding_and_sign_of_zero():
    # N = 2, d = 3: chunks of c = 2 coordinates, chunk 1 = coordinate 2 alone
    x = torch.tensor([[3.0, -4.0, 0.0], [1.0, 2.0, -2.0]])
    worker_error, server_error = buffers(2, 3, 2)
    comm = SimComm(2)
    out = compressed_allreduce_1bit(comm, x, worker_error, server_error)
    s0, s1 = 5 / S3, 3 / S3  # ‖b_i‖/√d; sign(0) = +1 for worker 0's last coordinate
    torch.testing.assert_close(worker_error, torch.tensor([[3 - s0, -4 + s0, -s0], [1 - s1, 2 - s1, -2 + s1]]))
    chunk0 = torch.tensor([(s0 + s1) / 2, (s1 - s0) / 2])  # owner 0 averages coordinates 0 and 1
    scale0 = chunk0.norm() / math.sqrt(2)
    chunk1 = (s0 - s1) / 2  # owner 1: coordinate 2 only
    torch.testing.assert_close(out, torch.tensor([[scale0, -scale0, chunk1]] * 2))
    torch.testing.assert_close(server_error, torch.stack([chunk0 - scale0 * torch.tensor([1.0, -1.0]),
                                                          torch.zeros(2)]))
    # one packed message per stage: ⌈3/8⌉ + 4 bytes up, ⌈2/8⌉ + 4 bytes back (chunk 1 padded to chunk 0)
    assert comm.meter.bytes_sent.tolist() == [10.0, 10.0] and comm.meter.calls == {"all_gather": 2}


def test_sign_of_zero_is_plus_one():
    worker_error, server_error = buffers(1, 2, 1)
    out = compressed_allreduce_1bit(SimComm(1), torch.tensor([[0.0, 1.0]]), worker_error, server_error)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(out, torch.tensor([[s, s]]))  # a 0 → −1 or 0 would give [−s, s] or [0, 1]
    torch.testing.assert_close(worker_error, torch.tensor([[-s, 1 - s]]))


def test_error_compensation_telescopes_exactly():
    # Σ_t out_t + mean_i e_i + e_srv = Σ_t mean_i x_i,t for any inputs: nothing is lost, only delayed
    N, d = 3, 20
    g = torch.Generator().manual_seed(0)
    worker_error, server_error = buffers(N, d, N, torch.float64)
    comm = SimComm(N)
    sent = torch.zeros(d, dtype=torch.float64)
    wanted = torch.zeros(d, dtype=torch.float64)
    for _ in range(25):
        x = torch.randn(N, d, generator=g, dtype=torch.float64)
        sent += compressed_allreduce_1bit(comm, x, worker_error, server_error)[0]
        wanted += x.mean(dim=0)
    held = worker_error.mean(dim=0) + server_error.reshape(-1)[:d]
    torch.testing.assert_close(sent + held, wanted, rtol=0, atol=1e-12)
    assert (sent - wanted).abs().max() > 1e-3  # the errors really hold something back
    assert torch.equal(server_error.reshape(-1)[d:], torch.zeros(N * chunk_size(d, N) - d, dtype=torch.float64))


def test_meter_counts_whole_bytes_and_the_padded_last_chunk():
    N, d = 4, 1001  # c = 251, the last chunk 248 coordinates
    comm = SimComm(N)
    compressed_allreduce_1bit(comm, torch.randn(N, d), *buffers(N, d, N))
    assert comm.meter.bytes_sent.tolist() == [(math.ceil(1001 / 8) + 4) + (math.ceil(251 / 8) + 4)] * N
    assert comm.meter.peak_bytes == math.ceil(1001 / 8) + 4


def test_one_warmup_and_one_compressed_step_by_hand():
    # β = (0.5, 0.75), lr = 0.1, N = 2, T0 = 1
    x = torch.zeros(2, 3)
    opt = OneBitAdam(SimComm(2), x, lr=0.1, betas=(0.5, 0.75), eps=1e-8, freeze_step=1)
    opt.step(torch.tensor([[2.0, -2.0, 4.0], [2.0, 6.0, 0.0]]))  # mean g = 2: m = 1, v = 1, m̂/√v̂ = 1
    torch.testing.assert_close(x, torch.full((2, 3), -0.1))
    assert opt.compressing
    # local momenta m_i = 0.5·m + 0.5·g_i = the vectors of the all-reduce example above
    opt.step(torch.tensor([[5.0, -9.0, -1.0], [1.0, 3.0, -5.0]]))
    s0, s1 = 5 / S3, 3 / S3
    scale0 = math.hypot((s0 + s1) / 2, (s1 - s0) / 2) / math.sqrt(2)
    m = torch.tensor([scale0, -scale0, (s0 - s1) / 2])
    torch.testing.assert_close(opt.exp_avg, torch.stack([m, m]))
    torch.testing.assert_close(opt.exp_avg_sq, torch.ones(3))  # frozen
    # m̂ = m/(1 − 0.5²), v̂ = v/(1 − 0.75) = 4 (corrected at the freeze)
    torch.testing.assert_close(x, (torch.full((3,), -0.1) - 0.1 * (m / 0.75) / 2).expand(2, 3))
    assert opt.worker_error.abs().sum() > 0 and opt.server_error[0].abs().sum() > 0
    assert [e.info["compressed"] for e in opt.events] == [False, True]


def test_warmup_is_adamw_on_the_mean_gradient_and_the_replicas_stay_identical():
    g = torch.Generator().manual_seed(1)
    start = torch.randn(10, generator=g)
    params = start.expand(3, -1).clone()
    ref = start.clone().requires_grad_()
    opt = OneBitAdam(SimComm(3), params, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, freeze_step=6)
    adamw = torch.optim.AdamW([ref], lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)
    for step in range(10):
        grads = torch.randn(3, 10, generator=g)
        opt.step(grads)
        ref.grad = grads.mean(dim=0)
        adamw.step()
        if step < 6:
            torch.testing.assert_close(params[0], ref.detach())
        assert torch.equal(params, params[:1].expand(3, -1))  # the replicas stay identical
    assert not torch.allclose(params[0], ref.detach())  # compressed afterwards


def test_a_learning_rate_schedule_is_read_at_every_step():
    x = torch.ones(1, 4)
    opt = OneBitAdam(SimComm(1), x, lr=lambda t: 0.1 if t == 0 else 0.0, freeze_step=2)
    opt.step(2 * x)
    torch.testing.assert_close(x, torch.full((1, 4), 0.9))
    opt.step(2 * x)  # lr 0: nothing moves
    torch.testing.assert_close(x, torch.full((1, 4), 0.9))
    with pytest.raises(ValueError, match="lr must be in"):
        OneBitAdam(SimComm(1), x, lr=lambda t: -1.0).step(x)


def test_variance_is_frozen_unless_the_ablation_asks_otherwise():
    g = torch.Generator().manual_seed(2)
    grads = [torch.randn(2, 8, generator=g) for _ in range(6)]
    variances = {}
    for freeze in (True, False):
        opt = OneBitAdam(SimComm(2), torch.zeros(2, 8), freeze_step=3, freeze_variance=freeze)
        history = []
        for grad in grads:
            opt.step(grad)
            history.append(opt.exp_avg_sq.clone())
        variances[freeze] = history
    assert all(torch.equal(v, variances[True][2]) for v in variances[True][3:])
    assert all(torch.equal(a, b) for a, b in zip(variances[True][:3], variances[False][:3], strict=True))
    assert not torch.equal(variances[False][-1], variances[False][2])


@pytest.mark.timeout(90)
def test_sim_equals_two_gloo_processes_bit_for_bit():
    sim_iterates, sim_state, sim_bytes, sim_syncs = least_squares_onebit(SimComm(2))
    results = run_workers(onebit_descent, 2, args=(True,), timeout=60)
    for r in results:
        assert r.status == "ok", f"rank {r.rank}: {r.status} {r.error}\n{r.traceback}"
        iterates, state, sent, syncs = r.value
        assert torch.equal(iterates, sim_iterates), f"rank {r.rank} left the simulator's trajectory"
        assert torch.equal(state["worker_error"], sim_state["worker_error"][r.rank : r.rank + 1])
        assert torch.equal(state["server_error"], sim_state["server_error"][r.rank : r.rank + 1])
        assert torch.equal(sent, sim_bytes[r.rank : r.rank + 1]) and syncs == sim_syncs
    assert sim_state["server_error"].abs().sum() > 0 and not torch.equal(sim_iterates[-1], sim_iterates[4])


def _run(x, opt, grads):
    for grad in grads:
        opt.step(grad)
    return x.clone()


def test_checkpoint_after_the_freeze_resumes_exactly_with_both_error_buffers():
    g = torch.Generator().manual_seed(3)
    grads = [torch.randn(3, 10, generator=g) for _ in range(14)]
    x = torch.zeros(3, 10)
    opt = OneBitAdam(SimComm(3), x, lr=0.05, freeze_step=4)
    _run(x, opt, grads[:8])
    blob = io.BytesIO()
    torch.save(opt.state_dict(), blob)
    straight = _run(x, opt, grads[8:])

    blob.seek(0)
    saved = torch.load(blob)
    y = torch.zeros(3, 10)
    resumed = OneBitAdam(SimComm(3), y, lr=0.05, freeze_step=4)
    resumed.load_state_dict(saved)
    assert torch.equal(_run(y, resumed, grads[8:]), straight)
    assert resumed.summary() == opt.summary()

    # DeepSpeed's behaviour (error buffers reset on load) would not continue the same way
    z = torch.zeros(3, 10)
    reset = OneBitAdam(SimComm(3), z, lr=0.05, freeze_step=4)
    reset.load_state_dict(saved)
    reset.worker_error.zero_()
    reset.server_error.zero_()
    assert not torch.equal(_run(z, reset, grads[8:]), straight)


def test_a_checkpoint_from_another_world_size_is_refused():
    opt = OneBitAdam(SimComm(3), torch.zeros(3, 10), freeze_step=0)
    opt.step(torch.randn(3, 10))
    other = OneBitAdam(SimComm(2), torch.zeros(2, 10), freeze_step=0)
    with pytest.raises(ValueError, match="params have shape"):
        other.load_state_dict(opt.state_dict())


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": -0.1}, "lr"),
    ({"freeze_step": -1}, "freeze_step"),
    ({"freeze_step": 2.5}, "freeze_step"),
    ({"betas": (1.0, 0.999)}, r"betas\[0\]"),
    ({"betas": (0.9, -0.1)}, r"betas\[1\]"),
    ({"betas": (0.9,)}, "betas"),
    ({"eps": 0.0}, "eps"),
    ({"eps": -1e-8}, "eps"),
    ({"weight_decay": -1.0}, "weight_decay"),
])
def test_bad_arguments_are_rejected_by_name(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        OneBitAdam(SimComm(2), torch.zeros(2, 3), **kwargs)


def test_bad_gradients_and_buffers_are_rejected():
    opt = OneBitAdam(SimComm(2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"grads must have the shape of params \(2, 3\)"):
        opt.step(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="NaN"):
        opt.step(torch.tensor([[0.0, float("nan"), 0.0]] * 2))
    with pytest.raises(ValueError, match=r"shape \[L, d\] with L = 2"):
        OneBitAdam(SimComm(2), torch.zeros(3, 4))
    with pytest.raises(TypeError, match="comm"):
        OneBitAdam(None, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="server_error"):
        compressed_allreduce_1bit(SimComm(2), torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(2, 2))


def test_coordinates_without_gradient_in_the_warmup_stay_still():
    # coordinate 0 never gets a gradient: v = 0 there, and ±scale/ε would throw it far away
    g = torch.Generator().manual_seed(4)
    x = torch.zeros(2, 6)
    opt = OneBitAdam(SimComm(2), x, lr=0.01, freeze_step=3)
    for _ in range(10):
        grads = torch.randn(2, 6, generator=g)
        grads[:, 0] = 0
        opt.step(grads)
    assert (x[:, 0] == 0).all() and x[:, 1:].abs().min() > 0
    assert opt.exp_avg[:, 0].abs().max() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_follow_the_cpu_run():
    g = torch.Generator().manual_seed(5)
    grads = [torch.randn(4, 1001, generator=g) for _ in range(8)]
    finals = {}
    for device in ("cpu", "cuda"):
        x = torch.zeros(4, 1001, device=device)
        opt = OneBitAdam(SimComm(4), x, lr=0.01, freeze_step=3)
        for grad in grads:
            opt.step(grad.to(device))
        finals[device] = (x.cpu(), {k: v.cpu() for k, v in opt.state_dict().items()
                                    if k in ("exp_avg", "exp_avg_sq", "worker_error", "server_error")})
    torch.testing.assert_close(finals["cuda"][0], finals["cpu"][0], rtol=1e-5, atol=1e-6)
    for name, value in finals["cpu"][1].items():
        torch.testing.assert_close(finals["cuda"][1][name], value, rtol=1e-4, atol=1e-5)
