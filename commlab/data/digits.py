"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes; no download)."""

from __future__ import annotations

import numpy as np
import torch

from commlab._checks import check_choice, check_fraction, check_seed

from .partition import train_test_indices


def digits(
    split: str | None = None, *, test_fraction: float = 0.25, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load ``sklearn.datasets.load_digits`` as tensors.

    Args:
        split: None for all 1,797 images, or ``"train"`` / ``"test"`` for the two sides of
            ``train_test_indices(1797, test_fraction, seed=seed)`` (449 test images by default).
        test_fraction: share held out for ``"test"``, in (0, 1).
        seed: non-negative integer seed of the split.

    Returns:
        ``(images, labels)``: images float32 ``[N, 1, 8, 8]``, the original 0..16 intensities
        divided by 16, so in [0, 1]; labels int64 ``[N]`` in 0..9. Items keep their original order.
    """
    check_choice("split", split, (None, "train", "test"))
    test_fraction = check_fraction("test_fraction", test_fraction)
    seed = check_seed(seed)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]
    labels = bunch.target.astype(np.int64)
    if split is not None:
        train_idx, test_idx = train_test_indices(len(labels), test_fraction, seed=seed)
        chosen = train_idx if split == "train" else test_idx
        images, labels = images[chosen], labels[chosen]
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)
