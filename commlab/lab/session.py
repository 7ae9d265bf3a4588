"""Per-notebook set-up: profile, seeds, thread count, device, and where figures go."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from commlab import __version__
from commlab.lab import figures
from commlab.lab.paths import PROFILES, git_commit, project_root, runs_dir
from commlab.seeding import SeedTree, seed_global

_NOTEBOOK_ID = re.compile(r"^[A-Za-z0-9_-]+/[A-Za-z0-9_-]+$")


@dataclass
class Session:
    """What a notebook knows about its run. Create it with :func:`setup`."""

    profile: str
    seed: int
    notebook: str | None
    threads: int
    device: str
    seeds: SeedTree = field(repr=False)

    @property
    def figures_dir(self) -> Path:
        """``figures/<area>/<slug>/`` for the full profile; for other profiles the run's output
        folder (``$COMMLAB_RUN_DIR`` set by the runner, else ``runs/<profile>/``) so that quick
        runs never change the tree."""
        if self.notebook is None:
            raise ValueError(
                "this session does not know its notebook: call setup(..., notebook='<area>/<slug>')"
            )
        if self.profile == "full":
            base = project_root() / "figures"
        else:
            base = Path(os.environ.get("COMMLAB_RUN_DIR") or runs_dir(self.profile)) / "figures"
        return base / self.notebook

    @property
    def stamp(self) -> str:
        """Provenance line written on every saved figure."""
        return f"commlab {__version__} · {self.profile} · seed {self.seed} · {git_commit()}"

    def savefig(self, fig, name: str, formats=("png", "svg")) -> list[Path]:
        """Save ``fig`` under :attr:`figures_dir` as ``name.png`` (+ SVG) with a provenance stamp."""
        return figures.save_figure(fig, self.figures_dir, name, self.stamp, formats)


def _default_threads() -> int:
    if os.environ.get("COMMLAB_THREADS"):
        threads = int(os.environ["COMMLAB_THREADS"])
        if threads < 1:
            raise ValueError(f"COMMLAB_THREADS must be >= 1, got {threads}")
        return threads
    return max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))


def setup(profile: str = "quick", seed: int = 0, *, notebook: str | None = None,
          device: str = "auto", threads: int | None = None) -> Session:
    """Prepare a notebook run and return its :class:`Session`.

    Sets torch's thread count (``threads``, else ``$COMMLAB_THREADS`` which the runner sets to
    each job's share of the cores, else at most 2), seeds the global RNGs as a safety net, and
    applies the lab's plot style.

    Args:
        profile: ``"quick"`` (CI, about a CPU-minute) or ``"full"``.
        seed: non-negative integer; all randomness in the notebook derives from it.
        notebook: ``"<area>/<slug>"``, which names the notebook's figure folder.
        device: ``"auto"`` (CUDA only in the full profile and only if present), ``"cpu"`` or ``"cuda"``.
        threads: torch intra-op threads.
    """
    import torch

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if notebook is not None and not _NOTEBOOK_ID.match(notebook):
        raise ValueError(f"notebook must look like '<area>/<slug>', got {notebook!r}")
    if device == "auto":
        device = "cuda" if profile == "full" and torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but no CUDA device is available")
    elif device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    threads = threads if threads is not None else _default_threads()
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    seed_global(seed)
    figures.use_style()
    return Session(profile, seed, notebook, threads, device, SeedTree(seed))
