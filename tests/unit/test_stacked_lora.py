"""models.lora stacked replicas: N adapters over one frozen base equal N separately adapted models (outputs
and gradients), the flat [N, d] adapter vector round-trips, and bad input is refused."""

import copy

import pytest
import torch

from commlab.models.lora import (
    LoRALinear,
    apply_lora,
    load_lora_vector,
    lora_grad_vector,
    lora_layers,
    lora_vector,
    merge_lora,
)
from commlab.models.transformer import TinyTransformer

ALL = ("qkv", "out", "fc1", "fc2")
N, RANK = 3, 2


def base_model():
    return TinyTransformer(vocab=11, d_model=8, n_layers=2, n_heads=2, context=6, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(0))


def stacked_and_singles():
    """A stacked model with random adapters, and N single models holding replica n's adapters."""
    base = base_model()
    stacked = copy.deepcopy(base)
    apply_lora(stacked, rank=RANK, alpha=4.0, targets=ALL, generator=torch.Generator().manual_seed(1), replicas=N)
    vector = torch.randn(N, lora_vector(stacked).shape[1], generator=torch.Generator().manual_seed(2),
                         dtype=torch.float64)
    load_lora_vector(stacked, vector)
    singles = []
    for n in range(N):
        single = copy.deepcopy(base)
        apply_lora(single, rank=RANK, alpha=4.0, targets=ALL, generator=torch.Generator().manual_seed(1))
        load_lora_vector(single, vector[n:n + 1])
        singles.append(single)
    return base, stacked, singles, vector


def batch(b=2):
    g = torch.Generator().manual_seed(3)
    return torch.randint(11, (N * b, 6), generator=g), torch.randint(11, (N * b, 6), generator=g)


def test_fresh_replicas_start_equal_with_b_zero_so_the_model_equals_its_base():
    base = base_model()
    stacked = copy.deepcopy(base)
    apply_lora(stacked, rank=RANK, alpha=4.0, targets=ALL, generator=torch.Generator().manual_seed(1), replicas=N)
    v = lora_vector(stacked)
    assert v.shape == (N, 2 * RANK * ((8 + 24) + (8 + 8) + (8 + 32) + (32 + 8)))  # Σ r (in + out), 2 layers
    assert torch.equal(v, v[:1].expand_as(v))
    for layer in lora_layers(stacked):
        assert layer.A.shape == (N, RANK, layer.base.in_features) and not layer.B.any()
    x, _ = batch()
    assert torch.equal(stacked(x), base(x))


def test_each_group_of_the_batch_gets_its_own_adapter():
    _, stacked, singles, _ = stacked_and_singles()
    x, _ = batch()
    with torch.no_grad():
        out = stacked(x).view(N, 2, 6, 11)
        for n, single in enumerate(singles):
            torch.testing.assert_close(out[n], single(x.view(N, 2, 6)[n]), rtol=0, atol=1e-12)
        assert not torch.allclose(out[0], singles[1](x.view(N, 2, 6)[0]))


def test_the_sum_of_group_losses_gives_each_replica_its_own_gradient():
    _, stacked, singles, _ = stacked_and_singles()
    x, y = batch()
    losses = -stacked.token_log_probs(x, y).view(N, -1).mean(dim=1)
    losses.sum().backward()
    grads = lora_grad_vector(stacked)
    for n, single in enumerate(singles):
        single.loss(x.view(N, 2, 6)[n], y.view(N, 2, 6)[n]).backward()
        torch.testing.assert_close(grads[n:n + 1], lora_grad_vector(single), rtol=0, atol=1e-12)
    assert all(p.grad is None for name, p in stacked.named_parameters() if "base" in name or "embed" in name)


def test_the_flat_vector_round_trips_and_unset_gradients_read_as_zero():
    _, stacked, _, vector = stacked_and_singles()
    assert torch.equal(lora_vector(stacked), vector)
    fc2 = RANK * (32 + 8)  # the last layer, block 1's fc2: A [r, 32] then B [8, r]
    fc1_b = vector[:, -(fc2 + 32 * RANK):-fc2]  # block 1's fc1 B [32, r] comes just before it
    assert torch.equal(stacked.blocks[1].fc1.B, fc1_b.reshape(N, 32, RANK))
    assert torch.equal(lora_grad_vector(stacked), torch.zeros_like(vector))
    assert lora_vector(stacked_and_singles()[2][0]).shape == (1, vector.shape[1])


def test_bad_input_is_refused():
    _, stacked, _, vector = stacked_and_singles()
    with pytest.raises(ValueError, match="cannot be merged"):
        merge_lora(stacked)
    with pytest.raises(ValueError, match="divisible by 3"):
        stacked(torch.zeros(4, 6, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"vector must be a tensor \[3, "):
        load_lora_vector(stacked, vector[:2])
    with pytest.raises(ValueError, match="no LoRA"):
        lora_vector(base_model())
    with pytest.raises(ValueError, match="replicas"):
        LoRALinear(torch.nn.Linear(4, 4), rank=1, alpha=1.0, generator=torch.Generator(), replicas=0)
    mixed = base_model()
    apply_lora(mixed, rank=1, alpha=1.0, targets=("qkv",), generator=torch.Generator(), replicas=2)
    mixed.blocks[0].fc1 = LoRALinear(mixed.blocks[0].fc1, rank=1, alpha=1.0, generator=torch.Generator())
    with pytest.raises(ValueError, match="different replica counts"):
        lora_vector(mixed)
