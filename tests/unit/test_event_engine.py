"""The discrete-event engine (commlab.systems.events) and its collectives (commlab.systems.collectives):
closed forms on an idle network, processor sharing under contention, rendezvous and tags, compute
units, a deterministic event log, and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from commlab.comm import Link
from commlab.systems import collectives as C
from commlab.systems.events import Network
from commlab.systems.netmodel import round_seconds

B, ELL = 1e9, 1e-5  # bit/s, s


def run(net, process):
    started = net.start(process)
    net.run()
    return started.value


def message(net, src, dst, bits, ends, start=0.0, tag=None):
    """Send ``bits`` from src to dst starting at ``start`` seconds; note when they arrived."""
    def sender():
        yield net.env.timeout(start)
        yield from net.send(src, dst, bits, tag)
        ends.append(net.now)
    net.start(sender())
    net.start(net.recv(dst, src, tag))


CLOSED_FORMS = {  # the brief's formulas: n bits per rank, links of B bit/s and latency ell s
    C.ring_all_reduce: lambda N, n, ell: 2 * (N - 1) * (ell + n / (N * B)),
    C.tree_all_reduce: lambda N, n, ell: 2 * math.ceil(math.log2(N)) * (ell + n / B) if N > 1 else 0.0,
    C.reduce_scatter: lambda N, n, ell: (N - 1) * (ell + n / (N * B)),
    C.all_gather: lambda N, n, ell: (N - 1) * (ell + n / (N * B)),
    C.all_to_all: lambda N, n, ell: ell + (N - 1) * n / (N * B) if N > 1 and n > 0 else 0.0,
}


@pytest.mark.parametrize("collective", list(CLOSED_FORMS), ids=lambda f: f.__name__)
@pytest.mark.parametrize("n_ranks", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("bits", [0.0, 8e3, 8e6])
@pytest.mark.parametrize("latency", [0.0, ELL])
def test_collective_on_an_idle_network_takes_its_closed_form(collective, n_ranks, bits, latency):
    net = Network(n_ranks, Link(B, latency))
    expected = CLOSED_FORMS[collective](n_ranks, bits, latency)
    assert run(net, collective(net, bits)) == pytest.approx(expected, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("n_ranks", [2, 3, 6, 8])
def test_collectives_agree_with_the_labs_link_model(n_ranks):
    link, n = Link(B, ELL), 3.2e6

    def simulated(collective, bits=n):
        net = Network(n_ranks, link)
        return run(net, collective(net, bits))

    assert simulated(C.ring_all_reduce) == pytest.approx(link.collective_seconds(n, n_ranks, "ring"), rel=1e-12)
    assert simulated(C.tree_all_reduce) == pytest.approx(link.collective_seconds(n, n_ranks, "tree"), rel=1e-12)
    assert simulated(C.all_gather) == pytest.approx(link.seconds("all_gather", n / (8 * n_ranks), n_ranks),
                                                    rel=1e-12)
    uniform = np.full((n_ranks, n_ranks), n / n_ranks)
    assert simulated(C.all_to_all) == pytest.approx(float(link.alltoall_seconds(uniform)), rel=1e-12)
    shift = np.roll(np.diag(np.arange(1.0, n_ranks + 1) * 1e5), 1, axis=1)  # rank g sends only to g + 1
    assert simulated(C.all_to_all, shift) == pytest.approx(float(link.alltoall_seconds(shift)), rel=1e-12)


def test_all_to_all_of_a_matrix_shares_the_senders_link():
    """Rank 0 sends a to rank 1 and b > a to rank 2 over one link: a ends at ℓ + 2a/B, b at ℓ + (a + b)/B,
    which is Link.alltoall_seconds (the busiest rank's bits over B)."""
    a, b = 2e6, 5e6
    traffic = np.zeros((3, 3))
    traffic[0, 1], traffic[0, 2] = a, b
    net = Network(3, Link(B, ELL))
    assert run(net, C.all_to_all(net, traffic)) == pytest.approx(ELL + (a + b) / B, rel=1e-12)
    assert float(Link(B, ELL).alltoall_seconds(traffic)) == pytest.approx(ELL + (a + b) / B, rel=1e-12)
    arrivals = [(r.time, r.peer) for r in net.log if r.kind == "recv"]
    assert arrivals == [(pytest.approx(ELL + 2 * a / B, rel=1e-12), 0), (pytest.approx(ELL + (a + b) / B), 0)]


@pytest.mark.parametrize("pairs", [[(0, 1), (0, 2)], [(1, 0), (2, 0)]], ids=["one sender", "one receiver"])
def test_two_equal_flows_on_one_link_each_get_half_the_rate(pairs):
    n = 4e6
    alone, shared = [], []
    message(net := Network(3, Link(B, ELL)), *pairs[0], n, alone)
    net.run()
    net = Network(3, Link(B, ELL))
    for src, dst in pairs:
        message(net, src, dst, n, shared)
    net.run()
    assert alone == [pytest.approx(ELL + n / B, rel=1e-12)]
    assert shared == [pytest.approx(ELL + 2 * n / B, rel=1e-12)] * 2


def test_a_short_and_a_long_flow_finish_at_the_processor_sharing_times():
    """Both at B/2 until the short one (s bits) ends at ℓ + 2s/B; the long one (l bits) then has the whole
    link and ends at ℓ + (s + l)/B."""
    short, long = 1e6, 5e6
    ends_short, ends_long = [], []
    net = Network(3, Link(B, ELL))
    message(net, 0, 1, long, ends_long)
    message(net, 0, 2, short, ends_short)
    net.run()
    assert ends_short == [pytest.approx(ELL + 2 * short / B, rel=1e-12)]
    assert ends_long == [pytest.approx(ELL + (short + long) / B, rel=1e-12)]


def test_a_flow_that_joins_halfway_slows_the_first_from_then_on():
    """Latency 0: flow 1 runs alone at B for n/(2B), both then share (B/2 each) until flow 1 ends at
    1.5 n/B; flow 2 has sent n/2 by then and ends alone at 2 n/B."""
    n = 1e6
    first, second = [], []
    net = Network(3, Link(B, 0.0))
    message(net, 0, 1, n, first)
    message(net, 0, 2, n, second, start=n / (2 * B))
    net.run()
    assert first == [pytest.approx(1.5 * n / B, rel=1e-12)]
    assert second == [pytest.approx(2 * n / B, rel=1e-12)]


def test_flows_share_max_min_fairly_across_links():
    """Three flows into rank 2 get B/3 each; the flow 0 -> 1 shares rank 0's link with one of them but
    takes the 2B/3 it leaves (an equal split of rank 0's link would give it only B/2)."""
    n = 6e6
    ends = {pair: [] for pair in [(0, 1), (0, 2), (3, 2), (4, 2)]}
    net = Network(5, Link(B, 0.0))
    for (src, dst), arrived in ends.items():
        message(net, src, dst, n, arrived)
    net.run()
    assert ends[(0, 1)] == [pytest.approx(n / (2 * B / 3), rel=1e-12)]
    for pair in [(0, 2), (3, 2), (4, 2)]:
        assert ends[pair] == [pytest.approx(n / (B / 3), rel=1e-12)]


@pytest.mark.parametrize("n_ranks", [2, 4, 5])
def test_two_concurrent_all_reduces_each_get_half_the_links(n_ranks):
    n = 8e6
    net = Network(n_ranks, Link(B, ELL))
    first, second = net.start(C.ring_all_reduce(net, n)), net.start(C.ring_all_reduce(net, n))
    net.run()
    expected = 2 * (n_ranks - 1) * (ELL + 2 * n / (n_ranks * B))
    assert first.value == pytest.approx(expected, rel=1e-12)
    assert second.value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("slow", [0, 2, 4])
def test_one_slow_link_paces_the_whole_ring(slow):
    n_ranks, n = 5, 8e6
    links = [Link(B, ELL)] * n_ranks
    links[slow] = Link(B / 4, ELL)
    net = Network(n_ranks, links)
    assert run(net, C.ring_all_reduce(net, n)) == pytest.approx(
        Link(B / 4, ELL).collective_seconds(n, n_ranks, "ring"), rel=1e-12)


def test_a_send_waits_for_the_matching_receive():
    n, posted = 1e6, 0.25
    net = Network(2, Link(B, ELL))
    net.start(net.send(0, 1, n))

    def late_receiver():
        yield net.env.timeout(posted)
        yield from net.recv(1, 0)
    net.start(late_receiver())
    net.run()
    assert [(r.kind, r.time) for r in net.log] == [("send", posted),
                                                   ("recv", pytest.approx(posted + ELL + n / B, rel=1e-12))]


def test_tags_keep_messages_between_the_same_ranks_apart():
    """Rank 0 sends a long message (tag "a") and a short one (tag "b") to rank 1, which receives "b" first:
    "b" arrives alone at ℓ + s/B; only then is "a" received, at 2ℓ + (s + l)/B."""
    short, long = 1e6, 4e6
    net = Network(2, Link(B, ELL))
    net.start(net.send(0, 1, long, tag="a"))
    net.start(net.send(0, 1, short, tag="b"))

    def receiver():
        yield from net.recv(1, 0, tag="b")
        yield from net.recv(1, 0, tag="a")
    net.start(receiver())
    net.run()
    assert [(r.amount, r.time) for r in net.log if r.kind == "recv"] == [
        (short, pytest.approx(ELL + short / B, rel=1e-12)),
        (long, pytest.approx(2 * ELL + (short + long) / B, rel=1e-12))]


def test_compute_units_queue_tasks_and_run_ranks_in_parallel():
    flops, rate = 3e9, 1.5e12
    net = Network(2, Link(B, ELL), flops_per_second=rate)
    for rank in (0, 0, 1):
        net.start(net.compute(rank, flops))
    net.run()
    ends = [(r.rank, r.time) for r in net.log if r.kind == "compute_end"]
    assert ends == [(0, pytest.approx(flops / rate)), (1, pytest.approx(flops / rate)),
                    (0, pytest.approx(2 * flops / rate, rel=1e-12))]


@pytest.mark.parametrize("flops", [1e9, 1e11])
def test_compute_overlapped_with_an_all_reduce_takes_the_longer_of_the_two(flops):
    n_ranks, n, rate = 4, 8e6, 1e12
    net = Network(n_ranks, Link(B, ELL), flops_per_second=[rate, rate, rate / 2, rate])
    reduce = net.start(C.ring_all_reduce(net, n))
    for rank in range(n_ranks):
        net.start(net.compute(rank, flops))
    net.run()
    comm = Link(B, ELL).collective_seconds(n, n_ranks, "ring")
    assert reduce.value == pytest.approx(comm, rel=1e-12)
    assert net.now == pytest.approx(round_seconds(1, flops / (rate / 2), comm, overlap=True), rel=1e-12)


def scenario(jitter, seed):
    net = Network(4, Link(B, ELL), flops_per_second=1e12, jitter=jitter, seed=seed)
    net.start(C.ring_all_reduce(net, 8e6))
    net.start(C.all_to_all(net, 4e6))
    for rank in range(4):
        net.start(net.compute(rank, 1e9 * (rank + 1)))
    net.run()
    return net


def test_the_event_log_is_the_same_for_the_same_seed():
    first, again = scenario(0.5, seed=3), scenario(0.5, seed=3)
    assert first.log == again.log and len(first.log) > 50
    assert scenario(0.5, seed=4).log != first.log
    assert scenario(0.0, seed=3).log == scenario(0.0, seed=4).log == scenario(0.0, seed=None).log


def test_the_event_log_records_every_message_and_completion():
    n_ranks, n = 4, 8e6
    net = Network(n_ranks, Link(B, ELL))
    run(net, C.ring_all_reduce(net, n))
    sends = [r for r in net.log if r.kind == "send"]
    assert len(sends) == 2 * (n_ranks - 1) * n_ranks and {r.amount for r in sends} == {n / n_ranks}
    assert all(r.peer == (r.rank + 1) % n_ranks for r in sends)
    done = [r for r in net.log if r.kind == "ring_all_reduce"]
    assert sorted(r.rank for r in done) == list(range(n_ranks)) and {r.amount for r in done} == {n}
    assert [r.time for r in net.log] == sorted(r.time for r in net.log)


def test_jitter_stretches_latencies_and_compute_times_by_at_most_the_factor():
    n_ranks, n, jitter, flops, rate = 4, 8e6, 0.5, 1e9, 1e12
    net = Network(n_ranks, Link(B, ELL), flops_per_second=rate, jitter=jitter, seed=0)
    net.start(net.compute(0, flops))
    idle = 2 * (n_ranks - 1) * (ELL + n / (n_ranks * B))
    assert idle < run(net, C.ring_all_reduce(net, n)) <= idle + 2 * (n_ranks - 1) * jitter * ELL
    computed = next(r.time for r in net.log if r.kind == "compute_end")
    assert flops / rate < computed <= (1 + jitter) * flops / rate


@pytest.mark.parametrize("n_ranks", [6, 8])
def test_tree_ranks_forward_only_what_they_have_received(n_ranks):
    """Each rank's messages, in log order: receive from its children (r + 2^k for 2^k below r's lowest set
    bit), send the partial sum to its parent, receive the result back, send it to its children, larger
    steps first."""
    net = Network(n_ranks, Link(B, ELL))
    run(net, C.tree_all_reduce(net, 1e6))
    for rank in range(n_ranks):
        lowest = rank & -rank if rank else 1 << n_ranks.bit_length()
        children = [rank + step for step in (1 << k for k in range(n_ranks.bit_length()))
                    if step < lowest and rank + step < n_ranks]
        parent = [] if rank == 0 else [rank - lowest]
        expected = ([("recv", c) for c in children] + [("send", p) for p in parent]
                    + [("recv", p) for p in parent] + [("send", c) for c in reversed(children)])
        assert [(r.kind, r.peer) for r in net.log if r.rank == rank and r.kind in ("send", "recv")] == expected


@pytest.mark.parametrize("make, match", [
    (lambda: Network(0, Link(B, ELL)), "n_ranks"),
    (lambda: Network(3, [Link(B, ELL)] * 2), "links"),
    (lambda: Network(2, "ab"), "links"),
    (lambda: Network(2, Link(B, ELL), flops_per_second=0.0), "flops_per_second"),
    (lambda: Network(2, Link(B, ELL), flops_per_second=[1e9]), "flops_per_second"),
    (lambda: Network(2, Link(B, ELL), jitter=-0.1), "jitter"),
    (lambda: Network(2, Link(B, ELL), jitter=0.1), "seed"),
    (lambda: Network(2, Link(B, ELL), jitter=0.1, seed=-1), "seed"),
    (lambda: Network(2, Link(B, ELL)).send(0, 0, 1.0), "src and dst"),
    (lambda: Network(2, Link(B, ELL)).send(0, 2, 1.0), "dst"),
    (lambda: Network(2, Link(B, ELL)).send(0, 1, -1.0), "bits"),
    (lambda: Network(2, Link(B, ELL)).recv(1, 5), "src"),
    (lambda: Network(2, Link(B, ELL)).compute(0, math.nan), "flops"),
    (lambda: C.ring_all_reduce(Network(2, Link(B, ELL)), -8.0), "bits"),
    (lambda: C.tree_all_reduce(Network(2, Link(B, ELL)), math.inf), "bits"),
    (lambda: C.all_to_all(Network(2, Link(B, ELL)), np.ones((3, 3))), "bits"),
    (lambda: C.all_to_all(Network(2, Link(B, ELL)), -np.ones((2, 2))), "bits"),
])
def test_bad_input_raises_a_clear_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()
