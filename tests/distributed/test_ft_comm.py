"""FTComm on real torchft: a Lighthouse and 3 replica processes on localhost (run_replicas)."""

import time

import pytest
import torch

pytest.importorskip("torchft")
import ft_workers  # noqa: E402

from commlab.comm import SimComm  # noqa: E402
from commlab.comm.faults import Fault, Faults  # noqa: E402
from commlab.comm.ft_launch import run_replicas  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def test_collectives_over_three_replicas_equal_simcomm():
    """all_reduce (mean, sum), all_gather, mix and exchange on FTComm equal SimComm's; check_same refuses."""
    results = run_replicas(ft_workers.collectives, 3, min_replicas=3, timeout=100, preload=ft_workers.PRELOAD)
    assert [r.status for r in results] == ["ok"] * 3, [r.error or r.status for r in results]
    got = {r.value["rank"]: r.value for r in results}
    assert sorted(got) == [0, 1, 2] and all(v["n"] == 3 and v["committed"] for v in got.values())
    x = torch.cat([got[k]["x"] for k in range(3)])
    sim = SimComm(3)
    mean, total = sim.all_reduce(x, op="mean").wait(), sim.all_reduce(x, op="sum").wait()
    for k in range(3):
        assert torch.equal(got[k]["mean"][0, 0], mean[k, 0])  # dyadic values: any order is exact
        assert torch.equal(got[k]["sum"][0, 0], total[k, 0])
        torch.testing.assert_close(got[k]["mean"][0], mean[k], rtol=2e-7, atol=0)  # random: to rounding
        assert torch.equal(got[k]["gathered"], x)
    mixed, swapped = sim.mix(x, ft_workers.MIXING).wait(), sim.exchange(x, [(0, 2)]).wait()
    for k in range(3):  # gossip and pairwise exchange, served from an all-gather: bit for bit
        assert torch.equal(got[k]["mixed"][0], mixed[k]) and torch.equal(got[k]["swapped"][0], swapped[k])
        assert "different seeds" in got[k]["refused"]  # check_same: 3 ranks, 3 seeds


@pytest.mark.parametrize("kind", ["exit", "kill"])
def test_a_killed_replica_rejoins_is_healed_and_all_end_identical(kind):
    """DiLoCo (H = 2) on 3 replicas; replica 2 dies (os._exit or SIGKILL) before its 7th inner step (after 3
    commits), the survivors' next sync fails and is rolled back, they go on as 2, replica 2 restarts 2 s
    later, is healed from a peer at a quorum, and all three stop at the same quorum with the same hash."""
    began = time.perf_counter()
    faults = Faults([Fault(2, at=7, kind=kind)])
    results = run_replicas(ft_workers.diloco, 3, args=(faults, 2, 8, 0.01, 80.0), restarts={2: 1}, min_replicas=2,
                           restart_delay=2.0, timeout=100, preload=ft_workers.PRELOAD)
    seconds = time.perf_counter() - began
    assert [r.status for r in results] == ["ok"] * 3, [(r.error, r.traceback) for r in results]
    values = [r.value for r in results]
    assert results[2].attempts == 2 and results[0].attempts == results[1].attempts == 1
    assert len({v["hash"] for v in values}) == 1, [v["hash"] for v in values]
    assert len({(v["steps"], v["manager_step"]) for v in values}) == 1
    assert values[2]["heals"] == 1 and values[2]["healed_at"] > 6  # healed with a state the survivors committed alone
    assert any(n == 2 for _, n in values[0]["history"])  # the survivors ran on without it
    print(f"wall {seconds:.1f} s; survivor 0: {values[0]['history']}; rollbacks "
          f"{[v['rollbacks'] for v in values]}; replica 2 healed at step {values[2]['healed_at']}")
