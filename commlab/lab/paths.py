"""Where things live: the project root, run folders, figure folders, and the current commit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

AREAS = ("compression", "distributed", "semcom", "ensembles", "systems")
PROFILES = ("quick", "full")
"""The run profiles: ``quick`` (CI, about a CPU-minute) and ``full`` (the paper-shaped run)."""


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The commlab checkout: ``$COMMLAB_ROOT`` if set, else the nearest folder at or above
    ``start`` (default: the current directory) that holds ``pyproject.toml`` and ``notebooks/``,
    else the folder above the installed package (an editable install from a checkout).
    """
    if os.environ.get("COMMLAB_ROOT"):
        return Path(os.environ["COMMLAB_ROOT"]).resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return Path(__file__).resolve().parents[2]


def runs_dir(profile: str, root: Path | None = None) -> Path:
    """Default output folder of a batch run: ``<root>/runs/<profile>/``."""
    return (root or project_root()) / "runs" / profile


def git_commit(root: Path | None = None) -> str:
    """Short hash of HEAD with ``-dirty`` appended when tracked files are modified; ``unknown``
    when the code is not in a git checkout."""
    root = root or project_root()
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head
