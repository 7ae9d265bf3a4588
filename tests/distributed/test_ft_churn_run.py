"""commlab.train.ft_churn on real torchft processes: DiLoCo and async DiLoCo under churn keep every revision's
shared state bit-identical on every replica that holds it; a shuffled-order reduction and a naive join do not."""

import dataclasses

import pytest

pytest.importorskip("torchft")

from commlab.comm.faults import Fault, Faults  # noqa: E402
from commlab.comm.ft_launch import PRELOAD, run_replicas  # noqa: E402
from commlab.train import ft_churn  # noqa: E402

pytestmark = pytest.mark.timeout(300)
PRELOAD_CHURN = (*PRELOAD, "commlab.distributed", "commlab.train.ft_churn")
H = 2


def run(cfg, processes, restarts, tmp_path, restart_delay=1.0):
    cfg = dataclasses.replace(cfg, log_dir=str(tmp_path))
    results = run_replicas(ft_churn.churn_replica, processes, args=(ft_churn.digits_data(0), cfg), restarts=restarts,
                           min_replicas=2, restart_delay=restart_delay, timeout=200, preload=PRELOAD_CHURN)
    assert [r.status for r in results] == ["ok"] * processes, [(r.error, r.traceback) for r in results]
    records = ft_churn.read_records(str(tmp_path), processes)
    return results, records, ft_churn.revision_hashes(records)


def test_a_killed_replica_and_a_joiner_are_healed_and_every_revision_agrees(tmp_path):
    """3 replicas and a joiner (3); replica 2 dies by os._exit mid-round (inner step 2H + 1) and restarts:
    both late processes are healed from a peer, the survivors roll the broken round back, the run stops at
    the same quorum everywhere, and no revision has two different hashes."""
    cfg = ft_churn.ChurnConfig(outer_steps=8, final=4, sync_every=H, hidden=8, shards=4, joiners=(3,),
                               faults=Faults([Fault(2, at=2 * H + 1)]), seconds_per_step=0.02, deadline=150)
    results, records, table = run(cfg, 4, {2: 1, 3: 1}, tmp_path)
    values = [r.value for r in results]
    assert [r.attempts for r in results] == [1, 1, 2, 2]
    assert values[2]["heals"] >= 1 and values[3]["heals"] >= 1 and values[3]["heal_bytes"][0] > 4 * 8 * 64
    assert values[0]["rollbacks"] >= 1 and values[1]["rollbacks"] >= 1
    assert ft_churn.mismatches(table) == []
    assert len(table) >= 9 and all(len(h) >= 2 for h in table.values())
    assert {recs[-1]["hash"] for recs in records} == {table[max(table)][0]}  # all four end on one state
    assert any(rec["attempt"] == 0 for rec in records[2]) and any(rec["attempt"] == 1 for rec in records[2])
    assert sorted(values[0]["test_loss"]) == list(range(max(table) + 1))


def test_a_shuffled_order_reduction_breaks_parity(tmp_path):
    cfg = ft_churn.ChurnConfig(outer_steps=3, final=3, sync_every=H, hidden=8, shards=3, reduction="shuffled")
    _, _, table = run(cfg, 3, {}, tmp_path)
    bad = ft_churn.mismatches(table)
    assert bad and 0 not in bad  # revision 0 is replica 0's initialisation, copied to the others


def test_async_diloco_under_churn_hands_the_mean_in_flight_to_a_joiner(tmp_path):
    """The same churn as above with the outer step one round late: the joiner and the restarted replica
    receive the mean in flight with the checkpoint, so every revision still agrees."""
    from commlab.comm import Link

    cfg = ft_churn.ChurnConfig(outer_steps=8, final=4, sync_every=H, hidden=8, shards=4, joiners=(3,),
                               algo="async_diloco", faults=Faults([Fault(2, at=2 * H + 1)]), seconds_per_step=0.02,
                               deadline=150, link=Link(bandwidth=1e6, latency=1e-3), step_seconds=0.01)
    results, records, table = run(cfg, 4, {2: 1, 3: 1}, tmp_path)
    values = [r.value for r in results]
    assert values[2]["heals"] >= 1 and values[3]["heals"] >= 1
    assert ft_churn.mismatches(table) == [] and len(table) >= 9
    assert {recs[-1]["hash"] for recs in records} == {table[max(table)][0]}
    assert values[0]["clock"] > 0


def test_a_naive_join_breaks_parity_from_the_join_on(tmp_path):
    """A joiner that keeps its own initialisation takes the peers' revision number but not their state."""
    cfg = ft_churn.ChurnConfig(outer_steps=6, final=3, sync_every=H, hidden=8, shards=3, joiners=(2,), join="naive",
                               seconds_per_step=0.02, deadline=150)
    results, records, table = run(cfg, 3, {2: 1}, tmp_path, restart_delay=3.0)  # the others are past revision 0
    assert results[2].value["heals"] == 0 and results[2].value["ignored_heals"] >= 1
    joined = records[2][0]["revision"]
    assert joined > 0 and ft_churn.mismatches(table) == [r for r in table if r >= joined and 2 in table[r]]
    assert records[2][0]["test_loss"] > records[0][-1]["test_loss"]
