"""AsyncDiLoCo: DiLoCo's outer Nesterov applied one round late, against a hand-written reference; the
in-flight mean survives a checkpoint; on the simulated clock a round costs max(H·c, C), not H·c + C."""

import pytest
import torch

from commlab.comm import Link, SimComm
from commlab.distributed import make_method
from commlab.distributed.outer import AsyncDiLoCo, OuterSGD

N, D, H, ROUNDS = 3, 5, 4, 6
TARGETS = torch.randn(N, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def grads(params):
    return params - TARGETS  # ∇ of ½‖θ_m − b_m‖² per worker


def run_async(rounds=ROUNDS, **kw):
    params = torch.zeros(N, D, dtype=torch.float64)
    method = make_method("async_diloco", SimComm(N), params, sync_every=H,
                         inner=lambda p: torch.optim.SGD([p], lr=0.1), **kw)
    for _ in range(rounds * H):
        method.step(grads(params.detach()))
    return method, params


def reference():
    """The schedule written out: round r starts from A_r; at its end the mean θ̄_r is sent, θ̄_{r−1} applied."""
    anchor = torch.zeros(D, dtype=torch.float64, requires_grad=True)
    outer = torch.optim.SGD([anchor], lr=0.7, momentum=0.9, nesterov=True)
    start_prev, pending = anchor.detach().clone(), None
    workers = torch.zeros(N, D, dtype=torch.float64)
    for _ in range(ROUNDS):
        for _ in range(H):
            workers = workers - 0.1 * grads(workers)
        sent = workers.mean(0)
        if pending is not None:
            anchor.grad = start_prev - pending  # Δ̄_{r−1} = A_{r−1} − θ̄_{r−1}
            start_prev = anchor.detach().clone()
            outer.step()
        pending = sent
        workers = anchor.detach().expand(N, D).clone()
    return anchor.detach(), workers


def test_matches_the_one_round_late_reference():
    method, params = run_async()
    anchor, workers = reference()
    torch.testing.assert_close(method.outer_params, anchor, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(params.detach(), workers, rtol=1e-12, atol=1e-12)
    assert isinstance(method, AsyncDiLoCo) and method.outer.form == "nesterov"


def test_first_round_applies_nothing_and_the_second_applies_the_first():
    method, params = run_async(rounds=1)
    assert torch.equal(method.outer_params, torch.zeros(D, dtype=torch.float64))  # nothing applied yet
    assert torch.equal(params.detach(), torch.zeros(N, D, dtype=torch.float64))   # restart from A_0
    method, _ = run_async(rounds=2)
    assert method.outer_params.abs().sum() > 0


def test_a_checkpoint_carries_the_mean_in_flight():
    method, params = run_async(rounds=3)
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in method.state_dict().items()}
    assert state["pending"] is not None
    for _ in range(2 * H):
        method.step(grads(params.detach()))
    expected = method.outer_params.clone()

    resumed, rparams = run_async(rounds=0)
    resumed.load_state_dict(state)
    for _ in range(2 * H):
        resumed.step(grads(rparams.detach()))
    assert torch.equal(resumed.outer_params, expected)


@pytest.mark.parametrize("bandwidth", [2e5, 5e4])  # C < H·c and C > H·c
def test_simulated_round_costs_max_of_compute_and_allreduce(bandwidth):
    c, link = 0.01, Link(bandwidth=bandwidth, latency=1e-3)
    C = link.seconds("all_reduce", D * 8, N)

    def clock(name):
        params = torch.zeros(N, D, dtype=torch.float64)
        comm = SimComm(N, link=link)
        method = make_method(name, comm, params, sync_every=H, step_seconds=c, sync_init=False,
                             inner=lambda p: torch.optim.SGD([p], lr=0.1))
        for _ in range(ROUNDS * H):
            method.step(grads(params.detach()))
        method.finish()
        return comm.clock

    assert clock("diloco") == pytest.approx(ROUNDS * (H * c + C))
    # the first round's compute, then each later round max(H·c, C), then the last all-reduce drained
    assert clock("async_diloco") == pytest.approx(H * c + (ROUNDS - 1) * max(H * c, C) + C)


def test_refuses_a_non_outer_sgd():
    with pytest.raises(TypeError, match="OuterSGD"):
        AsyncDiLoCo(SimComm(2), torch.zeros(2, 3), sync_every=2, outer=torch.optim.SGD)
    assert AsyncDiLoCo(SimComm(2), torch.zeros(2, 3), sync_every=2, outer=OuterSGD(0.5, 0.0)).outer.lr == 0.5
