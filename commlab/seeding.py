"""Counter-based seeding: independent, reproducible generators named by keys.

``SeedTree(seed).torch(step, worker, "noise")`` always gives the same generator for the same
seed and keys, in any process and on any machine, so shared randomness (shared-index Rand-k,
SPSA perturbations, PowerSGD initialisation) agrees between simulated workers and real ranks.
Keys are hashed with BLAKE2b, which is stable across Python and library versions (unlike
``hash()`` or ``torch.randperm`` streams).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

Key = int | str


def _check_keys(keys: tuple[Key, ...]) -> None:
    for key in keys:
        if isinstance(key, bool) or not isinstance(key, int | str):
            raise TypeError(f"seed keys must be int or str, got {type(key).__name__}: {key!r}")


class SeedTree:
    """A root seed from which named child seeds and generators are derived.

    Args:
        seed: non-negative integer root seed.
        path: keys that led to this node (use :meth:`child` rather than passing it).
    """

    def __init__(self, seed: int, path: tuple[Key, ...] = ()):
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        _check_keys(path)
        self.seed = int(seed)
        self.path = tuple(path)

    def child(self, *keys: Key) -> SeedTree:
        """The sub-tree under ``keys`` (e.g. one per worker)."""
        _check_keys(keys)
        return SeedTree(self.seed, self.path + keys)

    def seed_for(self, *keys: Key) -> int:
        """A 63-bit integer seed for ``keys`` under this node."""
        _check_keys(keys)
        text = repr((self.seed, *self.path, *keys)).encode()
        return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1

    def torch(self, *keys: Key, device: str = "cpu"):
        """A fresh ``torch.Generator`` seeded for ``keys``."""
        import torch

        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed_for(*keys))
        return generator

    def numpy(self, *keys: Key) -> np.random.Generator:
        """A fresh ``numpy.random.Generator`` (PCG64) seeded for ``keys``."""
        return np.random.default_rng(self.seed_for(*keys))

    def __repr__(self) -> str:
        return f"SeedTree(seed={self.seed}, path={self.path!r})"


def seed_global(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators: a safety net for notebook code.

    Library code in commlab never relies on global state; it takes a generator or seed.
    """
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Build torch modules from a known seed without leaving a trace on the global generator.

    ``nn.Module`` layers draw their initial weights from torch's global generator. Inside this
    block that generator is seeded with ``seed``; afterwards its previous state is restored::

        with seeded_init(session.seeds.seed_for("init", replica)):
            model = DeepJSCC(...)
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield

