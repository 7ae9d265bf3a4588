"""Exact Top-k of a ResNet-50-sized gradient: commlab's TopK against one read of the vector and torch.topk.

A float32 vector of 25.6M N(0, 1) values, density 0.1% (k = 25,600). Baselines, timed in the same
run with the same threads: ``x.sum()``, one streaming read of the vector, the physical floor of an
exact selection (every value must be looked at once), and ``torch.topk(x.abs(), k)`` (the usual
way). Target (issue 18): ``TopK.compress`` within 2x of ``x.sum()``, selecting exactly the set of
torch.topk. ``--smoke`` runs a small size to check the script works.

    .venv/bin/python benchmarks/topk.py [--threads 2] [--repeats 5] [--smoke]
"""

from __future__ import annotations

import argparse

import torch
from _common import best_time, parse_args

from commlab.compress import TopK
from commlab.compress.base import k_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--density", type=float, default=0.001)
    args = parse_args(parser, threads=2, repeats=5)
    d = 256_000 if args.smoke else 25_600_000
    repeats = args.repeats
    x = torch.randn(d, generator=torch.Generator().manual_seed(0))
    compressor = TopK(args.density)
    k = k_for(args.density, d)

    ours = compressor.compress(x)
    reference = torch.topk(x.abs(), k, sorted=False).indices.sort().values
    same = torch.equal(ours["indices"].data, reference)

    t_ours = best_time(lambda: compressor.compress(x), repeats)
    t_read = best_time(lambda: x.sum(), repeats)
    t_topk = best_time(lambda: torch.topk(x.abs(), k, sorted=False), repeats)
    print(f"d = {d:,}, k = {k:,} (density {args.density:g}), {args.threads} threads, best of {repeats}")
    print(f"  commlab TopK.compress   {t_ours * 1e3:8.1f} ms   ({ours.bits:,} bits on the wire)")
    print(f"  x.sum() (one read)      {t_read * 1e3:8.1f} ms")
    print(f"  torch.topk(|x|, k)      {t_topk * 1e3:8.1f} ms")
    print(f"ratio to one read of x: {t_ours / t_read:.2f}x (target <= 2x); same selected set as torch.topk: {same}")
    print(f"speed-up over torch.topk: {t_topk / t_ours:.1f}x")
    if not same:
        raise SystemExit("the selected sets differ")


if __name__ == "__main__":
    main()
