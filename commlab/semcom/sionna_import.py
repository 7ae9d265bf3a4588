"""Importing NVIDIA Sionna (``sionna.phy``, PyTorch-native) without disturbing commlab's seeding.

``import sionna.phy`` builds its global ``config`` and re-seeds torch's *global* generators (CPU and, when CUDA
is available, every CUDA device) with a fresh random seed; setting ``sionna.phy.config.seed`` re-seeds them again.
numpy's and Python's global generators are left alone. commlab draws everything from explicit generators, but code
that relies on ``torch.manual_seed`` (a notebook's parameters cell, a model's initialisation) would silently change
after the import. :func:`import_sionna_phy` does the import inside :func:`preserved_torch_rng`, which saves torch's
global RNG states and restores them afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import torch


@contextmanager
def preserved_torch_rng() -> Iterator[None]:
    """Restore torch's global RNG state (CPU, and every CUDA device if CUDA is initialised by the block or before)
    on exit, whatever the block did to it. Use around ``sionna.phy.config.seed = ...`` as well as the import."""
    cpu_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def import_sionna_phy() -> ModuleType:
    """``sionna.phy``, imported (once per process) with torch's global RNG state preserved.

    Raises:
        ImportError: with the package to install when Sionna is missing.
    """
    with preserved_torch_rng():
        try:
            import sionna.phy as phy
        except ImportError as error:
            raise ImportError("sionna.phy is not installed: pip install sionna-no-rt==2.2.0 "
                              "(pinned in pyproject.toml)") from error
    return phy
