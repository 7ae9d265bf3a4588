"""Distribution-shift builders for image classification data (e.g. a teacher's pre-training set that
differs from a student's downstream task).

* :func:`rotate` — rotate images ``[N, C, H, W]`` about their centre by given angles (bilinear, zero fill);
* :func:`rotate_fraction` — rotate a seeded random fraction of the images by a fixed angle;
* :func:`class_subsample` — keep a chosen fraction of each class (e.g. two classes rare, the rest whole).

All randomness comes from an explicit ``torch.Generator``; inputs are never modified in place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from commlab._checks import check_generator, check_int, check_probability, check_real_number


def _check_images(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = getattr(images, "shape", type(images).__name__)
        raise ValueError(f"images must be a float tensor [N, C, H, W], got {got}")
    return images



def rotate(images: torch.Tensor, degrees) -> torch.Tensor:
    """Images ``[N, C, H, W]`` rotated counter-clockwise by ``degrees`` (a number or an ``[N]`` tensor) about
    their centre; bilinear interpolation, zeros outside the source. Multiples of 90° are exact permutations
    of the pixels when H == W.

    Sampling grid: output pixel at normalised position ``p`` reads the input at ``R(θ)ᵀ p`` with
    ``R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]]`` (coordinates with y pointing down, ``align_corners=False``).
    """
    images = _check_images(images)
    n = len(images)
    if isinstance(degrees, torch.Tensor):
        if degrees.shape not in ((), (n,)) or not bool(torch.isfinite(degrees).all()):
            raise ValueError(f"degrees must be a finite number or an [{n}] tensor, got shape {tuple(degrees.shape)}")
        theta = degrees.to(torch.float64).expand(n) * (math.pi / 180.0)
    else:
        theta = torch.full((n,), check_real_number("degrees", degrees) * math.pi / 180.0, dtype=torch.float64)
    cos, sin = torch.cos(theta), torch.sin(theta)
    # inverse map (output → input) of a counter-clockwise turn on screen (y down): [[c, −s], [s, c]]
    affine = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                          torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1).to(images.dtype)
    grid = F.affine_grid(affine, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate_fraction(images: torch.Tensor, fraction: float, degrees: float, *,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A copy of ``images`` ``[N, C, H, W]`` in which ``round(fraction·N)`` images, chosen at random by
    ``generator``, are rotated by ``degrees``; returns ``(images, rotated)`` with ``rotated`` a bool ``[N]`` mask."""
    images = _check_images(images)
    fraction = check_probability("fraction", fraction)
    degrees = check_real_number("degrees", degrees)
    chosen = torch.randperm(len(images), generator=check_generator(generator))[:round(fraction * len(images))]
    mask = torch.zeros(len(images), dtype=torch.bool)
    mask[chosen] = True
    out = images.clone()
    if len(chosen):
        out[mask] = rotate(images[mask], degrees)
    return out, mask


def class_subsample(labels: torch.Tensor, keep: Mapping[int, float], *, generator: torch.Generator) -> torch.Tensor:
    """Indices (sorted int64) of a subset that keeps, for each class ``c`` in ``keep``, ``round(keep[c]·n_c)``
    of its ``n_c`` examples chosen at random by ``generator``, and every example of the classes not named.

    E.g. ``keep={8: 0.25, 9: 0.25}`` leaves classes 8 and 9 with a quarter of their data ("8 of the 10
    classes with most data")."""
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.dtype != torch.int64:
        raise ValueError(f"labels must be an int64 tensor [N], got {getattr(labels, 'shape', type(labels).__name__)}")
    if not isinstance(keep, Mapping):
        raise TypeError(f"keep must map class -> fraction kept, got {type(keep).__name__}")
    generator = check_generator(generator)
    kept = torch.ones(len(labels), dtype=torch.bool)
    for c in sorted(keep):
        c_int = check_int("keep class", c, low=0)
        fraction = check_probability(f"keep[{c_int}]", keep[c])
        members = torch.nonzero(labels == c_int).flatten()
        order = torch.randperm(len(members), generator=generator)
        kept[members[order[round(fraction * len(members)):]]] = False
    return torch.nonzero(kept).flatten()
