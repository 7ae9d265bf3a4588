"""Character-level text corpus: the Python standard library's own source code.

The stdlib is found with ``sysconfig.get_paths()["stdlib"]``; its ``*.py`` files are read in sorted
order of their relative path, skipping any folder named ``test``, ``tests``, ``idle_test`` or
``site-packages``, decoded as UTF-8 (undecodable bytes become U+FFFD) and joined with ``"\\n"``.

Characters map to a fixed 97-symbol vocabulary (:data:`VOCAB`): newline, printable ASCII 32..126,
and one "unknown" symbol (last index) for everything else (tabs, carriage returns, non-ASCII).

Language-model examples are windows of the id stream: :meth:`TextCorpus.windows` gives the
``context`` characters starting at given positions and the character after them (the target), and
:meth:`TextCorpus.sample_windows` draws the start positions uniformly (with replacement) from a
caller's generator, any batch shape (e.g. ``(workers, batch)`` for stacked replicas).

Train and validation are split by top-level module or package, never by chunk: a module is
``"val"`` when the BLAKE2b hash of its name (8-byte digest read as a big-endian integer) is 0
mod 8. The hash is fixed, so a module's side never changes between Python versions. The corpus
itself does differ between versions: record :attr:`TextCorpus.python_version` and
:attr:`TextCorpus.sha256` with results.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from commlab._checks import check_choice, check_int

VOCAB = "\n" + "".join(chr(code) for code in range(32, 127)) + "\x00"
"""The 97 symbols: index 0 is newline, 1..95 printable ASCII 32..126, 96 the unknown symbol (shown as
``"\\x00"``; every character outside the first 96 encodes to it)."""

UNKNOWN = len(VOCAB) - 1
"""Index of the unknown symbol."""

EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages"})
"""Folders skipped at any depth of the stdlib tree."""

SPLITS = ("train", "val", "all")

_ASCII_TO_ID = np.full(128, UNKNOWN, dtype=np.uint8)
_ASCII_TO_ID[[ord(char) for char in VOCAB[:UNKNOWN]]] = np.arange(UNKNOWN, dtype=np.uint8)
_ID_TO_BYTE = np.frombuffer(VOCAB.encode("ascii"), dtype=np.uint8)


def _encode(text: str) -> np.ndarray:
    """``text`` as uint8 vocabulary ids, one per character."""
    codes = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")
    ids = np.full(len(codes), UNKNOWN, dtype=np.uint8)
    ascii_chars = codes < 128
    ids[ascii_chars] = _ASCII_TO_ID[codes[ascii_chars]]
    return ids


def stdlib_root() -> Path:
    """The standard library folder of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def module_of(path: str) -> str:
    """Top-level module or package of a stdlib-relative POSIX path (``"email/parser.py"`` -> ``"email"``)."""
    return path.split("/", 1)[0].removesuffix(".py")


def split_of(module: str) -> str:
    """``"val"`` or ``"train"``: the side of a top-level module, from a version-stable hash of its name."""
    digest = hashlib.blake2b(module.encode(), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "big") % 8 == 0 else "train"


def _all_files(root: Path) -> list[str]:
    """Every ``*.py`` under ``root`` outside :data:`EXCLUDED_DIRS`, as sorted relative POSIX paths."""
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in EXCLUDED_DIRS]
        relative = Path(folder).relative_to(root)
        found.extend((relative / name).as_posix() for name in names if name.endswith(".py"))
    return sorted(found)


def stdlib_files(split: str = "train", *, packages: Iterable[str] | None = None) -> tuple[str, ...]:
    """The stdlib files of a split, as sorted paths relative to :func:`stdlib_root`.

    Args:
        split: ``"train"``, ``"val"`` or ``"all"``.
        packages: if given, only these top-level modules or packages (e.g. ``("email", "json")``).

    Raises:
        ValueError: ``packages`` is empty, or a name in it is not a top-level stdlib module or lies
            in the other split.
    """
    check_choice("split", split, SPLITS)
    files = _all_files(stdlib_root())
    if packages is not None:
        names = () if isinstance(packages, str) else tuple(packages)
        if isinstance(packages, str) or not all(isinstance(name, str) for name in names):
            raise TypeError(f"packages must be a sequence of module names, e.g. ('email',), got {packages!r}")
        if not names:
            raise ValueError("packages must name at least one module (or be None for all)")
        wanted = set(names)
        available = {module_of(path) for path in files}
        unknown = sorted(wanted - available)
        if unknown:
            examples = sorted({module_of(path) for path in files if "/" in path})
            raise ValueError(
                f"unknown stdlib module(s) {unknown}; top-level packages available include: "
                f"{', '.join(examples[:20])} (single-file modules such as 'argparse' work too)"
            )
        if split != "all":
            other = sorted(name for name in wanted if split_of(name) != split)
            if other:
                raise ValueError(
                    f"module(s) {other} are in the other split, not {split!r}; use split='all' "
                    f"(or the other split) for them"
                )
        files = [path for path in files if module_of(path) in wanted]
    if split != "all":
        files = [path for path in files if split_of(module_of(path)) == split]
    return tuple(files)


@dataclass(frozen=True, eq=False)
class TextCorpus:
    """A character-level corpus over :data:`VOCAB`.

    Attributes:
        ids: torch.uint8 ``[n_chars]`` vocabulary ids.
        files: the stdlib-relative paths read, in order (the last one may be cut by ``max_chars``).
        sha256: hex SHA-256 of ``ids``' bytes: the corpus identity to record with results
            (compare corpora by it; ``==`` is identity).
        python_version: version of the interpreter whose stdlib was read, e.g. ``"3.11.7"``.
    """

    ids: torch.Tensor
    files: tuple[str, ...]
    sha256: str
    python_version: str

    @property
    def vocab_size(self) -> int:
        """Number of symbols, 97."""
        return len(VOCAB)

    def encode(self, text: str) -> torch.Tensor:
        """int64 ``[len(text)]`` ids of ``text``; characters outside the vocabulary become :data:`UNKNOWN`."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return torch.from_numpy(_encode(text).astype(np.int64))

    def decode(self, ids) -> str:
        """The string of 1-D integer ids in 0..96 (tensor, array or list); unknown decodes to ``"\\x00"``."""
        array = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)
        if array.size and array.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {array.dtype}")
        if array.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {array.shape}")
        if array.size and (array.min() < 0 or array.max() >= len(VOCAB)):
            raise ValueError(f"ids must be in [0, {len(VOCAB) - 1}], got range [{array.min()}, {array.max()}]")
        return _ID_TO_BYTE[array.astype(np.int64)].tobytes().decode("ascii")

    def __len__(self) -> int:
        return self.ids.numel()

    def windows(self, starts: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-character examples at the given start positions.

        Args:
            starts: integer tensor of any shape ``[*S]``, each in ``[0, len − context − 1]``.
            context: characters per example (>= 1).

        Returns:
            ``(x, y)``: int64 ``[*S, context]`` with ``x[..., j] = ids[s + j]``, and int64 ``[*S]`` with
            ``y = ids[s + context]`` (the character that follows the window).
        """
        context = check_int("context", context, low=1)
        last = len(self) - context - 1
        if last < 0:
            raise ValueError(f"context = {context} needs a corpus of at least {context + 1} characters, "
                             f"this one has {len(self)}")
        if not isinstance(starts, torch.Tensor) or starts.is_floating_point() or starts.is_complex():
            raise TypeError("starts must be an integer torch.Tensor")
        if starts.numel() and (starts.min() < 0 or starts.max() > last):
            raise ValueError(f"starts must be in [0, {last}] (corpus of {len(self)} characters, context {context}), "
                             f"got range [{int(starts.min())}, {int(starts.max())}]")
        positions = starts.to(torch.int64).unsqueeze(-1) + torch.arange(context + 1)
        chars = self.ids[positions].to(torch.int64)
        return chars[..., :context], chars[..., context]

    def sample_windows(self, shape, context: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`windows` at start positions drawn uniformly with replacement from ``generator``.

        Args:
            shape: batch shape ``[*S]`` (an int or a tuple of ints), e.g. ``(workers, batch_size)``.
            context: characters per example (>= 1).
            generator: the ``torch.Generator`` the positions are drawn from.

        Returns:
            ``(x, y)`` as in :meth:`windows`: int64 ``[*S, context]`` and ``[*S]``.
        """
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        shape = tuple(check_int("shape", n, low=1) for n in shape)
        context = check_int("context", context, low=1)
        high = len(self) - context  # starts in [0, high)
        if high < 1:
            raise ValueError(f"context = {context} needs a corpus of at least {context + 1} characters, "
                             f"this one has {len(self)}")
        return self.windows(torch.randint(high, shape, generator=generator), context)


def stdlib_corpus(
    split: str = "train", *, packages: Iterable[str] | None = None, max_chars: int | None = None
) -> TextCorpus:
    """Build the character corpus of a split of the standard library source.

    Args:
        split: ``"train"`` (about 7/8 of the top-level modules), ``"val"`` (the rest) or ``"all"``.
        packages: restrict to these top-level modules or packages, e.g. ``("email", "json")`` for
            domain experiments; with split ``"train"``/``"val"`` each must lie in that split.
        max_chars: keep only the first ``max_chars`` characters (>= 1) of the joined text; files
            are read in sorted order, so the result is a prefix of the untruncated corpus.

    Returns:
        a :class:`TextCorpus` (the whole "all" corpus is about 12 million characters on 3.11).
    """
    if max_chars is not None:
        max_chars = check_int("max_chars", max_chars, low=1)
    files = stdlib_files(split, packages=packages)
    root = stdlib_root()
    texts: list[str] = []
    length = -1  # the joined length once the separators are counted
    for path in files:
        if max_chars is not None and length >= max_chars:
            break
        texts.append((root / path).read_bytes().decode("utf-8", errors="replace"))
        length += len(texts[-1]) + 1
    ids = _encode("\n".join(texts)[:max_chars])
    return TextCorpus(
        ids=torch.from_numpy(ids),
        files=files[: len(texts)],
        sha256=hashlib.sha256(ids.tobytes()).hexdigest(),
        python_version=platform.python_version(),
    )
