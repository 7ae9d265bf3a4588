"""Fashion-MNIST from local IDX files, with an opt-in download into the user cache.

Folders searched, first match wins (conventions §3.1):

1. ``$COMMLAB_DATA/fashion-mnist/`` when ``COMMLAB_DATA`` is set;
2. ``/usr/share/datasets/fashion-mnist/`` (Debian package ``dataset-fashion-mnist``);
3. the user cache, ``$XDG_CACHE_HOME/commlab/fashion-mnist/`` or ``~/.cache/commlab/fashion-mnist/``.

A folder qualifies when it holds both files of the split, each raw or gzipped (``.gz``). The
SHA-256 of the decompressed bytes is checked against :data:`SHA256`: a mismatch raises rather than
trying the next folder. When no folder qualifies, the split's ``.gz`` files are downloaded from
:data:`MIRRORS` if downloads are allowed (``download=True``, or ``download=None`` and
``COMMLAB_OFFLINE`` is not ``"1"``), verified, and written atomically into the cache.

Fashion-MNIST is MIT-licensed (Zalando SE); cite it where it is used.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from commlab._checks import check_choice, check_int, check_seed
from commlab._files import atomic_write_bytes

CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
"""Class names, indexed by label."""

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Per split: (images file, labels file), without the ``.gz`` suffix."""

SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
"""SHA-256 of the *decompressed* files (the Debian ``.gz`` files are recompressed, so their gzip
digests differ from upstream; the decompressed bytes are identical)."""

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the files."""

MIRRORS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
"""Download base URLs, tried in order: upstream GitHub, then the project's S3 mirror (plain HTTP
only; integrity comes from :data:`SHA256`)."""

DOWNLOAD_TIMEOUT_S = 60.0
"""Socket timeout for one download request, in seconds."""

_IMAGE_MAGIC = 2051
_LABEL_MAGIC = 2049
_SIDE = 28


def default_cache_dir() -> Path:
    """The user cache folder: ``$XDG_CACHE_HOME/commlab/fashion-mnist`` or ``~/.cache/commlab/fashion-mnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "commlab" / "fashion-mnist"


def search_dirs(cache_dir: Path) -> list[Path]:
    """Folders to search, in order: ``$COMMLAB_DATA/fashion-mnist``, Debian, the cache."""
    folders = [Path(os.environ["COMMLAB_DATA"]) / "fashion-mnist"] if os.environ.get("COMMLAB_DATA") else []
    return [*folders, DEBIAN_DIR, cache_dir]


def split_paths(folder: Path, split: str) -> list[Path] | None:
    """The split's two files in ``folder`` (raw preferred over ``.gz``), or None if one is missing."""
    paths = []
    for stem in FILES[split]:
        candidates = [path for path in (folder / stem, folder / f"{stem}.gz") if path.is_file()]
        if not candidates:
            return None
        paths.append(candidates[0])
    return paths


def _decompress(data: bytes, source: str) -> bytes:
    """Gunzip ``data``, turning every kind of corrupt input into a ValueError naming ``source``."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{source} is not a valid gzip file: {exc}") from exc


def _verify(stem: str, data: bytes, source: str) -> None:
    """Raise ValueError unless the SHA-256 of the decompressed ``data`` is the one in :data:`SHA256`."""
    expected = SHA256[stem]
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ValueError(
            f"checksum mismatch for {source} ({stem}, decompressed): expected SHA-256 {expected}, "
            f"got {actual}; the file is corrupt or not Fashion-MNIST (delete or replace it)"
        )


def parse_idx(data: bytes, magic: int, source: str = "IDX data") -> np.ndarray:
    """Parse an uncompressed IDX file of unsigned bytes.

    Layout: big-endian int32 magic (``0x08`` type byte, number of dimensions in the low byte:
    2049 for a 1-D label file, 2051 for 3-D images), then one big-endian uint32 size per
    dimension, then the uint8 values in C order.

    Args:
        data: the decompressed file contents.
        magic: the magic number expected (2049 or 2051).
        source: file name used in error messages.

    Returns:
        uint8 array of the shape given in the header (read-only view on ``data``).
    """
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        raise ValueError(f"{source}: IDX magic number is {found}, expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{source}: IDX header truncated ({len(data)} bytes, need {header})")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(f"{source}: {len(data)} bytes, expected {expected} for IDX shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _parse_split(images_raw: bytes, labels_raw: bytes, sources: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Parse and cross-check the split's images ([N, 28, 28] uint8) and labels ([N] uint8, < 10)."""
    images = parse_idx(images_raw, _IMAGE_MAGIC, sources[0])
    labels = parse_idx(labels_raw, _LABEL_MAGIC, sources[1])
    if images.shape[1:] != (_SIDE, _SIDE):
        raise ValueError(f"{sources[0]}: images are {images.shape[1:]}, expected ({_SIDE}, {_SIDE})")
    if len(images) != len(labels):
        raise ValueError(f"{sources[0]} holds {len(images)} images but {sources[1]} {len(labels)} labels")
    if labels.size and labels.max() >= len(CLASSES):
        raise ValueError(f"{sources[1]}: label {labels.max()} out of range 0..{len(CLASSES) - 1}")
    return images, labels


def read_split(paths: Sequence[Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read, verify and parse the split's two local files."""
    raws = []
    for stem, path in zip(FILES[split], paths, strict=True):
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = _decompress(data, str(path))
        _verify(stem, data, str(path))
        raws.append(data)
    return _parse_split(*raws, [str(path) for path in paths])


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        return response.read()


def download_split(split: str, cache_dir: Path, mirrors: Sequence[str]) -> list[Path]:
    """Download the split's ``.gz`` files, verify them, then write them into ``cache_dir``.

    For each file the mirrors are tried in order until one delivers bytes with the right
    checksum. Nothing is written unless both files verified. Raises ValueError when every
    failure was corrupt content, OSError when at least one mirror could not be reached.
    """
    payloads = []
    for stem in FILES[split]:
        failures: list[tuple[str, Exception]] = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + f"/{stem}.gz"
            try:
                payload = _fetch(url)
                _verify(stem, _decompress(payload, url), url)
            except (OSError, ValueError) as exc:
                failures.append((url, exc))
                continue
            payloads.append(payload)
            break
        else:
            details = "; ".join(f"{url}: {exc}" for url, exc in failures)
            error = ValueError if all(isinstance(exc, ValueError) for _, exc in failures) else OSError
            raise error(f"could not download Fashion-MNIST {stem}.gz from any mirror ({details})")
    return [
        atomic_write_bytes(cache_dir / f"{stem}.gz", payload)
        for stem, payload in zip(FILES[split], payloads, strict=True)
    ]


def _offline_reason(download: bool | None) -> str | None:
    """Why downloading is not allowed, or None when it is."""
    if download is False:
        return "download=False"
    if download is None and os.environ.get("COMMLAB_OFFLINE") == "1":
        return "COMMLAB_OFFLINE=1"
    return None


def _not_found(split: str, folders: Sequence[Path], reason: str) -> FileNotFoundError:
    names = " and ".join(f"{stem}[.gz]" for stem in FILES[split])
    searched = ", ".join(str(folder) for folder in folders)
    return FileNotFoundError(
        f"Fashion-MNIST {split} split ({names}) not found; searched: {searched}. "
        f"Nothing was downloaded ({reason}). Fixes: run `commlab data fetch` (or `make data`), which "
        f"tries the Debian package (apt-get install dataset-fashion-mnist) and then the download; "
        f"put the files in $COMMLAB_DATA/fashion-mnist/; or allow a download (download=True, or unset "
        f"COMMLAB_OFFLINE)."
    )


def fashion_mnist(
    split: str = "train",
    *,
    n: int | None = None,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    download: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    mirrors: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a Fashion-MNIST split.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        n: if given, return a seeded random subset of n items (without replacement): the first n
            of ``np.random.default_rng(seed).permutation(N)``, in that order, so a smaller n gives
            a prefix of a larger one. 1 <= n <= N. None returns the whole split in file order.
        seed: non-negative integer seed for the subset.
        root: if given, the only folder searched, and nothing is downloaded.
        download: True allows a download, False forbids it, None (default) allows it unless the
            environment variable ``COMMLAB_OFFLINE`` is ``"1"``.
        cache_dir: the user cache folder (searched last, and where downloads go); default
            :func:`default_cache_dir`.
        mirrors: base URLs to download from, default :data:`MIRRORS` (tests pass ``file://`` URLs).

    Returns:
        ``(images, labels)``: images float32 ``[N, 1, 28, 28]`` with pixel values / 255 in [0, 1];
        labels int64 ``[N]`` in 0..9 (names in :data:`CLASSES`).

    Raises:
        FileNotFoundError: no folder holds the split and downloading is not allowed.
        ValueError: a file is corrupt (checksum, gzip or IDX header), or every mirror delivered
            corrupt data.
        OSError: a download was allowed but no mirror could be reached.
    """
    check_choice("split", split, tuple(FILES))
    if n is not None:
        n = check_int("n", n, low=1)
    seed = check_seed(seed)
    if download is not None and not isinstance(download, bool):
        raise TypeError(f"download must be True, False or None, got {download!r}")
    urls = MIRRORS if mirrors is None else () if isinstance(mirrors, str) else tuple(mirrors)
    if isinstance(mirrors, str) or not all(isinstance(url, str) for url in urls):
        raise TypeError(f"mirrors must be a sequence of URL strings, got {mirrors!r}")
    if not urls:
        raise ValueError("mirrors must hold at least one URL")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folders = [Path(root)] if root is not None else search_dirs(cache)

    for folder in folders:
        paths = split_paths(folder, split)
        if paths is not None:
            break
    else:
        reason = "root= limits the search to that folder" if root is not None else _offline_reason(download)
        if reason is not None:
            raise _not_found(split, folders, reason)
        paths = download_split(split, cache, urls)
    images, labels = read_split(paths, split)

    if n is not None:
        if n > len(labels):
            raise ValueError(f"n must be in [1, {len(labels)}] for the {split} split, got {n}")
        subset = np.random.default_rng(seed).permutation(len(labels))[:n]
        images, labels = images[subset], labels[subset]
    pixels = images.astype(np.float32)
    pixels /= 255.0
    return torch.from_numpy(pixels).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
