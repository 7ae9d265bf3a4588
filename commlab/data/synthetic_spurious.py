"""Synthetic classification data with invariant and spurious feature blocks.

A simplified version of the theory set-up of "Spurious Feature Diversification Improves
Out-of-distribution Generalization" (Lin et al., 2023): C classes, features in blocks of
dimension b, ``n_inv`` invariant blocks and ``n_spu`` spurious blocks. Each block j has one mean
vector per class, :math:`\\mu_j[c] \\sim \\mathcal N(0, \\sigma_j^2 I_b)` (:math:`\\sigma_j` =
``inv_scale`` or ``spu_scale``), and a sample with label y has block j equal to

.. math::

    x_j = \\mu_j[y_j] + \\varepsilon_j, \\qquad \\varepsilon_j \\sim \\mathcal N(0, I_b),

where :math:`y_j = y` in distribution. Out of distribution, each spurious block independently
follows a uniformly random class :math:`y_j` with probability ``p_break`` (invariant blocks always
follow y). Gaussian blocks and independent breaking are the simplification; the paper's theory
uses general spurious features and its experiments MultiColorMNIST.
"""

from __future__ import annotations

import numpy as np

from commlab._checks import check_int, check_positive


class SpuriousBlocks:
    """A fixed draw of class means for invariant and spurious blocks.

    Args:
        n_classes: C >= 2.
        block_dim: b >= 1, the dimension of each block.
        n_inv: invariant blocks (>= 0); they come first in the feature vector.
        n_spu: spurious blocks (>= 0); they follow the invariant ones.
        inv_scale, spu_scale: standard deviation of the class means of each kind of block (> 0).
        seed: non-negative integer seed of the class means (the "world").
    """

    def __init__(self, n_classes: int = 10, block_dim: int = 8, n_inv: int = 2, n_spu: int = 16, *,
                 inv_scale: float = 0.35, spu_scale: float = 0.6, seed: int = 0):
        self.n_classes = check_int("n_classes", n_classes, low=2)
        self.block_dim = check_int("block_dim", block_dim, low=1)
        self.n_inv = check_int("n_inv", n_inv, low=0)
        self.n_spu = check_int("n_spu", n_spu, low=0)
        if self.n_inv + self.n_spu == 0:
            raise ValueError("n_inv + n_spu must be >= 1")
        scales = np.array([check_positive("inv_scale", inv_scale)] * self.n_inv
                          + [check_positive("spu_scale", spu_scale)] * self.n_spu)
        rng = np.random.default_rng(check_int("seed", seed, low=0))
        self.means = rng.normal(size=(self.n_blocks, self.n_classes, self.block_dim)) * scales[:, None, None]
        """float64 ``[n_blocks, C, b]`` class means."""

    @property
    def n_blocks(self) -> int:
        return self.n_inv + self.n_spu

    @property
    def n_features(self) -> int:
        return self.n_blocks * self.block_dim

    @property
    def invariant_blocks(self) -> list[int]:
        return list(range(self.n_inv))

    @property
    def spurious_blocks(self) -> list[int]:
        return list(range(self.n_inv, self.n_blocks))

    def columns(self, blocks) -> np.ndarray:
        """Sorted int64 feature columns of the given block indices."""
        blocks = np.asarray(sorted(blocks), dtype=np.int64)
        if blocks.size and (blocks.min() < 0 or blocks.max() >= self.n_blocks):
            raise ValueError(f"blocks must be in [0, {self.n_blocks - 1}], got {blocks.tolist()}")
        return (blocks[:, None] * self.block_dim + np.arange(self.block_dim)[None, :]).reshape(-1)

    def sample(self, n: int, *, p_break: float = 0.0,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw ``n`` labelled samples.

        Args:
            n: number of samples, >= 1.
            p_break: probability, per sample and spurious block, that the block follows a uniformly
                random class instead of the label (0 in distribution), in [0, 1].
            rng: numpy generator.

        Returns:
            ``(x, y, block_labels)``: features float32 ``[n, n_blocks * b]``, labels int64 ``[n]``
            (uniform over classes), and the class each block followed, int64 ``[n, n_blocks]``.
        """
        n = check_int("n", n, low=1)
        if isinstance(p_break, bool) or not isinstance(p_break, int | float) or not 0.0 <= p_break <= 1.0:
            raise ValueError(f"p_break must be a real number in [0, 1], got {p_break!r}")
        y = rng.integers(0, self.n_classes, size=n)
        block_labels = np.repeat(y[:, None], self.n_blocks, axis=1)
        broken = rng.random((n, self.n_spu)) < p_break
        random_classes = rng.integers(0, self.n_classes, size=(n, self.n_spu))
        block_labels[:, self.n_inv:] = np.where(broken, random_classes, block_labels[:, self.n_inv:])
        x = self.means[np.arange(self.n_blocks)[None, :], block_labels]  # [n, n_blocks, b]
        x = x + rng.normal(size=x.shape)
        return x.reshape(n, -1).astype(np.float32), y.astype(np.int64), block_labels.astype(np.int64)
