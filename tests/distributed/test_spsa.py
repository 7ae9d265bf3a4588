"""Shared-seed SPSA ("one byte per gradient"): the hand-computed step, bit-identical replicas on SimComm
and on gloo ranks, churn, checkpoints, the byte count, and the LogByte quantiser."""

import math
from types import SimpleNamespace

import pytest
import torch
from spsa_workers import D, churn_schedule, least_squares_loss, run_spsa, spsa_rank

from commlab.comm import SimComm
from commlab.comm.hashing import replica_hashes, state_hash
from commlab.comm.launch import run_workers
from commlab.comm.membership import Membership
from commlab.compress import Identity, LogByte
from commlab.distributed.spsa import SharedSeedSPSA, perturbation, replay
from commlab.seeding import SeedTree


def _quadratic(params, machine, step):
    """0.5‖θ − target_m‖² with target_m = (m + 1)·(1, 2, 3): a tiny model computed by hand below."""
    target = (machine + 1) * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    return 0.5 * ((params - target) ** 2).sum(dim=-1)


def _algo(comm, **kwargs):
    settings = dict(lr=0.05, samples=3, seed=11)
    settings.update(kwargs)
    return SharedSeedSPSA(comm, torch.linspace(-1, 1, D, dtype=torch.float64).repeat(comm.local_workers, 1),
                          **settings)


def rnd(algo, loss=least_squares_loss) -> SimpleNamespace:
    """One round; what its sync event reports (p, p_hat, bytes_sent, join_bytes, active, joined)."""
    return SimpleNamespace(**algo.round(loss)[-1].info)


# -- the algorithm ---------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", ["sqrt", "mean"])
def test_one_round_matches_a_hand_computation(normalize):
    theta0 = torch.tensor([0.5, -0.25, 1.0], dtype=torch.float64)
    lr, eps, S = 0.1, 1e-3, 2
    algo = SharedSeedSPSA(SimComm(2), theta0.repeat(2, 1), lr=lr, eps=eps, samples=S, scalars=Identity(), seed=5,
                          normalize=normalize)
    record = rnd(algo, _quadratic)
    expected = theta0.clone()
    n = 2 * S
    for m in (0, 1):
        target = (m + 1) * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
        for s in range(S):
            z = torch.randn(3, generator=SeedTree(5).torch("spsa", 0, m, s), dtype=torch.float64)
            # the central difference of a quadratic is exact: p = zᵀ(θ − target)
            p = float(z @ (theta0 - target))
            assert record.p[m, s].item() == pytest.approx(p, rel=1e-6)
            p_hat = float(torch.tensor(record.p[m, s].item(), dtype=torch.float32))  # fp32 on the wire
            assert record.p_hat[m, s].item() == p_hat
            expected -= lr * p_hat / (math.sqrt(n) if normalize == "sqrt" else n) * z
    torch.testing.assert_close(algo.params, expected.expand(2, 3), rtol=0, atol=1e-15)
    assert torch.equal(algo.params[0], algo.params[1])


def test_logbyte_scalars_are_the_decoded_bytes_and_cost_one_byte_each():
    comm = SimComm(3)
    algo = _algo(comm, scalars=LogByte())
    for _ in range(4):
        record = rnd(algo)
        codes = LogByte().encode(record.p.to(torch.float32))
        assert torch.equal(record.p_hat, LogByte().decode(codes).float().double())  # decoded as float32
        assert torch.equal(record.bytes_sent, torch.full((3,), 3.0))  # S = 3 scalars, one byte each
    assert comm.meter.summary()["calls"] == {"broadcast": 12}  # one broadcast per machine per round
    fp32 = SimComm(3)
    rnd(_algo(fp32, scalars=Identity()))
    assert torch.equal(fp32.meter.bytes_sent, torch.full((3,), 12.0))


def test_perturbations_depend_on_every_key_and_nothing_else():
    z = perturbation(3, 7, 2, 1, 50)
    assert torch.equal(z, perturbation(3, 7, 2, 1, 50))
    for other in [(4, 7, 2, 1), (3, 8, 2, 1), (3, 7, 1, 1), (3, 7, 2, 0)]:
        assert not torch.equal(z, perturbation(*other, 50))


def test_replicas_stay_bit_identical_and_the_log_replays_them():
    algo = _algo(SimComm(4), lr=0.2)
    start = algo.params[0].clone()
    for _ in range(10):
        rnd(algo)
        assert len(set(algo.hashes().values())) == 1 and algo.max_gap() == 0.0
    assert not torch.equal(algo.params[0], start)
    assert torch.equal(replay(start, algo.log, seed=11, lr=0.2), algo.params[0])
    assert not torch.equal(replay(start, algo.log, seed=12, lr=0.2), algo.params[0])


def test_churn_keeps_replicas_identical_and_charges_only_active_machines():
    comm = SimComm(6)
    members = Membership([0, 1, 2, 3]).leave(3, at=3).join(5, at=5)
    algo = _algo(comm, membership=members)
    start = algo.params[0].clone()
    records = []
    for step in range(8):
        records.append(rnd(algo))
        hashes = algo.hashes()
        assert set(hashes) == set(members.active(step)) and len(set(hashes.values())) == 1
        if step == 2:
            left_with = algo.params[3].clone()  # machine 3's last round
    for record in records:
        assert record.bytes_sent[list(record.active)].eq(3).all()
        assert record.bytes_sent[[m for m in range(6) if m not in record.active]].eq(0).all()
    assert records[3].active == (0, 1, 2) and records[5].joined == (5,) and records[5].active == (0, 1, 2, 5)
    # the join is one broadcast of θ (7 float64) from the lowest active machine
    assert records[5].join_bytes.tolist() == [8.0 * D, 0, 0, 0, 0, 0]
    assert not torch.equal(algo.params[3], algo.params[0])
    assert torch.equal(algo.params[3], left_with)  # the machine that left keeps the θ it left with
    assert torch.equal(algo.params[4], start)  # machine 4 never took part
    assert torch.equal(algo.params[5], algo.params[0])
    assert torch.equal(replay(start, algo.log, seed=11, lr=0.05), algo.params[5])


def test_a_restored_state_continues_bit_for_bit():
    members = churn_schedule(3)
    algo = _algo(SimComm(3), membership=members)
    for _ in range(3):
        rnd(algo)
    state = algo.state_dict()
    rest = [rnd(algo).p_hat for _ in range(3)]
    resumed = _algo(SimComm(3), membership=churn_schedule(3))
    resumed.load_state_dict(state)
    for expected in rest:
        assert torch.equal(rnd(resumed).p_hat, expected)
    assert torch.equal(resumed.params, algo.params) and resumed.steps == 6
    with pytest.raises(ValueError, match="params have shape"):
        _algo(SimComm(2)).load_state_dict(state)


@pytest.mark.timeout(120)
def test_sim_and_two_gloo_ranks_agree_bit_for_bit():
    steps = 6
    sim_theta, sim_bytes, sim_hashes = run_spsa(SimComm(2), steps)
    results = run_workers(spsa_rank, 2, args=(steps,), timeout=90)
    for r in results:
        assert r.status == "ok", f"rank {r.rank} ended {r.status}: {r.error}\n{r.traceback}"
    for rank, r in enumerate(results):
        theta, sent, hashes = r.value
        assert torch.equal(theta[0], sim_theta[rank]), f"rank {rank} left the simulator's trajectory"
        assert torch.equal(sent, sim_bytes[rank : rank + 1])
        assert all(h[m] == sim[m] for h, sim in zip(hashes, sim_hashes, strict=True) for m in h)
    # machine 1 left at round 2 and rejoined at round 4 by copying θ from machine 0: both agree again
    assert torch.equal(sim_theta[0], sim_theta[1])
    assert sim_bytes.tolist() == [6 * 3 + 8 * D, 4 * 3]


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": -0.1}, "lr"), ({"lr": 0.0}, "lr"), ({"eps": 0.0}, "eps"), ({"eps": -1e-3}, "eps"),
    ({"eps": math.nan}, "eps"), ({"samples": 0}, "samples"), ({"seed": -1}, "seed"),
    ({"normalize": "sum"}, "normalize"), ({"membership": Membership([0, 4])}, "machine 4"),
])
def test_bad_settings_are_rejected_by_name(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        _algo(SimComm(3), **kwargs)


def test_bad_inputs_are_rejected_clearly():
    with pytest.raises(ValueError, match=r"shape \[L, d\] with L = 2"):
        SharedSeedSPSA(SimComm(2), torch.zeros(3))
    with pytest.raises(ValueError, match="NaN or Inf"):
        SharedSeedSPSA(SimComm(2), torch.tensor([[1.0, math.inf]] * 2))
    with pytest.raises(TypeError, match="loss"):
        SharedSeedSPSA(SimComm(2), torch.zeros(2, 3)).round("not a function")
    with pytest.raises(TypeError, match="scalars"):
        SharedSeedSPSA(SimComm(2), torch.zeros(2, 3), scalars="logbyte")
    with pytest.raises(TypeError, match="comm"):
        SharedSeedSPSA(None, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"shape \[8, 2\]"):
        SharedSeedSPSA(SimComm(2), torch.zeros(2, 3)).round(lambda p, m, t: p.sum(dim=-1).flatten())
    with pytest.raises(ValueError, match="NaN"):
        SharedSeedSPSA(SimComm(2), torch.zeros(2, 3)).round(lambda p, m, t: p.sum(dim=-1) * math.nan)


# -- membership ------------------------------------------------------------------------------------


def test_membership_reads_like_the_schedule():
    members = Membership([0, 1, 2, 3]).leave(3, at=100).join(5, at=150)
    assert members.active(0) == members.active(99) == (0, 1, 2, 3)
    assert members.active(100) == members.active(149) == (0, 1, 2)
    assert members.active(150) == members.active(10**6) == (0, 1, 2, 5)
    assert members.joining(150) == (5,) and members.joining(149) == () and members.joining(0) == ()
    assert members.source(150) == 0 and members.machines() == (0, 1, 2, 3, 5)
    # a swap in one round (events are checked as they are added, so the join comes first)
    swap = Membership([0]).join(1, at=3).leave(0, at=3)
    assert swap.active(3) == (1,) and swap.source(3) == 0
    assert repr(members) == "Membership([0, 1, 2, 3]).leave(3, at=100).join(5, at=150)"


@pytest.mark.parametrize("build, match", [
    (lambda: Membership([0, 1]).leave(2, at=5), "not active"),
    (lambda: Membership([0, 1]).join(1, at=5), "already active"),
    (lambda: Membership([0]).leave(0, at=5), "no machine"),
    (lambda: Membership([0, 1]).join(2, at=0), "at must be >= 1"),
    (lambda: Membership([0, 1]).leave(1, at=5).join(1, at=5), "two events"),
    (lambda: Membership([]), "at least one"),
    (lambda: Membership([1, 1]), "distinct"),
    (lambda: Membership([-1]), "machine must be >= 0"),
])
def test_impossible_schedules_are_rejected(build, match):
    with pytest.raises(ValueError, match=match):
        build()


# -- hashes ----------------------------------------------------------------------------------------


def test_state_hash_sees_every_bit_dtype_and_shape():
    x = torch.linspace(0, 1, 10, dtype=torch.float64)
    assert state_hash(x) == state_hash(x.clone()) and len(state_hash(x)) == 16
    flipped = x.clone()
    flipped.view(torch.int64)[3] ^= 1  # one bit of the last mantissa place
    assert state_hash(flipped) != state_hash(x)
    assert state_hash(x.float()) != state_hash(x)
    assert state_hash(x.reshape(2, 5)) != state_hash(x)
    assert state_hash(torch.tensor([0.0])) != state_hash(torch.tensor([-0.0]))
    assert replica_hashes(torch.stack([x, x, flipped])) == [state_hash(x)] * 2 + [state_hash(flipped)]
    with pytest.raises(TypeError, match="Tensor"):
        state_hash([1.0])


# -- LogByte ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("step, center", [(1 / 16, 1.0), (1 / 8, 0.01)])
def test_logbyte_round_trip_error_is_within_its_bound(step, center):
    q = LogByte(step=step, center=center)
    g = torch.Generator().manual_seed(0)
    logs = torch.empty(20_000, dtype=torch.float64).uniform_(math.log(q.lowest), math.log(q.highest), generator=g)
    x = torch.exp(logs) * (torch.randint(0, 2, (20_000,), generator=g) * 2 - 1)
    x_hat = q(x)
    relative = ((x_hat - x).abs() / x.abs()).max().item()
    assert relative <= q.relative_error * (1 + 1e-9)
    assert relative > 0.9 * q.relative_error  # the bound is tight
    assert torch.equal(torch.sign(x_hat), torch.sign(x))
    assert q.relative_error == pytest.approx(math.exp(step / 2) - 1)
    assert q.highest / q.lowest == pytest.approx(math.exp(126 * step))


def test_logbyte_zero_saturation_and_layout():
    q = LogByte()
    x = torch.tensor([0.0, -0.0, 1.0, -1.0, 1e3, -1e3, q.highest, q.lowest, -q.lowest, 0.5 * q.lowest, 1e-30])
    codes = q.encode(x)
    assert codes.dtype == torch.uint8
    assert codes.tolist() == [0, 0, 64, 192, 127, 255, 127, 1, 129, 0, 0]
    decoded = q.decode(codes)
    assert decoded[:2].eq(0).all() and decoded[2:4].tolist() == [1.0, -1.0]
    assert decoded[4].item() == pytest.approx(q.highest) and decoded[5].item() == pytest.approx(-q.highest)
    assert decoded[9].item() == 0.0  # below lowest·e^(-step/2): zero, absolute error < lowest
    assert q.decode(torch.tensor([128], dtype=torch.uint8)).item() == 0.0
    # every byte decodes to a finite value and re-encodes to itself (128, a negative zero, excepted)
    every = torch.arange(256, dtype=torch.int64).to(torch.uint8)
    again = q.encode(q.decode(every))
    assert torch.equal(again[every != 128], every[every != 128])


def test_logbyte_payload_is_eight_bits_per_value():
    q = LogByte()
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    payload = q.compress(x)
    assert payload.bits == 3 * 5 * 8 and payload.row_bits == (40, 40, 40)
    assert len(payload.to_bytes()) == 15
    assert torch.equal(q.decompress(payload), q.decode(q.encode(x)).float())


@pytest.mark.parametrize("kwargs", [{"step": 0.0}, {"step": -1.0}, {"center": 0.0}, {"center": math.inf}])
def test_logbyte_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LogByte(**kwargs)


def test_logbyte_rejects_bad_input():
    q = LogByte()
    with pytest.raises(ValueError, match="NaN"):
        q.encode(torch.tensor([1.0, math.nan]))
    with pytest.raises(TypeError, match="floating"):
        q.encode(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="uint8"):
        q.decode(torch.tensor([1, 2]))
