"""The invariant/spurious block data generator in commlab.data.synthetic_spurious."""

from __future__ import annotations

import numpy as np
import pytest

from commlab.data.synthetic_spurious import SpuriousBlocks


def test_shapes_dtypes_and_block_layout():
    world = SpuriousBlocks(n_classes=4, block_dim=3, n_inv=2, n_spu=5, seed=0)
    x, y, blocks = world.sample(100, rng=np.random.default_rng(0))
    assert x.shape == (100, 21) and x.dtype == np.float32
    assert y.shape == (100,) and y.dtype == np.int64 and set(y) <= set(range(4))
    assert blocks.shape == (100, 7)
    assert world.invariant_blocks == [0, 1] and world.spurious_blocks == [2, 3, 4, 5, 6]
    assert world.columns([1, 3]).tolist() == [3, 4, 5, 9, 10, 11]
    with pytest.raises(ValueError, match="blocks"):
        world.columns([7])


def test_in_distribution_every_block_follows_the_label():
    world = SpuriousBlocks(seed=1)
    x, y, blocks = world.sample(500, rng=np.random.default_rng(1))
    assert np.all(blocks == y[:, None])
    residual = x.reshape(500, world.n_blocks, world.block_dim) - world.means[np.arange(world.n_blocks), blocks]
    assert abs(residual.std() - 1.0) < 0.02 and abs(residual.mean()) < 0.02


def test_out_of_distribution_only_spurious_blocks_break_at_the_given_rate():
    world = SpuriousBlocks(n_classes=10, n_inv=2, n_spu=16, seed=2)
    _, y, blocks = world.sample(20000, p_break=0.5, rng=np.random.default_rng(2))
    assert np.all(blocks[:, :2] == y[:, None])
    # a broken block follows a random class, which equals the label with probability 1/10
    follows = (blocks[:, 2:] == y[:, None]).mean()
    assert follows == pytest.approx(0.5 + 0.5 / 10, abs=0.01)


def test_seeds_fix_the_world_and_the_samples():
    a, b = SpuriousBlocks(seed=3), SpuriousBlocks(seed=3)
    assert np.array_equal(a.means, b.means) and not np.array_equal(a.means, SpuriousBlocks(seed=4).means)
    xa = a.sample(10, rng=np.random.default_rng(5))[0]
    xb = b.sample(10, rng=np.random.default_rng(5))[0]
    assert np.array_equal(xa, xb)
    assert np.std(a.means[: a.n_inv]) < np.std(a.means[a.n_inv:])  # 0.35 vs 0.6 by default


@pytest.mark.parametrize("kwargs", [{"n_classes": 1}, {"block_dim": 0}, {"n_inv": 0, "n_spu": 0},
                                    {"inv_scale": 0.0}, {"seed": -1}])
def test_bad_configuration_is_rejected(kwargs):
    with pytest.raises(ValueError):
        SpuriousBlocks(**kwargs)


def test_bad_sampling_arguments_are_rejected():
    with pytest.raises(ValueError, match="p_break"):
        SpuriousBlocks().sample(10, p_break=1.5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="n"):
        SpuriousBlocks().sample(0, rng=np.random.default_rng(0))
