"""DGC's sampled-threshold top-k against exact top-k: numpy's partial sort and torch.topk.

A float32 vector of d N(0, 1) values at density 0.1% (k = d / 1,000), d = 10^6 and 10^7. Baselines,
timed in the same run with the same threads, interleaved with commlab so that a busy machine slows
all three alike: ``numpy.argpartition(|x|, d - k)`` (the DGC brief's exact top-k) and
``torch.topk(|x|, k)``. Target (the brief's ``dgc-sampled-topk`` claim): partial sort / sampled >= 5
at d = 10^6. The ratio depends on the CPU and the numpy build (a vectorised argpartition narrows it).
``--smoke`` runs d = 10^5 to check the script works.

    .venv/bin/python benchmarks/sampled_topk.py [--threads 1] [--repeats 15] [--smoke]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import interleaved_best, parse_args

from commlab.compress.sparsify import sampled_threshold_select


def measure(d: int, density: float, repeats: int) -> None:
    """Time the three selections of one vector of size ``d`` and print their ratios."""
    k = int(np.ceil(density * d))
    x = torch.randn(d, generator=torch.Generator().manual_seed(0))
    x_np = x.numpy()
    generator = torch.Generator().manual_seed(1)
    picked = sampled_threshold_select(x, k, torch.Generator().manual_seed(2))
    kept, first = picked.indices.numel(), picked.sampled  # after the truncation; the sampled threshold alone
    t = interleaved_best({
        "partial sort": lambda: np.argpartition(np.abs(x_np), d - k)[d - k:],
        "torch.topk": lambda: x.abs().topk(k, sorted=False).indices,
        "sampled": lambda: sampled_threshold_select(x, k, generator),
    }, repeats)
    print(f"d = {d:,}, k = {k:,}: partial sort {t['partial sort'] * 1e3:.2f} ms, torch.topk "
          f"{t['torch.topk'] * 1e3:.2f} ms, sampled {t['sampled'] * 1e3:.2f} ms (the sampled threshold selects "
          f"{first / k:.2f} k before the adaptive loop, {kept / k:.2f} k kept)")
    print(f"  ratio: partial sort / sampled {t['partial sort'] / t['sampled']:.1f}x (target >= 5x at d = 10^6); "
          f"torch.topk / sampled {t['torch.topk'] / t['sampled']:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--density", type=float, default=0.001)
    args = parse_args(parser, threads=1, repeats=15)
    print(f"density {args.density:g}, {args.threads} thread(s), numpy {np.__version__}, best of {args.repeats}")
    for d in (100_000,) if args.smoke else (1_000_000, 10_000_000):
        measure(d, args.density, args.repeats)


if __name__ == "__main__":
    main()
