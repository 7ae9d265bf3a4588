"""commlab.models.mlp.relu_mlp: layer layout, seeded initialisation that leaves torch's global generator
alone, and bad sizes."""

import pytest
import torch

from commlab.models.mlp import relu_mlp


def test_layout_and_shapes():
    net = relu_mlp((3, 5, 4, 2), seed=0)
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert net(torch.zeros(7, 3)).shape == (7, 2)
    assert len(relu_mlp((3, 2), seed=0)) == 1  # one layer, no activation


def test_init_is_seeded_and_leaves_the_global_generator_alone():
    state = torch.random.get_rng_state()
    a, b = relu_mlp((3, 5, 2), seed=7), relu_mlp((3, 5, 2), seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(relu_mlp((3, 5, 2), seed=8)[0].weight, a[0].weight)


def test_bad_sizes():
    for sizes in ((5,), 5, (3, 0, 2)):
        with pytest.raises(ValueError, match="sizes"):
            relu_mlp(sizes, seed=0)
    with pytest.raises(ValueError, match="seed"):
        relu_mlp((3, 2), seed=-1)
