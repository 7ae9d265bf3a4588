"""One plotting style for the lab and a save helper that stamps provenance on every figure."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from pathlib import Path

import matplotlib as mpl

from commlab._files import atomic_write_bytes

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
STAMP_GID = "commlab-stamp"
STAMP_GAP_IN = 0.06
"""Space between the lowest drawn element and the top of the provenance stamp, in inches."""


def use_style() -> None:
    """Apply :data:`STYLE` to matplotlib's global settings."""
    mpl.rcParams.update(STYLE)


def place_stamp(fig, stamp: str):
    """Write ``stamp`` small in a margin of its own below everything ``fig`` draws, right-aligned.

    The figure is drawn once without the stamp to measure its content (axes with their tick and
    axis labels, legends, figure texts); the stamp's top then sits :data:`STAMP_GAP_IN` below the
    lowest of them, so it never overlaps a label, however long. Saving with ``bbox_inches="tight"``
    grows the image to take it in. Calling it again moves the one stamp. Returns the stamp's Text.
    """
    text = next((t for t in fig.texts if t.get_gid() == STAMP_GID), None)
    if text is None:
        text = fig.text(0, 0, stamp, ha="right", va="top", fontsize=6, color="0.5", gid=STAMP_GID)
    text.set_text(stamp)
    text.set_visible(False)
    fig.canvas.draw()  # runs the layout engine, so the measured content is where it will be saved
    content = fig.get_tightbbox(fig.canvas.get_renderer())  # inches; the hidden stamp is left out
    text.set_position((content.x1 / fig.get_figwidth(), (content.y0 - STAMP_GAP_IN) / fig.get_figheight()))
    text.set_visible(True)
    return text


def save_figure(fig, directory: str | Path, name: str, stamp: str,
                formats: Iterable[str] = ("png", "svg")) -> list[Path]:
    """Save ``fig`` as ``directory/name.<fmt>`` for each format, with ``stamp`` written small in
    its own margin below the figure's content (:func:`place_stamp`) and into the file metadata.

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
    place_stamp(fig, stamp)
    written = []
    for fmt in formats:
        metadata = {"Description": stamp} if fmt != "svg" else {"Description": stamp, "Date": None}
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, metadata=metadata, bbox_inches="tight")
        written.append(atomic_write_bytes(Path(directory) / f"{name}.{fmt}", buffer.getvalue()))
    return written
