"""One EF21 round for 1,000 simulated workers (d = 1,000): stacked against a loop over workers.

The stacked round is commlab's ``EF21(TopK(k)).step(G)`` on ``G`` of shape ``[1000, 1000]``; the
baseline does the same arithmetic one worker at a time in Python (compress g_i − h_i, update h_i and
the server's running mean), as a simulator without a worker axis would. Both start from the same
state and must produce the same server vector. Target: the stacked round at least 20x faster.

    .venv/bin/python benchmarks/ef21_workers.py [--threads 2] [--repeats 5] [--smoke]
"""

from __future__ import annotations

import argparse

import torch
from _common import best_time, parse_args

from commlab.compress import TopK
from commlab.compress.ef import EF21


def loop_round(compressor: TopK, G: torch.Tensor, h: torch.Tensor, server: torch.Tensor) -> torch.Tensor:
    """EF21 worker by worker: the baseline."""
    server = server.clone()
    for i in range(G.shape[0]):
        c = compressor.decompress(compressor.compress(G[i] - h[i]))
        h[i] += c
        server += c / G.shape[0]
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=10)
    args = parse_args(parser, threads=2, repeats=5)
    workers, d = (100, 1000) if args.smoke else (1000, 1000)
    repeats = args.repeats
    gen = torch.Generator().manual_seed(0)
    G0, G = torch.randn(workers, d, generator=gen), torch.randn(workers, d, generator=gen)
    compressor = TopK(k=args.k)

    mechanism = EF21(compressor)
    mechanism.start(G0)  # the dense first message, once: h_i = g_i^0, server = mean
    started = mechanism.state_dict()

    def stacked_round() -> torch.Tensor:
        mechanism.load_state_dict(started)  # both rounds start from a copy of the same state
        return mechanism.step(G)[0]

    def baseline_round() -> torch.Tensor:
        return loop_round(compressor, G, G0.clone(), G0.mean(dim=0))

    agree = torch.allclose(stacked_round(), baseline_round(), atol=1e-5)
    t_stacked = best_time(stacked_round, repeats)
    t_loop = best_time(baseline_round, repeats)
    print(f"{workers} workers, d = {d}, Top-{args.k}, {args.threads} threads, best of {repeats}")
    print(f"  stacked EF21 round   {t_stacked * 1e3:8.2f} ms")
    print(f"  loop over workers    {t_loop * 1e3:8.2f} ms")
    print(f"speed-up: {t_loop / t_stacked:.1f}x (target >= 20x); same server vector: {agree}")
    if not agree:
        raise SystemExit("the stacked and the looped rounds disagree")


if __name__ == "__main__":
    main()
