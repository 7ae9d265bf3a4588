"""DistComm.start runs all-reduce and all-gather in the background of the real process group
(async_op): the call returns before the peers have joined, wait() and future() give the result."""

import pytest
import torch
from dist_workers import background

from commlab.comm.launch import run_workers

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("deterministic", [False, True])
def test_started_collectives_complete_only_once_every_rank_has_joined(tmp_path, deterministic):
    results = run_workers(background, 2, (str(tmp_path / "flag"), deterministic))
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
    out = results[0].value
    assert out["pending"] == (False, False)  # rank 1 had not joined yet
    assert out["done"] == (True, True)
    torch.testing.assert_close(out["mean"], torch.tensor([[5.0, 6.0, 7.0]]), rtol=0, atol=0)
    torch.testing.assert_close(out["gather"], torch.tensor([[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]]), rtol=0, atol=0)
    assert float(out["chained"]) == 36.0  # the gathered rows as sent, not as changed after start
    assert out["bytes"].tolist() == [24.0]  # 12 bytes in each collective, counted at launch
