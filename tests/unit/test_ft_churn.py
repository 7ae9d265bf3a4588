"""commlab.train.ft_churn without processes: the shared-state hash, the revision table, the shuffled-order
all-reduce (on a stand-in Manager) and the config's refusals; a real churn run is in
tests/distributed/test_ft_churn_run.py."""

from datetime import timedelta

import pytest
import torch

pytest.importorskip("torchft")

from commlab.comm.faults import Faults  # noqa: E402
from commlab.comm.hashing import state_hash  # noqa: E402
from commlab.distributed.outer import DiLoCo  # noqa: E402
from commlab.train import ft_churn  # noqa: E402
from commlab.train.ft_churn import ChurnConfig, ShuffledSumFTComm  # noqa: E402


class StandIn:
    _use_async_quorum = False
    _timeout = timedelta(seconds=1)


def shuffled(replica, rows, seed=0):
    """A ShuffledSumFTComm whose quorum all-gather returns ``rows`` [N, d]."""
    comm = ShuffledSumFTComm(StandIn(), replica=replica, seed=seed)
    comm._gather = lambda x: rows.clone()
    return comm


def test_shuffled_sum_is_the_mean_in_a_replica_own_order_so_bits_differ_between_replicas():
    rows = torch.randn(4, 2000, generator=torch.Generator().manual_seed(1))
    exact = rows.double().mean(0)
    results = [shuffled(r, rows).all_reduce(rows[:1], op="mean").wait()[0] for r in range(4)]
    for got in results:  # each is the mean, to float32 rounding of a 4-term sum
        torch.testing.assert_close(got.double(), exact, rtol=0, atol=4e-7)
    assert len({state_hash(g) for g in results}) > 1  # but not the same bits everywhere
    again = shuffled(2, rows).all_reduce(rows[:1], op="mean").wait()[0]
    assert torch.equal(again, results[2])  # a replica's order is reproducible from (seed, replica, call)
    total = shuffled(0, rows).all_reduce(rows[:1], op="sum").wait()[0]
    torch.testing.assert_close(total.double(), rows.double().sum(0), rtol=0, atol=2e-6)


def test_shuffled_sum_draws_a_new_order_each_call():
    comm = shuffled(0, torch.randn(6, 50, generator=torch.Generator().manual_seed(2)))
    orders = {tuple(torch.randperm(6, generator=comm.seeds.torch(c)).tolist()) for c in range(5)}
    assert len(orders) > 1
    comm.all_reduce(torch.zeros(1, 50), op="mean")
    comm.all_reduce(torch.zeros(1, 50), op="mean")
    assert comm.calls == 2


def test_revision_hash_covers_parameters_momentum_and_revision():
    params = torch.randn(1, 6, generator=torch.Generator().manual_seed(0))
    method = DiLoCo(ft_churn_sim_comm(), params, sync_every=2, sync_init=False,
                    inner=lambda p: torch.optim.SGD([p], lr=0.1))
    before = ft_churn.revision_hash(method, 0)
    assert torch.equal(ft_churn.shared_state(method)[1], torch.zeros(6))  # no momentum yet: zeros
    assert ft_churn.revision_hash(method, 1) != before  # the revision counter is hashed
    method.global_params[3] = torch.nextafter(method.global_params[3], torch.tensor(9.0))  # one ulp
    assert ft_churn.revision_hash(method, 0) != before
    for _ in range(2):
        method.step(params.detach() - 1.0)  # one outer step: momentum appears
    theta, buffer = ft_churn.shared_state(method)
    assert buffer.abs().sum() > 0 and torch.equal(theta, method.global_params)
    state = ft_churn.revision_hash(method, 1)
    method.outer.buffer[0] += 1.0
    assert ft_churn.revision_hash(method, 1) != state


def ft_churn_sim_comm():
    from commlab.comm import SimComm

    return SimComm(1)


def test_revision_table_keeps_each_replica_last_record_and_finds_disagreements(tmp_path):
    log = tmp_path
    (log / "replica_0.jsonl").write_text('{"revision": 0, "hash": "a"}\n{"revision": 1, "hash": "b"}\n'
                                         '{"revision": 2, "hash": "c"}\n')
    (log / "replica_1.jsonl").write_text('{"revision": 0, "hash": "a"}\n{"revision": 1, "hash": "x"}\n'
                                         '{"revision": 1, "hash": "b"}\n{"revision": 2, "hash": "d"}\n')
    records = ft_churn.read_records(str(log), 3)
    assert [len(r) for r in records] == [3, 4, 0]  # replica 2 never recorded anything
    table = ft_churn.revision_hashes(records)
    assert table == {0: {0: "a", 1: "a"}, 1: {0: "b", 1: "b"}, 2: {0: "c", 1: "d"}}  # a redone revision: last wins
    assert ft_churn.mismatches(table) == [2]


def test_config_refuses_what_cannot_run():
    with pytest.raises(ValueError, match="algo"):
        ChurnConfig(algo="adam")
    with pytest.raises(ValueError, match="reduction"):
        ChurnConfig(reduction="tree")
    with pytest.raises(ValueError, match="uint8_diloco"):
        ChurnConfig(algo="uint8_diloco", reduction="shuffled")
    with pytest.raises(ValueError, match="joiner"):
        ChurnConfig(joiners=(5,), shards=5)
    with pytest.raises(TypeError, match="Faults"):
        ChurnConfig(faults=[])
    with pytest.raises(ValueError, match="sync_every"):
        ChurnConfig(sync_every=0)
    with pytest.raises(ValueError, match="join"):
        ChurnConfig(join="lazy")
    with pytest.raises(TypeError, match="Link"):
        ChurnConfig(link=1e6)
    assert ChurnConfig(faults=Faults()).final == 4


def test_async_diloco_shared_state_covers_the_round_in_flight():
    """After the first outer step of async DiLoCo nothing is applied yet, but the mean in flight is part of
    the shared state: changing it (or the start of its round) changes the hash."""
    from commlab.comm import SimComm
    from commlab.models.stacked import StackedMLP
    from commlab.seeding import SeedTree

    model = StackedMLP((64, 8, 10), replicas=1, generator=SeedTree(0).torch("init"))
    method = ft_churn.build_outer(ChurnConfig(sync_every=2, algo="async_diloco"), SimComm(1), model)
    x = torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(3))
    y = torch.randint(10, (2, 16), generator=torch.Generator().manual_seed(4))
    state = ft_churn.shared_state(method)
    assert len(state) == 4 and torch.equal(state[3], torch.zeros_like(state[0]))  # nothing in flight yet
    for t in range(2):
        method.step(model.loss_and_grad(x[t:t + 1], y[t:t + 1])[1])
    theta, buffer, start, in_flight = ft_churn.shared_state(method)
    assert torch.equal(theta, start) and buffer.abs().sum() == 0  # the outer step waits one round
    assert in_flight.abs().sum() > 0 and not torch.equal(in_flight, theta)
    before = ft_churn.revision_hash(method, 1)
    method.anchor_prev[0] += 1.0
    assert ft_churn.revision_hash(method, 1) != before


def test_uint8_diloco_sends_a_quarter_of_the_bytes_and_matches_fp32_diloco_closely():
    """On one simulated worker: the one-fragment Streaming DiLoCo with uint8 codes is DiLoCo on a quantised Δ."""
    from commlab.comm import SimComm
    from commlab.models.stacked import StackedMLP
    from commlab.seeding import SeedTree

    cfg = {"diloco": ChurnConfig(sync_every=2), "uint8": ChurnConfig(sync_every=2, algo="uint8_diloco", block=64)}
    x = torch.randn(4, 16, 64, generator=torch.Generator().manual_seed(3))
    y = torch.randint(10, (4, 16), generator=torch.Generator().manual_seed(4))
    out = {}
    for name, c in cfg.items():
        comm = SimComm(1)
        model = StackedMLP((64, 8, 10), replicas=1, generator=SeedTree(0).torch("init"))
        method = ft_churn.build_outer(c, comm, model)
        for t in range(4):
            _, grad = model.loss_and_grad(x[t:t + 1], y[t:t + 1])
            method.step(grad)
        out[name] = (method.outer_params.clone(), float(comm.meter.bytes_sent.sum()), comm.meter.syncs)
    d = out["diloco"][0].numel()
    assert out["diloco"][2] == out["uint8"][2] == 2
    assert out["diloco"][1] == 2 * 4 * d
    blocks = -(-d // 64)
    assert out["uint8"][1] == 2 * (blocks * 64 + blocks * 8)  # a byte per value (padded block) + min, max
    assert not torch.equal(out["uint8"][0], out["diloco"][0])
    torch.testing.assert_close(out["uint8"][0], out["diloco"][0], rtol=0, atol=2e-2)


def test_stderr_to_sends_descriptor_2_to_a_file_and_restores_it(tmp_path):
    import os

    log = tmp_path / "log.txt"
    before = os.fstat(2).st_ino
    with ft_churn.stderr_to(log):
        os.write(2, b"from the Lighthouse\n")
    assert os.fstat(2).st_ino == before
    assert log.read_text() == "from the Lighthouse\n"


class Failing:
    """A stand-in Manager with a one-replica process group; with ``fail=True`` its all-gather fails half-way:
    it leaves NaN in the output and the Manager records the error (``errored()``), as torchft does."""

    _use_async_quorum = False
    _timeout = timedelta(seconds=1)

    def __init__(self, fail=False):
        self.fail, self.error = fail, None
        self._pg = self

    def errored(self):
        return self.error

    def allgather(self, outputs, inputs, options):
        if self.fail:
            outputs[0][0].fill_(float("nan"))
            self.error = RuntimeError("connection reset by peer")
        else:
            outputs[0][0].copy_(inputs[0])
        return self

    def wait(self, timeout=None):
        return True


def gathered(cls, fail):
    comm = cls(Failing(fail))
    comm.quorums = 1  # as after the first quorum
    return comm.all_gather(torch.arange(6.0).reshape(1, 6)).wait()


def test_a_failed_gather_returns_zeros_and_the_rows_otherwise():
    # FTComm once handed back its uninitialised buffer, whose garbage min/max made Uniform's decoder raise
    assert torch.equal(gathered(ft_churn.FTComm, False), torch.arange(6.0).reshape(1, 6))
    assert torch.equal(gathered(ft_churn.FTComm, True), torch.zeros(1, 6))
