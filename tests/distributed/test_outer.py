"""Outer optimisers (commlab.distributed.outer): hand computations, fragment schedules, quantised outer
gradients, the simulated clock of overlapped rounds, argument checks, and SimComm = DistComm."""

import math

import pytest
import torch
from outer_workers import least_squares_run, outer_on_rank

from commlab.comm import Link, SimComm
from commlab.comm.launch import run_workers
from commlab.compress import QSGD, LowPrecision, TopK
from commlab.compress.ef import EF14
from commlab.distributed.compressed import compressed_round
from commlab.distributed.gossip import consensus_distance
from commlab.distributed.outer import (
    CO2,
    DataParallel,
    DiLoCo,
    LocalSGD,
    NoLoCo,
    OuterSGD,
    StreamingDiLoCo,
    fragment_indices,
    group_matrix,
)
from commlab.models.stacked import StackedMLP


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# -- OuterSGD ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("form, nesterov", [("nesterov", True), ("heavy_ball", False)])
def test_outer_sgd_forms_match_torch_sgd_by_name(form, nesterov):
    theta, reference = rand(7), rand(7).clone()
    reference = theta.clone().requires_grad_(True)
    torch_sgd = torch.optim.SGD([reference], lr=0.7, momentum=0.9, nesterov=nesterov)
    outer = OuterSGD(lr=0.7, momentum=0.9, form=form)
    for k in range(4):
        delta = rand(7, seed=10 + k)
        outer.step(theta, delta)
        reference.grad = delta
        torch_sgd.step()
    torch.testing.assert_close(theta, reference.detach(), rtol=0, atol=1e-12)


def test_outer_sgd_by_hand_two_steps():
    d1, d2 = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.5])
    for form, expected in [
        # nesterov: b1 = d1; θ1 = -η(d1 + μ b1); b2 = μ d1 + d2; θ2 = θ1 - η(d2 + μ b2)
        ("nesterov", -0.5 * (d1 + 0.5 * d1) - 0.5 * (d2 + 0.5 * (0.5 * d1 + d2))),
        # heavy ball: θ2 = -η b1 - η b2
        ("heavy_ball", -0.5 * d1 - 0.5 * (0.5 * d1 + d2)),
    ]:
        theta = torch.zeros(2)
        outer = OuterSGD(lr=0.5, momentum=0.5, form=form)
        outer.step(theta, d1)
        outer.step(theta, d2)
        torch.testing.assert_close(theta, expected)


def test_clipping_really_bounds_the_momentum_and_changes_the_trajectory():
    clipped, free = OuterSGD(1.0, 0.9, "heavy_ball", clip=0.25), OuterSGD(1.0, 0.9, "heavy_ball")
    a, b = torch.zeros(50), torch.zeros(50)
    for k in range(5):
        delta = rand(50, seed=k, dtype=torch.float32)
        clipped.step(a, delta)
        free.step(b, delta)
        assert clipped.buffer.abs().max() <= 0.25
    assert free.buffer.abs().max() > 0.25 and not torch.allclose(a, b)


def test_outer_state_round_trips_and_is_per_shape():
    outer = OuterSGD()
    theta = torch.zeros(3)
    outer.step(theta, torch.ones(3))
    copy = OuterSGD()
    copy.load_state_dict(outer.state_dict())
    assert torch.equal(copy.buffer, outer.buffer) and outer.fresh().buffer is None
    with pytest.raises(ValueError, match="one instance per tensor"):
        outer.step(torch.zeros(4), torch.ones(4))


# -- DiLoCo -----------------------------------------------------------------------------------------


def test_one_outer_step_with_unit_lr_and_no_momentum_returns_the_average_of_the_local_models():
    comm = SimComm(4)
    params = torch.zeros(4, 5, dtype=torch.float64)
    algo = DiLoCo(comm, params, sync_every=1, outer=OuterSGD(lr=1.0, momentum=0.0))
    local = rand(4, 5)
    params.copy_(local)  # the H = 1 inner steps moved each replica to its own local model
    events = algo.after_inner_step()
    mean = local.mean(dim=0)
    torch.testing.assert_close(algo.outer_params, mean, rtol=0, atol=1e-15)
    assert all(torch.equal(row, algo.outer_params) for row in params)
    assert [e.kind for e in events] == ["sync"] and events[0].bytes == 5 * 8


def test_diloco_syncs_every_H_steps_with_nesterov_momentum_by_hand():
    comm = SimComm(2)
    params = torch.zeros(2, 3, dtype=torch.float64)
    algo = DiLoCo(comm, params, sync_every=2, outer=OuterSGD(lr=0.7, momentum=0.9))
    theta, b = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for k in range(3):
        params.add_(rand(2, 3, seed=k))
        assert algo.after_inner_step() == []  # odd step: no sync
        params.add_(rand(2, 3, seed=100 + k))
        local = params.clone()
        algo.after_inner_step()
        delta = (theta - local).mean(dim=0)
        b = 0.9 * b + delta
        theta = theta - 0.7 * (delta + 0.9 * b)
        torch.testing.assert_close(algo.outer_params, theta)
        torch.testing.assert_close(params, theta.expand(2, 3))
    summary = algo.summary()
    assert summary["syncs"] == 3 and summary["peak_bytes_per_sync"] == 3 * 8
    assert summary["bytes_per_worker"] == pytest.approx((3 + 1 / 2) * 3 * 8)  # 3 syncs + worker 0's init broadcast


def test_the_initial_broadcast_makes_replicas_equal_and_the_inner_optimiser_steps():
    comm = SimComm(3)
    params = rand(3, 4, dtype=torch.float32)
    first = params[0].clone()
    algo = DiLoCo(comm, params, sync_every=5, inner=lambda p: torch.optim.SGD([p], lr=0.5))
    assert all(torch.equal(row, first) for row in params) and algo.events[0].kind == "init"
    grad = rand(3, 4, seed=1, dtype=torch.float32)
    algo.step(grad)
    torch.testing.assert_close(params, first - 0.5 * grad)
    with pytest.raises(RuntimeError, match="inner optimiser"):
        DiLoCo(SimComm(3), rand(3, 4), sync_every=2).step(grad)


def test_data_parallel_steps_every_replica_on_the_mean_gradient():
    comm = SimComm(3)
    params = rand(3, 4)
    start = params[0].clone()
    algo = DataParallel(comm, params, inner=lambda p: torch.optim.SGD([p], lr=0.1))
    grads = [rand(3, 4, seed=k) for k in range(2)]
    events = algo.step(grads[0])
    algo.step(grads[1])
    torch.testing.assert_close(params, (start - 0.1 * grads[0].mean(0) - 0.1 * grads[1].mean(0)).expand(3, 4))
    assert [e.kind for e in events] == ["sync"] and algo.summary()["syncs"] == 2
    with pytest.raises(RuntimeError, match="call step"):
        algo.after_inner_step()
    with pytest.raises(TypeError, match="inner"):
        DataParallel(comm, params, inner=None)


def test_local_sgd_is_diloco_with_heavy_ball():
    outs = []
    for make in (lambda c, p: LocalSGD(c, p, sync_every=2, outer_lr=0.8, outer_momentum=0.5),
                 lambda c, p: DiLoCo(c, p, sync_every=2, outer=OuterSGD(0.8, 0.5, "heavy_ball"))):
        params = torch.zeros(3, 4, dtype=torch.float64)
        algo = make(SimComm(3), params)
        for k in range(6):
            params.add_(rand(3, 4, seed=k))
            algo.after_inner_step()
        outs.append(algo.outer_params)
    assert torch.equal(*outs)


# -- Streaming DiLoCo -------------------------------------------------------------------------------


def test_fragments_are_strided_over_layers_and_cover_every_parameter_once():
    layers = [(0, 3), (3, 10), (10, 12), (12, 20), (20, 21)]
    parts = fragment_indices(layers, 2, 21)
    assert parts[0].tolist() == [0, 1, 2, 10, 11, 20] and parts[1].tolist() == [*range(3, 10), *range(12, 20)]
    for P in (1, 2, 3, 5):
        assert torch.equal(torch.cat(fragment_indices(layers, P, 21)).sort().values, torch.arange(21))
    assert [len(p) for p in fragment_indices(None, 3, 10)] == [3, 4, 3]


def test_a_stacked_mlp_layer_travels_with_its_bias():
    model = StackedMLP((6, 5, 4, 3), replicas=2, generator=torch.Generator().manual_seed(0))
    first, second = fragment_indices(model.layer_slices, 2, model.d)
    # layers 0 and 2 (weights and biases) in fragment 0, layer 1 in fragment 1
    assert second.tolist() == list(range(6 * 5 + 5, 6 * 5 + 5 + 5 * 4 + 4))
    assert len(first) + len(second) == model.d


@pytest.mark.parametrize("P, tau", [(1, 0), (2, 1), (3, 2), (4, 0)])
def test_the_schedule_syncs_every_parameter_exactly_once_per_H_steps(P, tau):
    H, d = 12, 30
    layers = [(i * 5, i * 5 + 5) for i in range(6)]
    params = torch.zeros(2, d)
    algo = StreamingDiLoCo(SimComm(2), params, sync_every=H, fragments=P, overlap_steps=tau, layers=layers,
                           sync_init=False)
    for _ in range(3 * H):
        algo.after_inner_step()
    for r in range(3):
        sent = [e for e in algo.events if r * H < e.step <= (r + 1) * H]
        assert sorted(e.fragment for e in sent) == list(range(P))
        covered = torch.cat([algo.indices[e.fragment] for e in sent]).sort().values
        assert torch.equal(covered, torch.arange(d))


def test_streaming_with_one_fragment_no_overlap_no_quantiser_and_overwrite_is_diloco():
    results = []
    for make in (lambda c, p: DiLoCo(c, p, sync_every=4),
                 lambda c, p: StreamingDiLoCo(c, p, sync_every=4, fragments=1, overlap_steps=0, mixing=0.0,
                                              compressor=None)):
        params = rand(3, 6)
        algo = make(SimComm(3), params)
        for k in range(12):
            params.add_(rand(3, 6, seed=k))
            algo.after_inner_step()
        results.append((params.clone(), algo.outer_params.clone()))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_overlap_applies_the_fragment_tau_steps_later_and_mixes_with_alpha():
    comm = SimComm(2)
    params = torch.zeros(2, 4, dtype=torch.float64)
    algo = StreamingDiLoCo(comm, params, sync_every=4, fragments=2, overlap_steps=1, mixing=0.25, compressor=None,
                           outer=OuterSGD(1.0, 0.0), layers=[(0, 2), (2, 4)], sync_init=False)
    params.copy_(rand(2, 4))
    algo.after_inner_step()
    snapshot = params.clone()
    algo.after_inner_step()  # step 2: fragment 0 sent (snapshot), nothing applied yet
    assert torch.equal(params, snapshot) and algo.events[-1].fragment == 0
    params.add_(1.0)  # the workers keep training during the overlap
    algo.after_inner_step()  # step 3: fragment 0 applied: θ_g,0 = mean of the snapshot's fragment
    theta0 = snapshot[:, :2].mean(dim=0)
    torch.testing.assert_close(algo.global_fragments[0], theta0)
    torch.testing.assert_close(params[:, :2], 0.25 * (snapshot[:, :2] + 1) + 0.75 * theta0)
    torch.testing.assert_close(params[:, 2:], snapshot[:, 2:] + 1)  # fragment 1 untouched


def test_quantised_outer_gradients_dequantise_within_the_e3m0_bound_and_bits_are_counted():
    N, d, block = 3, 300, 128
    comm = SimComm(N)
    params = torch.zeros(N, d)
    algo = StreamingDiLoCo(comm, params, sync_every=1, fragments=1, overlap_steps=0, mixing=0.0, outer=OuterSGD(1.0,
                                                                                                                0.0),
                           block=block, sync_init=False)
    local = rand(N, d, dtype=torch.float32) * torch.logspace(-4, 0, d)  # magnitudes over four decades
    params.copy_(local)
    event = algo.after_inner_step()[0]
    # Δ_m = 0 - θ_m per worker; E3M0 per block: |Q(x) - x| <= max(|x|/3, 2^-7 · block max)
    delta = -local
    padded = torch.cat([delta, torch.zeros(N, 3 * block - d)], dim=1).reshape(N, 3, block)
    scale = padded.abs().amax(dim=2, keepdim=True).expand(-1, -1, block).reshape(N, -1)[:, :d]
    bound = torch.maximum(delta.abs() / 3, scale * 2.0**-7).mean(dim=0)
    error = (algo.outer_params - local.mean(dim=0)).abs()  # θ_g = 0 − mean Q(Δ_m)
    assert (error <= bound * (1 + 1e-5) + 1e-7).all() and error.max() > 0
    assert event.bytes == math.ceil(3 * (block * 4 + 32) / 8)  # 4-bit codes + a 32-bit scale per block
    assert comm.meter.calls == {"all_gather": 1}


def test_random_compressors_are_seeded_per_step_and_worker():
    def run(seed):
        params = rand(2, 40, dtype=torch.float32)
        algo = StreamingDiLoCo(SimComm(2), params, sync_every=2, fragments=1, overlap_steps=0, compressor=QSGD(s=2),
                               seed=seed)
        for k in range(4):
            params.add_(rand(2, 40, seed=k, dtype=torch.float32))
            algo.after_inner_step()
        return params

    assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))


def test_peak_bytes_fall_by_fragments_times_the_bit_ratio():
    d = 4096
    peaks = {}
    for name, kwargs in {"diloco": dict(fragments=1, compressor=None, overlap_steps=0),
                         "streaming": dict(fragments=2, overlap_steps=3)}.items():
        algo = StreamingDiLoCo(SimComm(2), torch.zeros(2, d), sync_every=30, **kwargs)
        for _ in range(60):
            algo.after_inner_step()
        peaks[name] = algo.summary()["peak_bytes_per_sync"]
    assert peaks["diloco"] == 4 * d
    assert peaks["streaming"] == (d // 2) // 128 * (128 * 4 + 32) / 8  # 2·8/(1 + 32/512) = 15.06x less
    assert peaks["diloco"] / peaks["streaming"] == pytest.approx(2 * 8 / (1 + 32 / 512))


# -- NoLoCo -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.7, 0.3, 0.0])  # β = γ sends θ; γ = 0 sends θ − φ; else φ and θ − φ
def test_noloco_update_for_a_pair_by_hand(gamma):
    comm = SimComm(2)
    phi0 = rand(2, 5)
    params = phi0.clone()
    algo = NoLoCo(comm, params, sync_every=1, momentum=0.5, progress_weight=0.7, pull_weight=gamma, sync_init=False)
    theta = phi0 + rand(2, 5, seed=1)
    params.copy_(theta)
    algo.after_inner_step()
    delta = 0.7 * (theta - phi0).mean(dim=0) + gamma * (phi0.mean(dim=0) - phi0)
    torch.testing.assert_close(algo.phi, phi0 + delta)
    torch.testing.assert_close(params, phi0 + delta)
    assert comm.meter.calls == {"mix": 1} and comm.meter.peak_bytes == 5 * 8 * (2 if gamma == 0.3 else 1)
    # second step: the momentum carries α·δ
    theta2 = params + rand(2, 5, seed=2)
    phi1 = algo.phi.clone()
    params.copy_(theta2)
    algo.after_inner_step()
    delta2 = 0.5 * delta + 0.7 * (theta2 - phi1).mean(dim=0) + gamma * (phi1.mean(dim=0) - phi1)
    torch.testing.assert_close(algo.phi, phi1 + delta2)


def test_noloco_with_odd_n_leaves_one_replica_to_a_local_step():
    comm = SimComm(3)
    phi0 = rand(3, 4)
    params = phi0.clone()
    algo = NoLoCo(comm, params, sync_every=1, progress_weight=0.7, pull_weight=0.7, sync_init=False)
    groups = algo.groups(0)
    assert sorted(len(g) for g in groups) == [1, 2] and sorted(sum(groups, [])) == [0, 1, 2]
    theta = phi0 + rand(3, 4, seed=1)
    params.copy_(theta)
    algo.after_inner_step()
    (single,) = [g[0] for g in groups if len(g) == 1]
    pair = next(g for g in groups if len(g) == 2)
    torch.testing.assert_close(algo.phi[single], phi0[single] + 0.7 * (theta[single] - phi0[single]))
    for i in pair:
        expected = phi0[i] + 0.7 * (theta[pair].mean(dim=0) - phi0[i])
        torch.testing.assert_close(algo.phi[i], expected)
    assert comm.meter.bytes_sent[single] == 0 and (comm.meter.bytes_sent[pair] == 4 * 8).all()


def test_noloco_groups_are_a_shared_permutation_that_changes_with_the_step():
    algo = NoLoCo(SimComm(8), torch.zeros(8, 2), sync_every=1, seed=5)
    again = NoLoCo(SimComm(8), torch.zeros(8, 2), sync_every=1, seed=5)
    seen = set()
    for k in range(6):
        groups = algo.groups(k)
        assert groups == again.groups(k) and sorted(sum(groups, [])) == list(range(8))
        assert all(len(g) == 2 for g in groups)
        seen.add(tuple(map(tuple, groups)))
    assert len(seen) > 1
    W = group_matrix(algo.groups(0), 8)
    torch.testing.assert_close(W.sum(dim=1), torch.ones(8, dtype=torch.float64))


def test_the_pull_toward_the_pair_mean_keeps_replicas_together():
    distances = {}
    for gamma in (0.7, 0.0):
        params = torch.zeros(8, 20, dtype=torch.float64)
        algo = NoLoCo(SimComm(8), params, sync_every=1, momentum=0.5, progress_weight=0.7, pull_weight=gamma)
        for k in range(40):
            params.add_(rand(8, 20, seed=k))  # independent random walks
            algo.after_inner_step()
        distances[gamma] = consensus_distance(algo.phi)
    assert distances[0.7] < 0.2 * distances[0.0]


# -- CO2 and local SGD ------------------------------------------------------------------------------


def test_co2_takes_the_stale_outer_gradient_relative_to_the_previous_anchor():
    comm = SimComm(2)
    params = torch.zeros(2, 3, dtype=torch.float64)
    x0 = params[0].clone()
    algo = CO2(comm, params, sync_every=1, outer_lr=1.0, outer_momentum=0.0)
    ys = [rand(2, 3, seed=k) for k in range(3)]
    params.copy_(ys[0])
    algo.after_inner_step()  # round 0: average launched, nothing applied
    assert torch.equal(algo.outer_params, x0) and torch.equal(params, x0.expand(2, 3))
    params.copy_(ys[1])
    algo.after_inner_step()  # round 1: x1 = x0 − (x0 − ȳ0) = ȳ0
    x1 = ys[0].mean(dim=0)
    torch.testing.assert_close(algo.outer_params, x1)
    params.copy_(ys[2])
    algo.after_inner_step()  # round 2 uses ȳ1, whose round started from x0 (= x_o,prev), not x1
    x2 = x1 - (x0 - ys[1].mean(dim=0))
    torch.testing.assert_close(algo.outer_params, x2)
    torch.testing.assert_close(params, x2.expand(2, 3))
    algo.finish()  # the last average (round 2, started from x1)
    torch.testing.assert_close(algo.outer_params, x2 - (x1 - ys[2].mean(dim=0)))


def test_co2_relative_gap_penalty_divides_each_layer_by_its_own_factor():
    comm = SimComm(2)
    params = torch.zeros(2, 4, dtype=torch.float64)
    algo = CO2(comm, params, sync_every=1, outer_lr=1.0, outer_momentum=0.0, gap_penalty="relative", penalty=2.0,
               layers=[(0, 2), (2, 4)])
    ys = [rand(2, 4, seed=k) for k in range(3)]
    for y in ys[:2]:
        params.copy_(y)
        algo.after_inner_step()
    x0, x1 = torch.zeros(4, dtype=torch.float64), ys[0].mean(dim=0)  # first step: no gap, Λ = 1
    torch.testing.assert_close(algo.outer_params, x1)
    params.copy_(ys[2])
    algo.after_inner_step()
    raw, gap = x0 - ys[1].mean(dim=0), x1 - x0
    expected = x1.clone()
    for s in (slice(0, 2), slice(2, 4)):
        expected[s] -= raw[s] / (1 + 2.0 * gap[s].norm() / raw[s].norm())
    torch.testing.assert_close(algo.outer_params, expected)


def test_co2_clipping_bounds_the_outer_momentum():
    params = torch.zeros(2, 10)
    algo = CO2(SimComm(2), params, sync_every=1, outer_momentum=0.9, clip=0.05)
    for k in range(6):
        params.add_(rand(2, 10, seed=k, dtype=torch.float32))
        algo.after_inner_step()
    assert algo.outer.buffer.abs().max() <= 0.05


@pytest.mark.parametrize("ratio, speedup", [(0.5, 1.5), (1.0, 2.0), (3.0, 4 / 3)])
def test_overlapped_rounds_cost_max_of_compute_and_link_time(ratio, speedup):
    tau, c, d, N = 4, 0.01, 1000, 4
    link = Link(bandwidth=1e6, latency=0.0)
    C = link.seconds("all_reduce", 4 * d, N)
    link = Link(bandwidth=1e6 * C / (ratio * tau * c))  # scale the link so that C = ratio·τc
    C = link.seconds("all_reduce", 4 * d, N)
    assert C == pytest.approx(ratio * tau * c, rel=1e-12)
    clocks = {}
    for name, make in {"sync": LocalSGD, "co2": CO2}.items():
        comm = SimComm(N, link=link)
        algo = make(comm, torch.zeros(N, d), sync_every=tau, step_seconds=c, sync_init=False)
        ends = []
        for _ in range(10):
            for _ in range(tau):
                algo.after_inner_step()
            ends.append(comm.clock)
        clocks[name] = ends[-1] - ends[-2]  # one round in steady state
    assert clocks["sync"] == pytest.approx(tau * c + C, abs=1e-12)
    assert clocks["co2"] == pytest.approx(max(tau * c, C), abs=1e-12)
    assert clocks["sync"] / clocks["co2"] == pytest.approx(speedup, abs=1e-9)


def test_data_parallel_compresses_the_gradient_after_a_dense_warm_up():
    g = torch.Generator().manual_seed(3)
    grads = [torch.randn(3, 10, generator=g, dtype=torch.float64) for _ in range(5)]
    params = torch.zeros(3, 10, dtype=torch.float64)
    algo = DataParallel(SimComm(3), params, inner=lambda p: torch.optim.SGD([p], lr=0.1), mechanism=EF14(TopK(k=2)),
                        compress_from=2, sync_init=False)
    reference, mechanism, comm = torch.zeros(10, dtype=torch.float64), EF14(TopK(k=2)), SimComm(3)
    for t, grad in enumerate(grads):
        algo.step(grad)
        step = grad.mean(dim=0) if t < 2 else compressed_round(comm, mechanism, grad)[0]
        reference.add_(step, alpha=-0.1)  # torch.optim.SGD's arithmetic
        assert torch.equal(params, reference.expand(3, -1))
    assert [e.info.get("compressed", False) for e in algo.events] == [False, False, True, True, True]
    assert algo.summary()["bytes_per_worker"] == 2 * 80 + float(comm.meter.bytes_sent[0])
    with pytest.raises(TypeError, match="Mechanism"):
        DataParallel(SimComm(3), params, inner=lambda p: torch.optim.SGD([p], lr=0.1), mechanism=TopK(k=2))


# -- the simulated clock of started collectives -------------------------------------------------------


def test_started_collectives_overlap_the_clock_and_queue_on_the_link():
    link = Link(bandwidth=8e6, latency=0.0)  # 1 µs per byte; all-reduce of 1000 B on 2 workers: 1 ms
    comm = SimComm(2, link=link)
    x = torch.zeros(2, 250)
    first = comm.start("all_reduce", x)
    second = comm.start("all_reduce", x)
    assert comm.clock == 0.0 and first.finish_time == pytest.approx(1e-3)
    assert second.start_time == pytest.approx(1e-3) and second.finish_time == pytest.approx(2e-3)
    comm.advance(0.5e-3)
    first.wait()
    assert comm.clock == pytest.approx(1e-3)
    comm.advance(5e-3)
    second.wait()  # long done: waiting costs nothing
    assert comm.clock == pytest.approx(6e-3)
    third = comm.start("exchange", x, [(0, 1)])
    comm.all_reduce(x)  # a blocking collective waits for the link, then takes its own time
    assert comm.clock == pytest.approx(third.finish_time + 1e-3) and comm.meter.syncs == 4
    with pytest.raises(ValueError, match="op must be one of"):
        comm.start("barrier", x)


# -- argument checks --------------------------------------------------------------------------------


def test_bad_arguments_are_rejected_clearly():
    comm, p = SimComm(2), torch.zeros(2, 8)
    with pytest.raises(ValueError, match="sync_every must be >= 1"):
        DiLoCo(comm, p, sync_every=0)
    with pytest.raises(ValueError, match="divisible by the number of fragments"):
        StreamingDiLoCo(comm, p, sync_every=10, fragments=3)
    with pytest.raises(ValueError, match=r"overlap_steps must be in \[0, sync_every/fragments\)"):
        StreamingDiLoCo(comm, p, sync_every=10, fragments=2, overlap_steps=5)
    for alpha in (-0.1, 1.5):
        with pytest.raises(ValueError, match="mixing"):
            StreamingDiLoCo(comm, p, sync_every=10, mixing=alpha)
    with pytest.raises(ValueError, match="momentum must be in"):
        NoLoCo(comm, p, sync_every=2, momentum=1.0)
    with pytest.raises(ValueError, match="tile"):
        StreamingDiLoCo(comm, p, sync_every=4, layers=[(0, 4), (3, 8)])
    with pytest.raises(ValueError, match="tile"):
        StreamingDiLoCo(comm, p, sync_every=4, layers=[(0, 4), (4, 7)])
    with pytest.raises(ValueError, match="number of layers"):
        StreamingDiLoCo(comm, p, sync_every=4, fragments=4, overlap_steps=0, layers=[(0, 4), (4, 8)])
    with pytest.raises(ValueError, match=r"shape \[L, d\]"):
        DiLoCo(comm, torch.zeros(3, 8), sync_every=2)
    with pytest.raises(TypeError, match="floating"):
        DiLoCo(comm, torch.zeros(2, 8, dtype=torch.int64), sync_every=2)
    with pytest.raises(ValueError, match="group_size"):
        NoLoCo(comm, p, sync_every=2, group_size=1)
    with pytest.raises(ValueError, match="gap_penalty"):
        CO2(comm, p, gap_penalty="linear")
    with pytest.raises(ValueError, match="penalty must be >= 1"):
        CO2(comm, p, penalty=0.5)
    with pytest.raises(ValueError, match="form"):
        OuterSGD(form="textbook")
    with pytest.raises(ValueError, match="momentum"):
        OuterSGD(momentum=1.0)
    with pytest.raises(TypeError, match="Compressor"):
        StreamingDiLoCo(comm, p, sync_every=4, compressor="e3m0")
    with pytest.raises(TypeError, match="OuterSGD"):
        DiLoCo(comm, p, sync_every=2, outer=torch.optim.SGD)


# -- one code path: SimComm and DistComm agree -------------------------------------------------------


def test_the_e3m0_default_is_the_low_precision_compressor():
    algo = StreamingDiLoCo(SimComm(2), torch.zeros(2, 8), sync_every=4)
    assert isinstance(algo.compressor, LowPrecision) and algo.compressor.format == "e3m0"


@pytest.mark.timeout(120)
def test_sim_equals_dist_on_three_gloo_processes():
    # three workers: NoLoCo pairs two and leaves one alone, with pairings that change every outer step
    algos = ["diloco", "noloco", "noloco-general", "streaming"]
    sim = {algo: least_squares_run(SimComm(3), algo, steps=12, seed=1) for algo in algos}
    results = run_workers(outer_on_rank, 3, args=(algos, 12, 1), timeout=90)
    for r in results:
        assert r.status == "ok", f"rank {r.rank} ended {r.status}: {r.error}\n{r.traceback}"
        for algo in algos:
            trajectory, outer, sent, syncs = r.value[algo]
            expected_traj, expected_outer, expected_sent, expected_syncs = sim[algo]
            assert torch.equal(trajectory[:, 0], expected_traj[:, r.rank]), algo
            expected_outer = expected_outer[r.rank : r.rank + 1] if algo.startswith("noloco") else expected_outer
            assert torch.equal(outer, expected_outer), algo
            assert torch.equal(sent, expected_sent[r.rank : r.rank + 1]) and syncs == expected_syncs, algo
    for algo in algos:
        assert not torch.equal(sim[algo][0][-1], sim[algo][0][0])  # the runs did move
    final_phi = sim["noloco"][1]
    assert not torch.equal(final_phi[0], final_phi[1]) and not torch.equal(final_phi[1], final_phi[2])
