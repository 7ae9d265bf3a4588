"""Federated rounds (commlab.distributed.fl): each method's round against a client-by-client
reference written from the papers' pseudo-code, SCAFFOLD's one- and two-vector forms, exact bits,
checkpoint continuation, SimComm against 2 gloo ranks, and argument errors."""

from __future__ import annotations

import itertools
import math
from functools import partial

import pytest
import torch
from fl_workers import fl_rank, noisy_gradients, quadratic, run_rounds

from commlab.comm import SimComm
from commlab.comm.launch import run_workers
from commlab.compress import QSGD, Identity, RandK, TopK
from commlab.distributed.fl import FedAvg, FedEF, Scafcom, Scaffold, Scallion, sample_clients

N, S, D, K, LR = 3, 2, 3, 2, 0.1


# --- sampling ----------------------------------------------------------------------------------


def test_uniform_sampling_draws_distinct_clients_with_probability_s_over_n():
    counts = torch.zeros(10)
    pairs = set()
    for t in range(4000):
        clients = sample_clients(10, 3, torch.Generator().manual_seed(t))
        assert clients.dtype == torch.int64 and torch.all(clients.diff() > 0) and 0 <= clients.min() < 10
        counts[clients] += 1
        pairs.update(itertools.combinations(clients.tolist(), 2))
    assert torch.allclose(counts / 4000, torch.full((10,), 0.3), atol=0.03)
    assert len(pairs) == 45  # every pair of clients shows up together
    same = [sample_clients(10, 3, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(*same)


def test_stratified_sampling_takes_one_client_per_group():
    counts = torch.zeros(12)
    for t in range(3000):
        clients = sample_clients(12, 4, torch.Generator().manual_seed(t), stratified=True)
        assert torch.equal(clients % 4, torch.arange(4))
        counts[clients] += 1
    assert torch.allclose(counts / 3000, torch.full((12,), 1 / 3), atol=0.04)
    with pytest.raises(ValueError, match="multiple of per_round"):
        sample_clients(10, 4, torch.Generator(), stratified=True)


@pytest.mark.parametrize("args, error", [((3, 4), ValueError), ((0, 1), ValueError), ((5, 0), ValueError),
                                         ((5.0, 2), TypeError)])
def test_sampling_bad_arguments(args, error):
    with pytest.raises(error):
        sample_clients(*args, torch.Generator())
    with pytest.raises(TypeError, match="generator"):
        sample_clients(5, 2, 0)


# --- one round against a reference --------------------------------------------------------------


def reference(name, state, clients, a, h, t, *, compressor=None, beta=0.2, alpha=1.0, placement="after",
              two_vector=False):
    """One round of ``name`` client by client, from the pseudo-code (brief and papers), in place on
    ``state`` = {"x", "c", "ci" [N, d], "v" [N, d], "e" [N, d], "up"}."""
    C = compressor if compressor is not None else (lambda z: z)
    x, c = state["x"], state["c"]
    controlled = name in ("scaffold", "scallion", "scafcom")
    grad_fn = noisy_gradients(a, h)
    sent = []
    for i in clients.tolist():
        y = x.clone()
        for k in range(K):
            g = grad_fn(y[None], torch.tensor([i]), t, k)[0]
            y = y - LR * (g - state["ci"][i] + c if controlled else g)
        if name in ("fedavg", "cfedavg"):
            sent.append(C((x - y) / (LR * K)))
        elif name == "fedef":
            p = C(state["e"][i] + (x - y) / (LR * K))
            state["e"][i] = state["e"][i] + (x - y) / (LR * K) - p
            sent.append(p)
        elif name == "scaffold" and two_vector:
            c_plus = state["ci"][i] - c + (x - y) / (K * LR)
            sent.append((y - x, c_plus - state["ci"][i]))
            state["ci"][i] = c_plus
        elif name in ("scaffold", "scallion"):
            delta = (x - y) / (LR * K) - c
            if placement == "before":
                d_i = C(alpha * delta)
                state["ci"][i] = state["ci"][i] + d_i
            else:
                d_i = C(delta)
                state["ci"][i] = state["ci"][i] + alpha * d_i
            sent.append(d_i)
        elif name == "scafcom":
            state["v"][i] = (1 - beta) * state["v"][i] + beta * ((x - y) / (LR * K) + state["ci"][i] - c)
            d_i = C(state["v"][i] - state["ci"][i])
            state["ci"][i] = state["ci"][i] + d_i
            sent.append(d_i)
    if name in ("fedavg", "cfedavg", "fedef"):
        state["x"] = x - LR * K * sum(sent) / len(sent)
    elif two_vector:
        state["x"] = x + sum(dy for dy, _ in sent) / len(sent)
        state["c"] = c + sum(dc for _, dc in sent) / N
    else:
        rate = alpha if (name == "scallion" and placement == "after") else 1.0
        state["x"] = x - LR * K * (c + sum(sent) / len(sent))
        state["c"] = c + rate * sum(sent) / N


def top2(z):
    keep = z.abs().topk(2).indices
    out = torch.zeros_like(z)
    out[keep] = z[keep]
    return out


CASES = {
    "fedavg": (partial(FedAvg), {}),
    "cfedavg": (partial(FedAvg, compressor=TopK(k=2)), {"compressor": top2}),
    "fedef": (partial(FedEF, compressor=TopK(k=2)), {"compressor": top2}),
    "scaffold": (partial(Scaffold), {}),
    "scaffold-two-vector": (partial(Scaffold, two_vector=True), {"two_vector": True}),
    "scallion-after": (partial(Scallion, compressor=TopK(k=2), alpha=0.5), {"compressor": top2, "alpha": 0.5}),
    "scallion-before": (partial(Scallion, compressor=TopK(k=2), alpha=0.5, placement="before"),
                        {"compressor": top2, "alpha": 0.5, "placement": "before"}),
    "scafcom": (partial(Scafcom, compressor=TopK(k=2), beta=0.3), {"compressor": top2, "beta": 0.3}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rounds_match_a_client_by_client_reference(case):
    make, options = CASES[case]
    name = case.split("-")[0]
    a, h = quadratic(N, D)
    method = make(SimComm(S), torch.zeros(D, dtype=torch.float64).repeat(SimComm(S).local_workers, 1), n_clients=N,
                  local_steps=K, local_lr=LR, seed=3)
    state = {"x": torch.zeros(D, dtype=torch.float64), "c": torch.zeros(D, dtype=torch.float64),
             **{key: torch.zeros(N, D, dtype=torch.float64) for key in ("ci", "v", "e")}}
    grad_fn = noisy_gradients(a, h)
    for t in range(4):  # later rounds start from non-zero controls, momenta and errors
        clients = method.sample(t)
        method.round(grad_fn)
        reference(name, state, clients, a, h, t, **options)
        torch.testing.assert_close(method.x, state["x"], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(method.c, state["c"], rtol=1e-12, atol=1e-12)
    for buffer, key in (("c", "ci"), ("v", "v"), ("e", "e")):
        if buffer in method.buffers:
            torch.testing.assert_close(method.buffers[buffer], state[key], rtol=1e-12, atol=1e-12)
            assert method.buffers[buffer].abs().sum() > 0
    assert not torch.equal(method.x, torch.zeros(D, dtype=torch.float64))


def test_one_round_by_hand_for_scaffold_with_exact_gradients():
    """f_i(x) = ½‖x − a_i‖², K = 2, η_l = 0.5, both clients sampled, c = c_i = 0, x = 0:
    y¹ = 0.5 a_i, y² = 0.75 a_i, δ_i = (x − y²)/(η_l K) − c = −0.75 a_i,
    x⁺ = −γ mean δ_i = 0.75 mean a_i (γ = 1), c⁺ = Σ δ_i / N = −0.375 (a_0 + a_1) for N = 2."""
    a = torch.tensor([[1.0, 2.0, -4.0], [3.0, 0.0, 8.0]], dtype=torch.float64)
    method = Scaffold(SimComm(2), torch.zeros(3, dtype=torch.float64).repeat(2, 1), n_clients=2, local_steps=2,
                      local_lr=0.5)
    method.round(lambda y, clients, t, k: y - a[clients])
    torch.testing.assert_close(method.x, torch.tensor([1.5, 0.75, 1.5], dtype=torch.float64))
    torch.testing.assert_close(method.c, torch.tensor([-1.5, -0.75, -1.5], dtype=torch.float64))
    torch.testing.assert_close(method.buffers["c"], -0.75 * a)


# --- SCAFFOLD's forms and the special cases ------------------------------------------------------


def _pair(make_a, make_b, rounds=12, n_clients=6, per_round=3, d=5):
    a, h = quadratic(n_clients, d, seed=1)
    common = dict(n_clients=n_clients, local_steps=3, local_lr=0.2, server_lr=1.5, seed=2)
    first = make_a(SimComm(per_round), torch.zeros(d, dtype=torch.float64).repeat(SimComm(per_round).local_workers, 1),
                   **common)
    second = make_b(SimComm(per_round), torch.zeros(d, dtype=torch.float64).repeat(SimComm(per_round).local_workers,
                                                                                   1), **common)
    return first, run_rounds(first, a, h, rounds), second, run_rounds(second, a, h, rounds)


def test_one_vector_scaffold_has_the_two_vector_iterates_with_half_the_uplink():
    one, (xs_one, rec_one), two, (xs_two, rec_two) = _pair(Scaffold, partial(Scaffold, two_vector=True))
    torch.testing.assert_close(xs_one, xs_two, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(one.buffers["c"], two.buffers["c"], rtol=1e-10, atol=1e-12)
    assert (xs_one[-1] - xs_one[0]).norm() > 0.5
    assert two.bits["uplink"] == 2 * one.bits["uplink"] == 12 * 3 * 2 * 5 * 64
    assert one.bits["downlink"] == two.bits["downlink"] == 12 * 3 * 2 * 5 * 64


def test_scafcom_with_beta_one_and_scallion_with_alpha_one_are_scaffold():
    identity = Identity()
    for special in (partial(Scafcom, compressor=identity, beta=1.0), partial(Scallion, compressor=identity, alpha=1.0)):
        _, (xs, _), _, (xs_scaffold, _) = _pair(special, Scaffold)
        torch.testing.assert_close(xs, xs_scaffold, rtol=1e-10, atol=1e-12)


def test_scallion_default_alpha_is_one_over_one_plus_omega():
    method = Scallion(SimComm(2), torch.zeros(100).repeat(2, 1), compressor=RandK(k=10), n_clients=4, local_steps=1,
                      local_lr=0.1)
    assert method.alpha == pytest.approx(1 / (1 + 9))
    with pytest.raises(ValueError, match="alpha"):
        Scallion(SimComm(2), torch.zeros(100).repeat(2, 1), compressor=TopK(k=10), n_clients=4, local_steps=1,
                 local_lr=0.1)


# --- bits, persistence and checkpoints -----------------------------------------------------------


def test_uplink_bits_are_exact_payload_bits_and_downlink_counts_x_and_c():
    d, k = 1000, 10
    x0 = torch.zeros(d)
    a, h = quadratic(8, d)
    a, h = a.float(), h.float()
    for make, vectors in ((partial(FedEF, compressor=TopK(k=k)), 1), (partial(Scafcom, compressor=TopK(k=k)), 2)):
        comm = SimComm(4)
        method = make(comm, x0.repeat(comm.local_workers, 1), n_clients=8, local_steps=2, local_lr=0.1)
        (record,) = method.round(noisy_gradients(a, h))
        per_client = k * 32 + min(k * math.ceil(math.log2(d)), d)  # values + index list
        assert record.info["uplink_bits"] == 4 * per_client == method.bits["uplink"]
        assert record.info["downlink_bits"] == 4 * vectors * d * 32
        assert comm.meter.bytes_sent.tolist() == [math.ceil(per_client / 8)] * 4  # packed payloads on the wire


def test_state_of_clients_that_are_not_sampled_persists():
    a, h = quadratic(6, 4)
    method = Scafcom(SimComm(2), torch.zeros(4, dtype=torch.float64).repeat(2, 1), compressor=TopK(k=2), n_clients=6,
                     local_steps=2, local_lr=0.1)
    run_rounds(method, a, h, 3)
    before = {name: b.clone() for name, b in method.buffers.items()}
    clients = method.sample(method.steps)
    method.round(noisy_gradients(a, h))
    idle = torch.ones(6, dtype=torch.bool)
    idle[clients] = False
    for name, b in method.buffers.items():
        assert torch.equal(b[idle], before[name][idle]) and not torch.equal(b[~idle], before[name][~idle])


@pytest.mark.parametrize("make", [partial(Scallion, compressor=QSGD(s=4)), partial(Scafcom, compressor=RandK(k=2)),
                                  partial(FedEF, compressor=TopK(k=1))])
def test_state_saved_and_restored_mid_run_continues_identically(make):
    a, h = quadratic(6, 5)
    common = dict(n_clients=6, local_steps=2, local_lr=0.1, seed=4)
    method = make(SimComm(3), torch.zeros(5, dtype=torch.float64).repeat(3, 1), **common)
    run_rounds(method, a, h, 3)
    saved = method.state_dict()
    xs, records = run_rounds(method, a, h, 3)
    restored = make(SimComm(3), torch.ones(5, dtype=torch.float64).repeat(3, 1), **common)
    restored.load_state_dict(saved)
    xs_again, records_again = run_rounds(restored, a, h, 3)
    assert torch.equal(xs, xs_again) and records == records_again
    assert restored.bits == method.bits
    assert all(torch.equal(restored.buffers[n], method.buffers[n]) for n in method.buffers)
    with pytest.raises(ValueError, match="saved by"):
        FedAvg(SimComm(3), torch.zeros(5, dtype=torch.float64).repeat(3, 1), **common).load_state_dict(saved)


# --- SimComm and gloo ranks agree -----------------------------------------------------------------


DIST_CASES = {
    "scafcom-topk": partial(Scafcom, compressor=TopK(k=2), beta=0.5),
    "scallion-qsgd": partial(Scallion, compressor=QSGD(s=2)),
    "fedef-topk": partial(FedEF, compressor=TopK(k=1)),
    "scaffold-dense": partial(Scaffold),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(DIST_CASES))
def test_simcomm_and_two_gloo_ranks_agree(name):
    n_clients, d, rounds = 6, 4, 5
    make = partial(DIST_CASES[name], n_clients=n_clients, local_steps=2, local_lr=0.1, seed=5, sampling="stratified")
    a, h = quadratic(n_clients, d)
    sim = make(SimComm(2), torch.zeros(d, dtype=torch.float64).repeat(2, 1))
    sim_xs, sim_records = run_rounds(sim, a, h, rounds)
    results = run_workers(fl_rank, 2, args=(make, n_clients, d, rounds), timeout=90)
    for r in results:
        assert r.status == "ok", f"rank {r.rank} ended {r.status}: {r.error}\n{r.traceback}"
    for rank, (xs, records, hosted, buffers, c, sent) in enumerate(r.value for r in results):
        assert torch.equal(xs, sim_xs) and torch.equal(c, sim.c)
        # the events' times are the ranks' wall clocks (no link to simulate): compare what was sent
        assert [(e.step, e.bytes, e.info) for e in records] == [(e.step, e.bytes, e.info) for e in sim_records]
        assert torch.equal(hosted, torch.arange(rank, n_clients, 2))  # rank j keeps group j's clients
        for buffer_name, rows in buffers.items():
            assert torch.equal(rows, sim.buffers[buffer_name][hosted])
        assert sent == float(sim.comm.meter.bytes_sent[rank])
    assert len({rec.info["clients"] for rec in sim_records}) > 1  # the sample changed between rounds


def test_remote_workers_need_stratified_sampling():
    class Remote(SimComm):  # a communicator hosting one of two workers, like a DistComm rank
        def __init__(self):
            super().__init__(2)
            self.ranks, self.local_workers = torch.tensor([1]), 1

    with pytest.raises(ValueError, match="stratified"):
        FedAvg(Remote(), torch.zeros(3).repeat(1, 1), n_clients=4, local_steps=1, local_lr=0.1)
    method = FedAvg(Remote(), torch.zeros(3).repeat(1, 1), n_clients=4, local_steps=1, local_lr=0.1,
                    sampling="stratified")
    assert method.hosted.tolist() == [1, 3]


# --- argument errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"local_lr": -0.1}, ValueError, "local_lr"),
        ({"local_lr": 0.0}, ValueError, "local_lr"),
        ({"server_lr": -1.0}, ValueError, "server_lr"),
        ({"n_clients": 2}, ValueError, "n_clients"),  # S = 3 > N = 2
        ({"local_steps": 0}, ValueError, "local_steps"),
        ({"local_steps": 1.5}, TypeError, "local_steps"),
        ({"beta": 0.0}, ValueError, "beta"),
        ({"beta": 1.5}, ValueError, "beta"),
        ({"sampling": "poisson"}, ValueError, "sampling"),
        ({"sampling": "stratified", "n_clients": 7}, ValueError, "multiple"),
        ({"compressor": "topk"}, TypeError, "compressor"),
        ({"seed": -1}, ValueError, "seed"),
    ],
)
def test_bad_arguments_are_rejected_clearly(kwargs, error, match):
    args = {"compressor": TopK(k=1), "n_clients": 6, "local_steps": 2, "local_lr": 0.1, **kwargs}
    with pytest.raises(error, match=match):
        Scafcom(SimComm(3), torch.zeros(4).repeat(3, 1), **args)


def test_bad_scallion_and_model_arguments():
    common = dict(n_clients=4, local_steps=1, local_lr=0.1)
    with pytest.raises(ValueError, match="alpha"):
        Scallion(SimComm(2), torch.zeros(4).repeat(2, 1), compressor=QSGD(), alpha=1.5, **common)
    with pytest.raises(ValueError, match="placement"):
        Scallion(SimComm(2), torch.zeros(4).repeat(2, 1), compressor=QSGD(), placement="middle", **common)
    with pytest.raises(ValueError, match="two_vector"):
        Scafcom(SimComm(2), torch.zeros(4).repeat(2, 1), compressor=TopK(k=1), two_vector=True, **common)
    with pytest.raises(ValueError, match=r"shape \[L, d\] with L = 2"):
        FedAvg(SimComm(2), torch.zeros(4), **common)
    with pytest.raises(ValueError, match="NaN"):
        FedAvg(SimComm(2), torch.tensor([[0.0, float("nan")]] * 2), **common)
    method = FedAvg(SimComm(2), torch.zeros(4).repeat(2, 1), **common)
    with pytest.raises(ValueError, match="grad_fn returned shape"):
        method.round(lambda y, clients, t, k: y[:, :2])
