"""Collectives as simpy processes on a :class:`~commlab.systems.events.Network` of N ranks.

Each function is a process: start it with :meth:`Network.start <commlab.systems.events.Network.start>`
(alongside compute or other collectives), run the network, and the process's ``value`` is the time
(seconds) at which the last rank finished; every rank also logs a record (kind = the function's name,
amount = ``bits``) when it finishes. ``bits`` = n is the size in bits of the vector every rank holds
(for all-gather: of the gathered result; for all-to-all: of all a rank sends, n/N to each peer).
Every rank runs its own program; a step waits for the messages it needs, so a slow rank or link delays
its neighbours in turn.

On an idle network of links B bit/s and latency ℓ s, the times are the closed forms of the α–β model
(:class:`~commlab.comm.link.Link`):

==========================  ==================================  ====================================
collective                  seconds                             on ``Link``
==========================  ==================================  ====================================
:func:`ring_all_reduce`     2(N − 1)·(ℓ + n/(N·B))              ``collective_seconds(n, N, "ring")``
:func:`tree_all_reduce`     2⌈log₂ N⌉·(ℓ + n/B)                 ``collective_seconds(n, N, "tree")``
:func:`reduce_scatter`      (N − 1)·(ℓ + n/(N·B))
:func:`all_gather`          (N − 1)·(ℓ + n/(N·B))               ``seconds("all_gather", n/(8N), N)``
:func:`all_to_all`          ℓ + (N − 1)·n/(N·B)                 ``alltoall_seconds`` of the traffic
==========================  ==================================  ====================================

With N = 1 nothing is sent and every collective takes 0 s.
"""

from __future__ import annotations

import math
from collections.abc import Generator

import numpy as np

from commlab._checks import check_nonnegative
from commlab.systems.events import Network, Record


def ring_all_reduce(net: Network, bits: float) -> Generator:
    """Ring all-reduce: reduce-scatter then all-gather, 2(N − 1) steps in each of which every rank sends a
    chunk of n/N bits to the next rank and receives one from the previous.

    Closed form: T = 2(N − 1)·(ℓ + n/(N·B)).
    """
    return _run(net, "ring_all_reduce", bits, lambda rank, tag: _ring(net, rank, bits, 2 * (net.n_ranks - 1), tag))


def reduce_scatter(net: Network, bits: float) -> Generator:
    """Ring reduce-scatter: N − 1 steps of n/N bits to the next rank; rank r ends with its reduced chunk.

    Closed form: T = (N − 1)·(ℓ + n/(N·B)).
    """
    return _run(net, "reduce_scatter", bits, lambda rank, tag: _ring(net, rank, bits, net.n_ranks - 1, tag))


def all_gather(net: Network, bits: float) -> Generator:
    """Ring all-gather of a result of n bits (n/N from each rank): N − 1 steps of n/N bits to the next rank.

    Closed form: T = (N − 1)·(ℓ + n/(N·B)).
    """
    return _run(net, "all_gather", bits, lambda rank, tag: _ring(net, rank, bits, net.n_ranks - 1, tag))


def tree_all_reduce(net: Network, bits: float) -> Generator:
    """Binomial-tree all-reduce: reduce the n bits to rank 0, then broadcast them back, ⌈log₂ N⌉ rounds
    each. In reduce round k (k = 0, 1, ...) rank r with r mod 2^(k+1) = 2^k sends its partial sum to
    r − 2^k; the broadcast runs the rounds in reverse. No rank receives two messages in one round, so a
    round costs ℓ + n/B. (Not recursive doubling, which would cost ⌈log₂ N⌉·(ℓ + n/B) in all.)

    Closed form: T = 2⌈log₂ N⌉·(ℓ + n/B).
    """
    return _run(net, "tree_all_reduce", bits, lambda rank, tag: _binomial_tree(net, rank, bits, tag))


def all_to_all(net: Network, bits) -> Generator:
    """All-to-all: every rank sends to every other at once; the messages share the ranks' links.

    Args:
        bits: n, each rank sending n/N bits to each peer; or a ``[N, N]`` matrix of the bits rank g sends
            to rank h (the diagonal stays local and is not sent; zero entries send no message).

    Closed form (uniform n): T = ℓ + (N − 1)·n/(N·B), i.e. ℓ + (the bits the busiest rank sends or
    receives)/B, :meth:`Link.alltoall_seconds <commlab.comm.link.Link.alltoall_seconds>`. For a general
    matrix that is a lower bound, reached when the busiest rank's link stays saturated until its last
    bit (a permutation, or one rank sending to several).
    """
    traffic = _traffic(net, bits)
    sent = (traffic.sum(axis=1) - np.diag(traffic)).tolist()
    return _run(net, "all_to_all", sent, lambda rank, tag: _exchange(net, rank, traffic, tag))


def _run(net: Network, name: str, bits, program) -> Generator:
    """Start ``program(rank, tag)`` on every rank; end when all have finished, returning that time (s).
    ``bits``: the amount each rank logs when it finishes, one number or one per rank."""
    amounts = bits if isinstance(bits, list) else [check_nonnegative("bits", bits)] * net.n_ranks
    tag = object()  # keeps this collective's messages apart from those of collectives running alongside

    def rank_program(rank):
        yield from program(rank, tag)
        net.log.append(Record(net.now, rank, name, amounts[rank]))

    def collective():
        yield net.env.all_of([net.env.process(rank_program(rank)) for rank in range(net.n_ranks)])
        return float(net.now)

    return collective()


def _ring(net: Network, rank: int, bits: float, steps: int, tag) -> Generator:
    n = net.n_ranks
    chunk = bits / n
    for _ in range(steps):  # each step: ℓ + (n/N)/B
        yield from net.sendrecv(rank, (rank + 1) % n, chunk, (rank - 1) % n, tag)


def _binomial_tree(net: Network, rank: int, bits: float, tag) -> Generator:
    n = net.n_ranks
    rounds = math.ceil(math.log2(n)) if n > 1 else 0
    for k in range(rounds):  # reduce towards rank 0: each round ℓ + n/B
        step = 1 << k
        if rank % (2 * step) == step:
            yield from net.send(rank, rank - step, bits, tag)
            break
        if rank + step < n:
            yield from net.recv(rank, rank + step, tag)
    for k in reversed(range(rounds)):  # broadcast from rank 0: each round ℓ + n/B
        step = 1 << k
        if rank % (2 * step) == step:
            yield from net.recv(rank, rank - step, tag)
        elif rank % (2 * step) == 0 and rank + step < n:
            yield from net.send(rank, rank + step, bits, tag)


def _exchange(net: Network, rank: int, traffic: np.ndarray, tag) -> Generator:
    env = net.env
    sends = [env.process(net.send(rank, peer, float(traffic[rank, peer]), tag))
             for peer in range(net.n_ranks) if peer != rank and traffic[rank, peer] > 0]
    recvs = [env.process(net.recv(rank, peer, tag))
             for peer in range(net.n_ranks) if peer != rank and traffic[peer, rank] > 0]
    yield env.all_of(sends + recvs)


def _traffic(net: Network, bits) -> np.ndarray:
    n = net.n_ranks
    if np.ndim(bits) == 0:
        return np.full((n, n), check_nonnegative("bits", bits) / n)
    traffic = np.asarray(bits, dtype=np.float64)
    if traffic.shape != (n, n) or not np.isfinite(traffic).all() or (traffic < 0).any():
        raise ValueError(f"bits must be a non-negative number or a finite non-negative [{n}, {n}] matrix, "
                         f"got shape {traffic.shape}")
    return traffic
