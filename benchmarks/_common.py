"""Shared pieces of the benchmark scripts: the common options and the minimum wall time over repeats."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch


def parse_args(parser: argparse.ArgumentParser, *, threads: int, repeats: int) -> argparse.Namespace:
    """Add the options every benchmark has, parse them, and fix torch's thread count.

    ``--threads`` (default ``threads``), ``--repeats`` (default ``repeats``) and ``--smoke`` (a small
    size chosen by the script, and a single repeat).
    """
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--smoke", action="store_true", help="a small size and one repeat, to check the script")
    args = parser.parse_args()
    if args.smoke:
        args.repeats = 1
    torch.set_num_threads(args.threads)
    return args


def best_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Minimum wall-clock seconds of ``fn()`` over ``repeats`` runs, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def interleaved_best(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Minimum wall seconds of each function over ``repeats`` rounds that call every function once
    (interleaved, so a busy moment of the machine slows all of them alike); a first round warms up."""
    best = dict.fromkeys(fns, float("inf"))
    for counted in [False] + [True] * repeats:
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if counted:
                best[name] = min(best[name], time.perf_counter() - start)
    return best
