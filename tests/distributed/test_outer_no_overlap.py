"""``commlab.train.outer --no-overlap`` (:func:`wait_at_launch`): every collective a method launches in
the background is complete when ``start`` returns, and the training comes out the same as with overlap."""

import torch

from commlab.comm import DistComm, Link, SimComm
from commlab.comm.launch import run_workers
from commlab.train.outer import OuterConfig, parse_config, train_outer, wait_at_launch

SMALL = {"steps": 12, "sync_every": 4, "eval_every": 6, "hidden": 16, "batch_size": 8}


def test_start_waits_on_the_simulated_clock():
    x = torch.ones(2, 1000)
    plain, waiting = SimComm(2, link=Link(bandwidth=1e6)), wait_at_launch(SimComm(2, link=Link(bandwidth=1e6)))
    launched = plain.start("all_reduce", x, op="mean")
    assert plain.clock == 0.0 < launched.finish_time  # overlapped: the clock waits for wait()
    work = waiting.start("all_reduce", x, op="mean")
    assert waiting.clock == work.finish_time == launched.finish_time  # waited for at launch
    assert torch.equal(work.wait(), launched.wait())


def _both_arms(rank, world_size):
    argv = ["--algo", "streaming_diloco", "--steps", "12", "--sync-every", "4", "--eval-every", "6", "--hidden", "16",
            "--batch-size", "8"]
    comm = wait_at_launch(DistComm())
    work = comm.start("all_gather", torch.full((1, 3), float(rank)))
    completed = work.is_completed()
    overlapped = train_outer(parse_config(argv), DistComm(deterministic=True))
    serial = train_outer(parse_config([*argv, "--no-overlap"]), DistComm(deterministic=True))
    return completed, work.wait().tolist(), overlapped, serial


def test_no_overlap_on_two_gloo_ranks_changes_only_the_timing():
    results = run_workers(_both_arms, 2, timeout=300)
    assert [r.status for r in results] == ["ok", "ok"], [r.traceback for r in results]
    for r in results:
        completed, gathered, overlapped, serial = r.value
        assert completed and gathered == [[0.0] * 3, [1.0] * 3]
        assert [s["syncs"] for s in serial] == [s["syncs"] for s in overlapped] == [0, 3, 6]  # one per H/P = 2 steps
        for got, want in zip(serial, overlapped, strict=True):
            assert {k: v for k, v in got.items() if k != "clock"} == {k: v for k, v in want.items() if k != "clock"}
        assert all(b["clock"] > a["clock"] for a, b in zip(serial[:-1], serial[1:], strict=True))  # wall clock


def test_the_option_and_the_simulator():
    assert parse_config(["--no-overlap"]).overlap is False and parse_config([]).overlap is True
    records = [train_outer(OuterConfig(algo="co2", overlap=overlap, **SMALL), SimComm(2)) for overlap in (True, False)]
    assert [r["hashes"] for r in records[0]] == [r["hashes"] for r in records[1]]
