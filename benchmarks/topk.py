"""Exact Top-k of a ResNet-50-sized gradient: commlab's TopK against torch.topk and a memory copy.

A float32 vector of 25.6M N(0, 1) values, density 0.1% (k = 25,600). Baselines, timed in the same
run with the same threads: ``torch.topk(x.abs(), k)`` (the usual way) and ``x.clone()`` (the cost
of touching the memory once). Target: commlab at least 5x faster than torch.topk, selecting exactly
the same set. ``--smoke`` runs a small size to check the script works.

    .venv/bin/python benchmarks/topk.py [--threads 2] [--repeats 5] [--smoke]
"""

from __future__ import annotations

import argparse

import torch
from _common import best_time, parse_args

from commlab.compress import TopK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--density", type=float, default=0.001)
    args = parse_args(parser, threads=2, repeats=5)
    d = 256_000 if args.smoke else 25_600_000
    repeats = args.repeats
    x = torch.randn(d, generator=torch.Generator().manual_seed(0))
    compressor = TopK(args.density)
    k = round(args.density * d)

    ours = compressor.compress(x)
    reference = torch.topk(x.abs(), k, sorted=False).indices.sort().values
    same = torch.equal(ours["indices"].data, reference)

    t_ours = best_time(lambda: compressor.compress(x), repeats)
    t_topk = best_time(lambda: torch.topk(x.abs(), k, sorted=False), repeats)
    t_copy = best_time(lambda: x.clone(), repeats)
    print(f"d = {d:,}, k = {k:,} (density {args.density:g}), {args.threads} threads, best of {repeats}")
    print(f"  commlab TopK.compress   {t_ours * 1e3:8.1f} ms   ({ours.bits:,} bits on the wire)")
    print(f"  torch.topk(|x|, k)      {t_topk * 1e3:8.1f} ms")
    print(f"  x.clone() (memory copy) {t_copy * 1e3:8.1f} ms")
    print(f"speed-up over torch.topk: {t_topk / t_ours:.1f}x (target >= 5x); same selected set: {same}")
    print(f"time relative to one memory copy: {t_ours / t_copy:.1f}x")
    if not same:
        raise SystemExit("the selected sets differ")


if __name__ == "__main__":
    main()
