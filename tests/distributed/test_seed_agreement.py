"""Shared-seed schemes check once, at construction, that every rank was given the same seed
(Communicator.check_same: one all-gather of a hash), and DistComm(check_shapes=False) is what its
docstring says. Two gloo ranks each (run_workers)."""

import pytest
from seed_workers import build_all, unchecked_mismatch

from commlab.comm import SimComm
from commlab.comm.launch import run_workers

pytestmark = pytest.mark.timeout(120)


def test_shared_seed_schemes_refuse_different_seeds_on_every_rank():
    """SPSA, shared-index Rand-k in DataParallel and in Streaming DiLoCo: seeds (3, 4) raise on both
    ranks, which stay in step; (5, 5) build. Top-k draws nothing: its seeds may differ."""
    results = run_workers(build_all, 2, args=(((3, 4), (5, 5)),), timeout=100)
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
    for r in results:
        for method in ("spsa", "shared_randk", "streaming_shared_randk"):
            refused = r.value[(method, (3, 4))]
            assert refused.startswith("ValueError: the processes were given different"), (method, refused)
            assert "[[0], [1]]" in refused
            assert r.value[(method, (5, 5))] == "built"
        assert r.value[("topk", (3, 4))] == r.value[("topk", (5, 5))] == "built"


def test_one_process_has_nothing_to_check():
    SimComm(3).check_same("seed", 1)  # no collective, no error
    assert SimComm(3).meter.syncs == 0


def test_unchecked_mismatched_all_gather_aborts_a_rank_as_documented():
    """check_shapes=False promises nothing: gloo aborts the rank that receives the longer row (SIGABRT,
    exit -6); the launcher reports it and nothing hangs. The default check raises instead (test_comm)."""
    results = run_workers(unchecked_mismatch, 2, timeout=100)
    assert all(r.status != "timeout" for r in results)
    assert any(r.status == "died" and r.exitcode == -6 for r in results), [(r.status, r.exitcode) for r in results]
