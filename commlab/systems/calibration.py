"""Calibrating the event model against a real machine: GEMM and gloo all-reduce timings, fitted constants.

The event model (:mod:`commlab.systems.events`) has two constants per rank: compute speed F (FLOP/s)
and the α–β link (latency ℓ s, bandwidth B bit/s, :class:`~commlab.comm.link.Link`). Here they are
measured on the machine at hand and the model is compared with what it did not see:

1. :func:`measure` runs on every rank of a ``torch.distributed`` group (gloo): the best of ``repeats``
   wall times of an n × n float32 GEMM (2n³ FLOP), of a ring all-reduce of b bytes through
   :class:`~commlab.comm.DistComm`, and of the two overlapped (the all-reduce launched in the
   background with ``DistComm.start``, the GEMM computed meanwhile, then the wait);
2. :func:`fit_compute` and :func:`fit_link` fit F and (ℓ, B) to the lone GEMMs and lone all-reduces by
   least squares on *relative* residuals (every size weighs alike):
   t_GEMM = 2n³/F, and for a ring all-reduce of n bits on N ranks t = 2(N − 1)·(ℓ + n/(N·B));
3. :func:`predict` runs each timing's workload on a :class:`~commlab.systems.events.Network` with the
   fitted constants; the overlapped timings are the test: the model overlaps compute and
   communication perfectly (separate resources), the machine may not (gloo's reduction and copies
   run on the same cores as the GEMM).

Launch :func:`measure` with :func:`measure_locally` (local gloo processes over loopback) or, for a
rate-limited link, with :func:`commlab.comm.netns.run_ranks` on this module
(``python -m commlab.systems.calibration --out timings.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
import torch
import torch.distributed as dist

from commlab._checks import check_int
from commlab.comm import DistComm, Link
from commlab.comm.launch import run_workers
from commlab.systems import collectives
from commlab.systems.events import Network

KINDS = ("gemm", "all_reduce", "overlap")
GEMM_SIZES = (256, 384, 512, 640, 768)
MESSAGE_BYTES = (16_384, 262_144, 1_048_576, 4_194_304, 8_388_608)
OVERLAPS = ((512, 1_048_576), (512, 4_194_304), (768, 4_194_304), (768, 8_388_608))


@dataclass(frozen=True)
class Timing:
    """One measured workload: ``flops`` of GEMM (0 if none) and an all-reduce of ``bits`` (0 if none) on
    ``ranks`` ranks took ``seconds`` (the best of the repeats)."""

    kind: str
    flops: float
    bits: float
    ranks: int
    seconds: float


def gemm_flops(n: int) -> float:
    """FLOP of an n × n by n × n matrix product: 2n³."""
    return 2.0 * n**3


def _best(fn, repeats: int, before=lambda: None) -> float:
    fn()  # warm-up: first-touch allocations and gloo's buffers
    best = float("inf")
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(comm: DistComm, *, gemm_sizes=GEMM_SIZES, message_bytes=MESSAGE_BYTES, overlaps=OVERLAPS,
            repeats: int = 5, seed: int = 0) -> list[Timing]:
    """Time lone GEMMs, lone all-reduces and the two overlapped, on every rank of ``comm``'s group at once.

    Every rank runs the same program (a barrier before each timed repeat); each returns its own
    timings. Sizes: GEMM ``n`` (float32 n × n), messages in bytes (float32), overlaps as
    ``(n, bytes)`` pairs.
    """
    if not isinstance(comm, DistComm):
        raise TypeError(f"comm must be a DistComm, got {type(comm).__name__}")
    repeats = check_int("repeats", repeats, low=1)
    generator = torch.Generator().manual_seed(seed)
    square = lambda n: torch.randn(n, n, generator=generator)  # noqa: E731
    message = lambda size: torch.zeros(1, check_int("message bytes", size, low=4) // 4)  # noqa: E731
    barrier = partial(dist.barrier, group=comm.group)
    n_ranks = comm.world_size

    def gemm(a, b):
        a @ b

    def all_reduce(x):
        comm.all_reduce(x).wait()

    def overlapped(a, b, x):
        work = comm.start("all_reduce", x)
        a @ b
        work.wait()

    timings = [Timing("gemm", gemm_flops(n), 0.0, n_ranks, _best(partial(gemm, square(n), square(n)), repeats, barrier))
               for n in gemm_sizes]
    timings += [Timing("all_reduce", 0.0, 8.0 * size, n_ranks,
                       _best(partial(all_reduce, message(size)), repeats, barrier))
                for size in message_bytes]
    timings += [Timing("overlap", gemm_flops(n), 8.0 * size, n_ranks,
                       _best(partial(overlapped, square(n), square(n), message(size)), repeats, barrier))
                for n, size in overlaps]
    return timings


def measure_worker(rank: int, world_size: int, options: dict) -> list[dict]:
    """:func:`measure` on one rank of :func:`~commlab.comm.launch.run_workers` (its timings as dicts)."""
    return [asdict(t) for t in measure(DistComm(check_shapes=False), **options)]


def measure_locally(world_size: int = 2, *, timeout: float = 600.0, threads: int = 1, **options) -> list[Timing]:
    """:func:`measure` on ``world_size`` local gloo processes over loopback; rank 0's timings.

    ``options`` are :func:`measure`'s keywords (sizes, ``repeats``, ``seed``). Every wait is bounded by
    ``timeout`` seconds (:func:`~commlab.comm.launch.run_workers`); a rank that did not return raises
    RuntimeError with its status and traceback.
    """
    results = run_workers(measure_worker, world_size, args=(options,), timeout=timeout, threads=threads)
    for r in results:
        if r.status != "ok":
            raise RuntimeError(f"rank {r.rank} ended {r.status}: {r.error}\n{r.traceback}")
    return [Timing(**d) for d in results[0].value]


def _relative_least_squares(design: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Coefficients c minimising Σ ((design @ c − t) / t)²."""
    t = np.asarray(seconds, dtype=float)
    c, *_ = np.linalg.lstsq(design / t[:, None], np.ones_like(t), rcond=None)
    return c


def fit_compute(timings: list[Timing]) -> float:
    """F (FLOP/s) fitted to the lone GEMMs: t = f/F."""
    gemms = [t for t in timings if t.kind == "gemm"]
    if not gemms:
        raise ValueError("no GEMM timings to fit")
    (inverse,) = _relative_least_squares(np.array([[t.flops] for t in gemms]), [t.seconds for t in gemms])
    return 1.0 / inverse


def fit_link(timings: list[Timing]) -> Link:
    """The :class:`Link` (ℓ, B) fitted to the lone ring all-reduces: t = 2(N − 1)·ℓ + 2(N − 1)/N · n/B."""
    reduces = [t for t in timings if t.kind == "all_reduce"]
    if len(reduces) < 2 or len({t.bits for t in reduces}) < 2:
        raise ValueError("fitting a link needs all-reduce timings of at least two sizes")
    if len({t.ranks for t in reduces}) != 1 or reduces[0].ranks < 2:
        raise ValueError("the all-reduce timings must all come from one group of at least 2 ranks")
    n = reduces[0].ranks
    steps = 2 * (n - 1)
    design = np.array([[steps, steps / n * t.bits] for t in reduces])
    latency, inverse_bandwidth = _relative_least_squares(design, [t.seconds for t in reduces])
    if inverse_bandwidth <= 0:
        raise ValueError("the all-reduce times do not grow with the message size: no bandwidth to fit")
    return Link(bandwidth=1.0 / inverse_bandwidth, latency=max(latency, 0.0))


def predict(timing: Timing, flops_per_second: float, link: Link) -> float:
    """Seconds the event model gives ``timing``'s workload: its GEMM on every rank's compute unit and its
    all-reduce as a ring on the network, started together (overlapped when both are present)."""
    net = Network(timing.ranks, link, flops_per_second=flops_per_second)
    if timing.bits:
        net.start(collectives.ring_all_reduce(net, timing.bits))
    if timing.flops:
        for rank in range(timing.ranks):
            net.start(net.compute(rank, timing.flops))
    net.run()
    return net.now


def residuals(timings: list[Timing], flops_per_second: float, link: Link) -> np.ndarray:
    """measured / modelled − 1 for each timing."""
    return np.array([t.seconds / predict(t, flops_per_second, link) - 1.0 for t in timings])


def plot_model_vs_measured(ax, timings: list[Timing], flops_per_second: float, link: Link) -> None:
    """Draw each timing's measured seconds against the event model's on log–log axes ``ax`` (milliseconds),
    one marker per kind, with the line measured = model."""
    markers = {"gemm": "o", "all_reduce": "s", "overlap": "^"}
    model = [predict(t, flops_per_second, link) * 1e3 for t in timings]
    for kind, marker in markers.items():
        pairs = [(m, t.seconds * 1e3) for m, t in zip(model, timings, strict=True) if t.kind == kind]
        if pairs:
            ax.loglog(*zip(*pairs, strict=True), marker, ls="none", label=kind.replace("_", "-"))
    measured = [t.seconds * 1e3 for t in timings]
    lo, hi = min(model + measured) / 1.5, max(model + measured) * 1.5
    ax.plot([lo, hi], [lo, hi], "k:", lw=1, label="measured = model")
    ax.set(xlabel="event model (ms)", ylabel="measured on this machine (ms)")
    ax.legend()


def main(argv=None) -> None:
    """Under ``torchrun`` (e.g. :func:`commlab.comm.netns.run_ranks`): measure, and rank 0 writes JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file for rank 0's timings")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        timings = measure(DistComm(check_shapes=False), repeats=args.repeats)
        if dist.get_rank() == 0:
            with open(args.out, "w", encoding="utf-8") as file:
                json.dump([asdict(t) for t in timings], file, indent=1)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
