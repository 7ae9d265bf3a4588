"""Deep Gradient Compression: a hand-computed step, the dense limit, SimComm = DistComm, checkpoints,
bit accounting, the adaptive sampled threshold and bad arguments."""

import math

import pytest
import torch
from dgc_workers import dgc_descent, dgc_rank

from commlab.comm import SimComm
from commlab.comm.launch import run_workers
from commlab.compress import SampledTopK
from commlab.compress.sparsify import sampled_threshold_select
from commlab.distributed.compressed import gather_varying
from commlab.distributed.dgc import ABLATION_ARMS, DGC, DensityWarmup

pytestmark = pytest.mark.timeout(120)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_two_steps_match_a_hand_computation_with_clipping_correction_and_masking():
    # N = 2, d = 4, k = 1, m = 0.5, lr = 0.1, weight decay 0.1, clip 2·sqrt(2) -> 2 per worker
    w = torch.ones(2, 4, dtype=torch.float64)
    opt = DGC(SimComm(2), w, lr=0.1, momentum=0.5, weight_decay=0.1, density=0.25, clip_norm=2 * math.sqrt(2))
    (step,) = opt.step(torch.tensor([[3.0, 0, 0, 4], [0, 1, 0, 0]], dtype=torch.float64))
    # worker 0 clipped to [1.2, 0, 0, 1.6]: u = v = that; it sends 1.6 at 3, masking clears u[3] and v[3]
    assert step.info["counts"] == (1, 1)
    torch.testing.assert_close(opt.u, torch.tensor([[1.2, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float64))
    torch.testing.assert_close(opt.v, torch.tensor([[1.2, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float64))
    # G = [0, 0.5, 0, 0.8]; b = 0.1·w = 0.1; w = 1 − 0.1·(G + b)
    torch.testing.assert_close(w, torch.tensor([[0.99, 0.94, 0.99, 0.91]] * 2, dtype=torch.float64))
    opt.step(torch.tensor([[0, 0, 0, 0.5], [0, 0, 1, 0]], dtype=torch.float64))
    # worker 0: u = 0.5·[1.2,0,0,0] + g = [0.6,0,0,0.5]; v = [1.8,0,0,0.5]; sends 1.8 at 0
    torch.testing.assert_close(opt.u, torch.tensor([[0, 0, 0, 0.5], [0, 0, 0, 0]], dtype=torch.float64))
    torch.testing.assert_close(opt.v, torch.tensor([[0, 0, 0, 0.5], [0, 0, 0, 0]], dtype=torch.float64))
    # G = [0.9, 0, 0.5, 0]; b = 0.5·0.1 + 0.1·w1; w2 = w1 − 0.1·(G + b)
    torch.testing.assert_close(w, torch.tensor([[0.8851, 0.9256, 0.9251, 0.8959]] * 2, dtype=torch.float64))


def test_without_masking_the_momentum_keeps_the_sent_coordinates():
    w = torch.zeros(1, 4, dtype=torch.float64)
    opt = DGC(SimComm(1), w, lr=1.0, momentum=0.5, density=0.25, masking=False)
    opt.step(torch.tensor([[0, 0, 0, 2.0]], dtype=torch.float64))
    torch.testing.assert_close(opt.u, torch.tensor([[0, 0, 0, 2.0]], dtype=torch.float64))
    torch.testing.assert_close(opt.v, torch.zeros(1, 4, dtype=torch.float64))


def test_without_accumulation_what_was_not_sent_is_dropped():
    w = torch.zeros(1, 4, dtype=torch.float64)
    opt = DGC(SimComm(1), w, lr=1.0, **ABLATION_ARMS["no-accumulation"], density=0.25)
    opt.step(torch.tensor([[1.0, 0, 0, 2.0]], dtype=torch.float64))
    assert not opt.v.any()
    # server momentum over the sent coordinate only
    torch.testing.assert_close(w, torch.tensor([[0, 0, 0, -2.0]], dtype=torch.float64))


@pytest.mark.parametrize("arm", [dict(momentum_correction=False, masking=False),
                                 dict(momentum_correction=True, masking=False)])
@pytest.mark.parametrize("nesterov", [False, True])
def test_density_one_is_momentum_sgd_on_the_mean_gradient(arm, nesterov):
    g = gen(3)
    N, d, wd = 3, 7, 0.0 if arm["momentum_correction"] else 0.01
    w = torch.randn(1, d, generator=g, dtype=torch.float64)
    reference = torch.nn.Parameter(w[0].clone())
    sgd = torch.optim.SGD([reference], lr=0.1, momentum=0.9, weight_decay=wd, nesterov=nesterov)
    params = w.expand(N, d).clone()
    comm = SimComm(N)
    opt = DGC(comm, params, lr=0.1, momentum=0.9, weight_decay=wd, nesterov=nesterov, density=1.0, **arm)
    for _ in range(5):
        grads = torch.randn(N, d, generator=g, dtype=torch.float64)
        (record,) = opt.step(grads)
        reference.grad = grads.mean(dim=0)
        sgd.step()
    torch.testing.assert_close(params, reference.detach().expand(N, d), rtol=0, atol=1e-12)
    assert record.info["row_bits"] == (32 * d,) * N and comm.meter.calls == {"all_reduce": 5}


def test_sim_and_two_gloo_ranks_agree_bit_for_bit():
    sim_iterates, sim_u, sim_v, sim_records, sim_bytes = dgc_descent(SimComm(2), seed=4)
    results = run_workers(dgc_rank, 2, args=(4,), timeout=90)
    for r in results:
        assert r.status == "ok", f"rank {r.rank} ended {r.status}: {r.error}\n{r.traceback}"
        iterates, u, v, records, sent = r.value
        assert torch.equal(iterates, sim_iterates), f"rank {r.rank} left the simulator's trajectory"
        assert torch.equal(u, sim_u[r.rank : r.rank + 1]) and torch.equal(v, sim_v[r.rank : r.rank + 1])
        assert [rec.info["row_bits"][0] for rec in records] == [rec.info["row_bits"][r.rank] for rec in sim_records]
        assert torch.equal(sent, sim_bytes[r.rank : r.rank + 1])
    assert not torch.equal(sim_iterates[-1], sim_iterates[0])
    # the warm-up ran: 2 phases over 4 steps, then the final density
    assert [rec.info["k"] for rec in sim_records] == [math.ceil(0.02 ** 0.5 * 300)] * 2 + [6] * 6


def test_a_restored_checkpoint_continues_exactly():
    g = gen(5)
    N, d = 3, 200
    targets = torch.randn(N, d, generator=g)

    def run(opt, params, steps):
        for _ in range(steps):
            opt.step(params - targets + 0.1 * torch.sin(params * 3))

    def make(params):
        return DGC(SimComm(N), params, lr=0.05, weight_decay=1e-4, density=DensityWarmup(0.01, 6, phases=3),
                   clip_norm=10.0, seed=7)

    params = torch.zeros(N, d)
    opt = make(params)
    run(opt, params, 4)
    saved, saved_params = opt.state_dict(), params.clone()
    run(opt, params, 5)
    restored_params = saved_params.clone()
    restored = make(restored_params)
    restored.load_state_dict(saved)
    run(restored, restored_params, 5)
    assert torch.equal(restored_params, params) and torch.equal(restored.u, opt.u) and torch.equal(restored.v, opt.v)
    assert restored.steps == opt.steps == 9
    with pytest.raises(ValueError, match="params have shape"):
        DGC(SimComm(2), torch.zeros(2, d), lr=0.1).load_state_dict(saved)


def test_wire_bits_count_values_indices_and_the_count():
    N, d = 4, 1000
    comm = SimComm(N)
    opt = DGC(comm, torch.zeros(N, d), lr=0.1, density=0.01)
    (record,) = opt.step(torch.randn(N, d, generator=gen(1)))
    assert record.info["k"] == 10 and record.info["dense_bits"] == 32 * d
    for count, bits in zip(record.info["counts"], record.info["row_bits"], strict=True):
        assert 8 <= count <= 10
        assert bits == count * 32 + count * 10 + 32  # ceil(log2 1000) = 10 bits per index
    # the all-gather is of fixed size: each worker's bytes are the largest message, plus its count
    assert comm.meter.calls == {"all_gather": 2}
    assert torch.all(comm.meter.bytes_sent == 4 + math.ceil(max(record.info["counts"]) * 42 / 8))


def test_gather_varying_delivers_payloads_of_different_sizes():
    compressor = SampledTopK(0.1)
    x = torch.randn(3, 50, generator=gen(2))
    rows = [compressor.compress_at(x[i], torch.arange(i + 1) * 7) for i in range(3)]
    received = gather_varying(SimComm(3), rows)
    for sent, got in zip(rows, received, strict=True):
        assert torch.equal(compressor.decompress(sent), compressor.decompress(got))


@pytest.mark.parametrize("seed", range(5))
def test_adaptive_sampled_topk_selects_between_0_8_and_1_3_k(seed):
    x = torch.randn(200_000, generator=gen(seed)) * torch.rand(200_000, generator=gen(seed + 10))
    k = 200
    picked = sampled_threshold_select(x, k, gen(seed + 20))
    assert 0.8 * k <= picked.indices.numel() <= 1.3 * k
    assert torch.all(picked.indices[1:] > picked.indices[:-1])
    rest = torch.ones_like(x, dtype=torch.bool)
    rest[picked.indices] = False
    assert x[picked.indices].abs().min() >= x[rest].abs().max()


def test_the_threshold_is_lowered_when_the_sample_overshoots():
    # a sample of 100 sets the threshold at its maximum, which about half the time leaves fewer
    # than 0.8 k = 80 of the 10,000 coordinates above it: only the lowering loop then reaches k
    x = torch.randn(10_000, generator=gen(0))
    adapted = 0
    for seed in range(10):
        picked = SampledTopK(0.01, sample_ratio=0.01).select(x, gen(seed))
        assert 80 <= picked.indices.numel() <= 100
        one_shot = SampledTopK(0.01, sample_ratio=0.01, adapt_steps=0).select(x, gen(seed))
        assert one_shot.adaptations == 0 and one_shot.indices.numel() == min(one_shot.sampled, 100)
        assert picked.sampled == one_shot.sampled
        if picked.sampled < 80:
            adapted += 1
            assert picked.adaptations >= 1 and picked.candidates >= 80
    assert adapted >= 2


def test_density_warmup_follows_the_exponential_schedule():
    schedule = DensityWarmup(0.001, warmup_steps=10)
    got = [schedule(s) for s in range(12)]
    expected = [0.001 ** (p / 5) for p in (1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5, 5)]
    assert got == pytest.approx(expected)
    assert got[0] == pytest.approx(0.2512, abs=1e-4) and got[6] == pytest.approx(0.00398, abs=1e-5)
    assert DensityWarmup(0.01, 0)(0) == 0.01


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=-0.1), "lr"),
    (dict(lr=0.0), "lr"),
    (dict(momentum=1.0), "momentum"),
    (dict(momentum=-0.1), "momentum"),
    (dict(density=0.0), "density"),
    (dict(density=1.5), "density"),
    (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(clip_norm=0.0), "clip_norm"),
    (dict(momentum_correction=False), "masking"),
    (dict(nesterov=True, momentum=0.0), "nesterov"),
    (dict(accumulate=1), "accumulate"),
    (dict(sample_ratio=0.0), "sample_ratio"),
    (dict(lower=1.5), "lower"),
    (dict(seed=-1), "seed"),
])
def test_bad_arguments_are_rejected_by_name(kwargs, match):
    args = dict(lr=0.1) | kwargs
    with pytest.raises((TypeError, ValueError), match=match):
        DGC(SimComm(2), torch.zeros(2, 5), **args)


def test_bad_shapes_and_schedules_are_rejected():
    with pytest.raises(ValueError, match="local workers"):
        DGC(SimComm(3), torch.zeros(2, 5), lr=0.1)
    opt = DGC(SimComm(2), torch.zeros(2, 5), lr=0.1)
    with pytest.raises(ValueError, match="shape of params"):
        opt.step(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="NaN"):
        opt.step(torch.full((2, 5), float("nan")))
    with pytest.raises(ValueError, match="density must be in"):
        DGC(SimComm(1), torch.zeros(1, 5), lr=0.1, density=lambda step: 0.0).step(torch.ones(1, 5))
    for bad, match in [(dict(final=0.0, warmup_steps=5), "final"), (dict(final=0.1, warmup_steps=3), "warmup_steps"),
                       (dict(final=0.1, warmup_steps=5, phases=0), "phases")]:
        with pytest.raises(ValueError, match=match):
            DensityWarmup(**bad)


def test_the_batched_compressor_adapts_every_row_and_one_row_matches_select():
    x = torch.randn(6, 5000, generator=gen(3)) * torch.rand(6, 1, generator=gen(4))
    compressor = SampledTopK(0.01, sample_ratio=0.01)  # k = 50 from samples of 50: one hit each
    out = compressor(x, gen(5))
    counts = (out != 0).sum(dim=1)
    assert ((counts >= 40) & (counts <= 50)).all()
    one_shot = (SampledTopK(0.01, sample_ratio=0.01, adapt_steps=0)(x, gen(5)) != 0).sum(dim=1)
    assert (one_shot < 40).any()  # the same draws without the loop leave some row short
    for row, full in zip(out, x, strict=True):
        kept = row != 0
        assert full.abs()[kept].min() >= full.abs()[~kept].max()
    one = compressor.compress(x[0], gen(6))
    assert torch.equal(one["indices"].data, compressor.select(x[0], gen(6)).indices)
