"""Colour photo patches: a small, offline, CIFAR-like substitute built from bundled photos.

Sources are photos shipped inside the scikit-image and scikit-learn packages (never images that
scikit-image fetches through pooch). Train and test use different photos: the split is by source
image, never by patch, so test patches cannot overlap training pixels. This is not CIFAR-10 or
Kodak: absolute PSNR values are not comparable with published ones.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from commlab._checks import check_choice, check_int, check_seed

SOURCES = {
    "train": (
        "skimage:astronaut",
        "skimage:coffee",
        "skimage:rocket",
        "skimage:hubble_deep_field",
        "skimage:immunohistochemistry",
        "skimage:retina",
        "skimage:motorcycle_left",
        "sklearn:china.jpg",
    ),
    "test": ("skimage:chelsea", "sklearn:flower.jpg"),
}
"""Source photos per split, as ``library:name``; the two splits share no photo."""


def _read_source(source: str) -> np.ndarray:
    """One bundled photo as a uint8 ``[H, W, 3]`` array."""
    library, name = source.split(":")
    if library == "sklearn":
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)
    import skimage.data

    if name == "motorcycle_left":
        return skimage.data.stereo_motorcycle()[0]
    return getattr(skimage.data, name)()


@functools.cache
def _load(split: str) -> tuple[np.ndarray, ...]:
    """The split's photos, uint8 ``[H, W, 3]``, read-only (kept for the process: about 14 MB)."""
    images = tuple(_read_source(source) for source in SOURCES[split])
    for image in images:
        image.setflags(write=False)
    return images


def photos(split: str = "train") -> list[np.ndarray]:
    """The whole source photos of a split (e.g. for "Kodak-like" evaluation on ``"test"``).

    Args:
        split: ``"train"`` (8 photos) or ``"test"`` (2 held-out photos), see :data:`SOURCES`.

    Returns:
        list of float32 ``[H, W, 3]`` arrays, RGB values / 255 in [0, 1], in :data:`SOURCES` order
        (sizes differ). Fresh copies, safe to modify.
    """
    check_choice("split", split, tuple(SOURCES))
    return [image.astype(np.float32) / np.float32(255.0) for image in _load(split)]


def photo_patches(n: int, *, size: int = 32, split: str = "train", seed: int = 0) -> torch.Tensor:
    """Random square crops of a split's photos, each flipped left-right with probability 1/2.

    For each patch a photo is chosen uniformly, then a crop position uniformly among all positions
    that fit, then the flip; all draws come from ``np.random.default_rng(seed)``.

    Args:
        n: number of patches, >= 1.
        size: patch side in pixels, 1 <= size <= the smallest photo side of the split (400 for
            ``"train"``, 300 for ``"test"``).
        split: ``"train"`` or ``"test"`` (held-out photos, see :data:`SOURCES`).
        seed: non-negative integer seed.

    Returns:
        float32 ``[n, 3, size, size]`` in [0, 1].
    """
    n = check_int("n", n, low=1)
    check_choice("split", split, tuple(SOURCES))
    seed = check_seed(seed)
    images = _load(split)
    heights = np.array([image.shape[0] for image in images])
    widths = np.array([image.shape[1] for image in images])
    size = check_int("size", size, low=1, high=int(min(heights.min(), widths.min())))
    rng = np.random.default_rng(seed)
    which = rng.integers(len(images), size=n)
    tops = rng.integers(0, heights[which] - size + 1)
    lefts = rng.integers(0, widths[which] - size + 1)
    flips = rng.random(n) < 0.5
    patches = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        crop = images[which[i]][tops[i] : tops[i] + size, lefts[i] : lefts[i] + size]
        patches[i] = crop[:, ::-1] if flips[i] else crop
    return torch.from_numpy(patches).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
