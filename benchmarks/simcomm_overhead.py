"""The cost of writing an algorithm against SimComm instead of calling its arithmetic directly.

16 simulated workers, d = 1M float32 (a 64 MB stack of gradients). Two algorithm steps, each timed
once through the Communicator and once as plain tensor code, from the same inputs, and checked to
give the same result:

* dense averaging SGD:  x ← x − γ·mean_i g_i
  direct ``x - lr * G.mean(0)`` against ``x - lr * comm.all_reduce(G, "mean").wait()[0]``;
* EF21 with Top-1%:     direct ``EF21.step(G)`` (compress, update h_i, server mean) against
  ``compressed_round(SimComm, EF21, G)``, which also packs every worker's payload into its wire
  bytes and reads them back.

The ratio printed is (time through SimComm) / (time direct); the target is under 1.10 (10 % overhead).

    .venv/bin/python benchmarks/simcomm_overhead.py [--threads 1] [--repeats 15] [--smoke]
"""

from __future__ import annotations

import argparse

import torch
from _common import best_time, parse_args

from commlab.comm import SimComm
from commlab.compress import TopK
from commlab.compress.ef import EF21
from commlab.distributed.compressed import compressed_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--dim", type=int, default=1_000_000)
    args = parse_args(parser, threads=1, repeats=15)
    workers, d = (4, 10_000) if args.smoke else (args.workers, args.dim)
    gen = torch.Generator().manual_seed(0)
    G, x, lr = torch.randn(workers, d, generator=gen), torch.randn(d, generator=gen), 0.1
    comm = SimComm(workers)
    print(f"{workers} workers, d = {d:,}, {args.threads} thread(s), best of {args.repeats}")

    def direct_sgd():
        return x - lr * G.mean(dim=0)

    def simcomm_sgd():
        return x - lr * comm.all_reduce(G, "mean").wait()[0]

    same = torch.allclose(direct_sgd(), simcomm_sgd(), rtol=1e-6, atol=1e-6)
    ratios = {"dense SGD step": _ratio(direct_sgd, simcomm_sgd, args.repeats)}

    direct, through = EF21(TopK(0.01)), EF21(TopK(0.01))
    direct.step(G), compressed_round(comm, through, G)  # one round each: state built, same from here
    start_direct, start_through = direct.state_dict(), through.state_dict()

    def direct_ef21():
        direct.load_state_dict(start_direct)
        return direct.step(G)[0]

    def simcomm_ef21():
        through.load_state_dict(start_through)
        return compressed_round(comm, through, G)[0]

    same = same and torch.allclose(direct_ef21(), simcomm_ef21(), rtol=1e-6, atol=1e-6)
    ratios["EF21 Top-1% round"] = _ratio(direct_ef21, simcomm_ef21, args.repeats)
    for name, (t_direct, t_comm) in ratios.items():
        print(f"  {name:<18} direct {t_direct * 1e3:8.2f} ms   via SimComm {t_comm * 1e3:8.2f} ms   "
              f"ratio {t_comm / t_direct:.3f}x (target < 1.10x)")
    print(f"same results: {same}")
    if not same:
        raise SystemExit("the direct and the SimComm versions disagree")


def _ratio(direct, through, repeats: int) -> tuple[float, float]:
    """Best times of the two versions, measured alternately so drifting load hits both alike."""
    best_direct = best_comm = float("inf")
    for _ in range(repeats):
        best_direct = min(best_direct, best_time(direct, 1, warmup=0))
        best_comm = min(best_comm, best_time(through, 1, warmup=0))
    return best_direct, best_comm


if __name__ == "__main__":
    main()
