"""Elastic data parallelism on real gloo ranks (commlab.train.elastic_dp.elastic_worker, run_workers):
two ranks die by os._exit at different steps; each time the survivors notice, agree on who is left,
form a group of their own (the second time from a group formed the first time), and they finish with
parameters bit-identical to the fixed-world run's, every wait bounded."""

from datetime import timedelta

import pytest
import torch

from commlab.comm.faults import Fault, Faults
from commlab.comm.hashing import state_hash
from commlab.comm.launch import run_workers
from commlab.comm.membership import Membership
from commlab.train.elastic_dp import RealRun, SlicingPlan, elastic_worker, train_simulated

pytestmark = pytest.mark.timeout(300)


def test_a_lost_rank_leaves_the_trajectory_unchanged():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(120, 10, generator=gen), torch.randint(0, 3, (120,), generator=gen)
    common = dict(x=x, y=y, eval_x=x, eval_y=y, sizes=(10, 12, 3), dropout=0.25, seed=2,
                  plan=SlicingPlan(16, 2, 4), steps=6, lr=0.3, collective_timeout=2.0, grace=3.0, group_timeout=20.0)
    runs = (RealRun(**common), RealRun(**common, faults=Faults([Fault(1, at=2), Fault(3, at=4)])))
    results = run_workers(elastic_worker, 4, args=(runs,), timeout=240, collective_timeout=timedelta(seconds=2))
    assert [r.status for r in results] == ["ok", "died", "ok", "died"], [(r.status, r.error) for r in results]
    (ref0, lost0), (ref2, lost2) = results[0].value, results[2].value
    assert ref0["hash"] == ref2["hash"] == lost0["hash"] == lost2["hash"]
    assert lost0["loss"] == ref0["loss"] and lost0["world"] == [4, 4, 3, 3, 2, 2]
    for run in (lost0, lost2):
        first, second = run["recoveries"]
        assert (first["step"], first["survivors"]) == (2, (0, 2, 3))
        assert (second["step"], second["survivors"]) == (4, (0, 2))
        for recovery in (first, second):  # the bounds, plus slack
            assert recovery["detect_s"] < 2 + 1.5 and recovery["agree_s"] < 3 + 2 + 1
    assert ref0["recoveries"] == []
    # the same run on SimComm, one process: the same losses (one code path; bits may differ across processes
    # only through the thread count, which is one in both here)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        members = Membership.static(4).leave(1, at=2).leave(3, at=4)
        sim = train_simulated(runs[0].task(), runs[0].plan, members, steps=6, lr=0.3)
    finally:
        torch.set_num_threads(threads)
    assert state_hash(sim["params"]) == ref0["hash"]


def test_grace_must_outlast_the_collective_timeout():
    x, y = torch.rand(8, 2), torch.zeros(8, dtype=torch.long)
    with pytest.raises(ValueError, match="grace"):
        RealRun(x=x, y=y, eval_x=x, eval_y=y, sizes=(2, 2), dropout=0.0, seed=0, plan=SlicingPlan(8, 2, 2),
                steps=1, lr=0.1, collective_timeout=5.0, grace=3.0)
