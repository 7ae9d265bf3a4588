import numpy as np
import pytest
import torch

from commlab.seeding import SeedTree, seed_global


def test_seeds_are_stable_across_versions():
    # golden values: BLAKE2b of the key path, independent of Python's hash() and library streams
    tree = SeedTree(0)
    assert tree.seed_for("a") == 4513031048185085819
    assert tree.child(3, "w").seed_for(1) == 7617183058561300778


def test_same_keys_same_stream_other_keys_other_stream():
    tree = SeedTree(7)
    a = torch.randn(5, generator=tree.torch(1, "worker"))
    assert torch.equal(a, torch.randn(5, generator=SeedTree(7).torch(1, "worker")))
    assert not torch.equal(a, torch.randn(5, generator=tree.torch(2, "worker")))
    assert not torch.equal(a, torch.randn(5, generator=SeedTree(8).torch(1, "worker")))
    assert tree.child(1).seed_for("worker") == tree.seed_for(1, "worker")
    assert np.array_equal(tree.numpy("x").random(3), SeedTree(7).numpy("x").random(3))


def test_generators_leave_the_global_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    torch.randn(10, generator=SeedTree(0).torch("noise"))
    SeedTree(0).numpy("noise").random(10)
    assert torch.equal(torch.rand(3), expected)


def test_seed_global_makes_global_draws_repeatable():
    seed_global(5)
    first = (np.random.rand(), torch.rand(1).item())
    seed_global(5)
    assert (np.random.rand(), torch.rand(1).item()) == first


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_bad_seeds_are_rejected(seed):
    with pytest.raises(ValueError, match="non-negative integer"):
        SeedTree(seed)


def test_bad_keys_are_rejected():
    with pytest.raises(TypeError, match="int or str"):
        SeedTree(0).seed_for(1.5)
    with pytest.raises(TypeError, match="int or str"):
        SeedTree(0).child(None)


def test_seeded_init_builds_the_same_module_and_restores_the_global_generator():
    import torch

    from commlab.seeding import seeded_init

    torch.manual_seed(123)
    before = torch.get_rng_state()
    with seeded_init(7):
        a = torch.nn.Linear(4, 3)
    with seeded_init(7):
        b = torch.nn.Linear(4, 3)
    with seeded_init(8):
        c = torch.nn.Linear(4, 3)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)
    assert torch.equal(torch.get_rng_state(), before)
