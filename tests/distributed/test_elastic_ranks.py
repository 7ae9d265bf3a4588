"""Elastic data parallelism on real gloo ranks (commlab.train.elastic_dp.elastic_worker, run_workers):
a rank dies by os._exit mid-run; the survivors notice, agree on who is left, form a group of their own
and finish with parameters bit-identical to the fixed-world run's, every wait bounded."""

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
                  plan=SlicingPlan(12, 2, 3), steps=6, lr=0.3, grace=3.0)
    runs = (RealRun(**common), RealRun(**common, faults=Faults([Fault(1, at=3)])))
    results = run_workers(elastic_worker, 3, args=(runs,), timeout=240, collective_timeout=timedelta(seconds=2))
    assert [r.status for r in results] == ["ok", "died", "ok"], [(r.status, r.error) for r in results]
    (ref0, lost0), (ref2, lost2) = results[0].value, results[2].value
    assert ref0["hash"] == ref2["hash"] == lost0["hash"] == lost2["hash"]
    assert lost0["loss"] == ref0["loss"] and lost0["world"] == [3, 3, 3, 2, 2, 2]
    for run in (lost0, lost2):
        (recovery,) = run["recoveries"]
        assert recovery["step"] == 3 and recovery["survivors"] == (0, 2)
        assert recovery["detect_s"] < 2 + 1.5 and recovery["agree_s"] < 3 + 0.5  # the bounds, plus slack
    assert ref0["recoveries"] == []
    # the same run on SimComm, one process: the same losses (one code path; bits may differ across processes
    # only through the thread count, which is one in both here)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sim = train_simulated(runs[0].task(), runs[0].plan, Membership.static(3).leave(1, at=3), steps=6, lr=0.3)
    finally:
        torch.set_num_threads(threads)
    assert state_hash(sim["params"]) == ref0["hash"]
