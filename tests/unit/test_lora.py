"""models.lora: a freshly wrapped model equals its base (B = 0), only adapter parameters train, merged output
equals unmerged output, unmerge restores the base weights, which layers are wrapped, the adapters' state,
and argument checks."""

import copy

import pytest
import torch

from commlab.models.lora import (
    LoRALinear,
    apply_lora,
    lora_layers,
    lora_parameters,
    lora_state_dict,
    merge_lora,
    unmerge_lora,
)
from commlab.models.transformer import TinyTransformer

ALL = ("qkv", "out", "fc1", "fc2")


def make(tied=True, dtype=torch.float64):
    return TinyTransformer(vocab=11, d_model=16, n_layers=2, n_heads=2, context=8, tied=tied, dtype=dtype,
                           generator=torch.Generator().manual_seed(0))


def adapted(targets=ALL, rank=3, alpha=6.0, **kwargs):
    base = make(**kwargs)
    model = copy.deepcopy(base)
    names = apply_lora(model, rank=rank, alpha=alpha, targets=targets, generator=torch.Generator().manual_seed(1))
    return base, model, names


def x_batch():
    return torch.randint(11, (4, 8), generator=torch.Generator().manual_seed(2))


def randomise_b(model, seed=3):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model):
            layer.B.copy_(torch.randn(layer.B.shape, generator=generator, dtype=layer.B.dtype))


def test_b_starts_at_zero_so_the_wrapped_model_equals_the_base():
    base, model, _ = adapted()
    for layer in lora_layers(model):
        assert torch.equal(layer.B, torch.zeros_like(layer.B)) and layer.A.abs().amax() > 0
    x = x_batch()
    assert torch.equal(model(x), base(x))


def test_only_adapter_parameters_require_grad_and_train():
    base, model, names = adapted()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in lora_parameters(model)}
    assert len(trainable) == 2 * len(names) == 2 * 4 * 2
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    optimiser = torch.optim.SGD(trainable, lr=0.1)
    y = x_batch().roll(1, dims=1)
    for _ in range(3):
        loss = model.loss(x_batch(), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None and torch.equal(p, frozen[name]), name
    assert any(layer.B.abs().amax() > 0 for layer in lora_layers(model))
    assert not torch.equal(model(x_batch()), base(x_batch()))


def test_merged_equals_unmerged_and_unmerge_restores_the_base_weights():
    base, model, _ = adapted()
    randomise_b(model)
    x = x_batch()
    with torch.no_grad():
        unmerged = model(x)
        weights = {name: p.clone() for name, p in model.named_parameters() if name.endswith("base.weight")}
        merge_lora(model)
        assert all(layer.merged for layer in lora_layers(model))
        merged = model(x)
        torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-10)
        for layer in lora_layers(model):  # the merged weight is W0 + (alpha / r) B A
            assert layer.scale == 2.0
        layer = model.blocks[0].qkv
        torch.testing.assert_close(layer.base.weight, weights["blocks.0.qkv.base.weight"] + 2.0 * layer.B @ layer.A)
        unmerge_lora(model)
        for name, p in model.named_parameters():
            if name in weights:
                torch.testing.assert_close(p, weights[name], rtol=0, atol=1e-12)
        torch.testing.assert_close(model(x), unmerged, rtol=0, atol=1e-12)


def test_merged_equals_unmerged_in_float32_to_float_tolerance():
    _, model, _ = adapted(dtype=torch.float32)
    randomise_b(model)
    x = x_batch()
    with torch.no_grad():
        unmerged = model(x)
        merge_lora(model)
        torch.testing.assert_close(model(x), unmerged, rtol=1e-5, atol=1e-5)


def test_targets_choose_the_layers():
    _, model, names = adapted(targets=("qkv",))
    assert names == ["blocks.0.qkv", "blocks.1.qkv"]
    assert isinstance(model.blocks[1].qkv, LoRALinear) and not isinstance(model.blocks[1].fc1, LoRALinear)
    _, untied, names = adapted(targets=("head", "fc2"), tied=False)
    assert names == ["blocks.0.fc2", "blocks.1.fc2", "head"]
    assert set(lora_state_dict(untied)) == {f"{n}.{p}" for n in names for p in "AB"}
    assert lora_state_dict(untied)["head.B"].shape == (11, 3)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="match no nn.Linear"):
        adapted(targets=("qkv", "attention"))
    with pytest.raises(ValueError, match="match no nn.Linear"):
        adapted(targets=("head",))  # a tied head is the embedding, not a layer
    with pytest.raises(ValueError, match="at least one"):
        adapted(targets=())
    with pytest.raises(TypeError, match="targets"):
        adapted(targets="qkv")
    with pytest.raises(ValueError, match="rank"):
        adapted(rank=17)
    with pytest.raises(ValueError, match="rank"):
        adapted(rank=0)
    with pytest.raises(ValueError, match="alpha"):
        adapted(alpha=0.0)
    _, model, _ = adapted()
    with pytest.raises(ValueError, match="already has"):
        apply_lora(model, rank=2, alpha=1.0, targets=("qkv",), generator=torch.Generator())
    with pytest.raises(ValueError, match="not merged"):
        unmerge_lora(model)
    merge_lora(model)
    with pytest.raises(ValueError, match="already merged"):
        merge_lora(model)
    with pytest.raises(ValueError, match="no LoRA"):
        merge_lora(make())
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(torch.nn.Conv1d(2, 2, 1), rank=1, alpha=1.0, generator=torch.Generator())
