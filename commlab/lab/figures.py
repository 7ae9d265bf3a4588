"""One plotting style for the lab and a save helper that stamps provenance on every figure."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from pathlib import Path

import matplotlib as mpl

from commlab.lab.files import atomic_write_bytes

#: Matplotlib settings shared by every notebook: readable at notebook width, print-friendly.
STYLE = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "lines.linewidth": 1.6,
    "axes.prop_cycle": mpl.cycler(
        color=["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
    ),  # Okabe–Ito, safe for colour-blind readers
}

FORMATS = ("png", "svg", "pdf")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def use_style() -> None:
    """Apply :data:`STYLE` to matplotlib's global settings."""
    mpl.rcParams.update(STYLE)


def save_figure(fig, directory: str | Path, name: str, stamp: str,
                formats: Iterable[str] = ("png", "svg")) -> list[Path]:
    """Save ``fig`` as ``directory/name.<fmt>`` for each format, with ``stamp`` written small in
    the bottom-right corner and into the file metadata.

    Args:
        fig: a matplotlib ``Figure``.
        directory: target folder (created).
        name: file stem: letters, digits, ``_ . -``; no folders.
        stamp: one-line provenance text, e.g. ``"commlab 0.1.0 · quick · seed 0 · 1a2b3c4d5e"``.
        formats: any of ``png``, ``svg``, ``pdf``; ``png`` must be one of them.

    Each file is written atomically. Returns the written paths.
    """
    formats = tuple(formats)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"figure name must be a plain file stem (letters, digits, _ . -), got {name!r}")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or "png" not in formats:
        raise ValueError(f"formats must include 'png' and be among {FORMATS}, got {formats}")
    if not any(text.get_gid() == "commlab-stamp" for text in fig.texts):
        fig.text(0.995, 0.005, stamp, ha="right", va="bottom", fontsize=6, color="0.5",
                 gid="commlab-stamp")
    written = []
    for fmt in formats:
        metadata = {"Description": stamp} if fmt != "svg" else {"Description": stamp, "Date": None}
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, metadata=metadata)
        written.append(atomic_write_bytes(Path(directory) / f"{name}.{fmt}", buffer.getvalue()))
    return written
