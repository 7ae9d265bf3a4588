"""commlab.models.moe: the tiny top-1 mixture-of-experts LM whose routes feed the ExFlow placement."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from commlab.data.text import TextCorpus
from commlab.models.moe import TinyMoELM, layer_mutual_information, routing_entropy, routing_trace, train_moe


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def make(seed=0, **kwargs):
    kwargs = {"vocab": 11, "context": 4, "embed": 3, "width": 8, "hidden": 6, "n_layers": 3, "n_experts": 4,
              **kwargs}
    return TinyMoELM(**kwargs, generator=gen(seed))


def corpus(n=5000, seed=1):
    ids = (torch.arange(n) % 7 + torch.randint(0, 2, (n,), generator=gen(seed))).to(torch.uint8)  # a learnable cycle
    return TextCorpus(ids=ids, files=(), sha256="", python_version="")


def test_forward_routes_each_token_to_its_argmax_expert_only():
    model = make()
    x = torch.randint(0, 11, (32, 4), generator=gen(2))
    logits, routes, aux = model(x)
    assert logits.shape == (32, 11) and routes.shape == (32, 3) and routes.dtype == torch.int64
    # recompute by hand: only the routed expert, scaled by its router probability, is added to the residual
    h = model.embedding[x].reshape(32, -1) @ model.w_in
    balance = 0.0
    for layer in range(3):
        u = model.norms[layer](h)
        probs = torch.softmax(u @ model.router[layer], dim=-1)
        e = probs.argmax(dim=-1)
        assert torch.equal(e, routes[:, layer])
        out = torch.stack([torch.relu(u[i] @ model.w1[layer, e[i]] + model.b1[layer, e[i]]) @ model.w2[layer, e[i]]
                           + model.b2[layer, e[i]] for i in range(32)])
        h = h + probs.gather(1, e[:, None]) * out
        share = torch.bincount(e, minlength=4).float() / 32
        balance += 4 * (share * probs.mean(dim=0)).sum().item()
    torch.testing.assert_close(logits, model.out_norm(h) @ model.w_out + model.b_out)
    assert aux.item() == pytest.approx(balance, rel=1e-5)
    torch.testing.assert_close(make()(x)[0], logits)  # the generator fixes the weights
    assert not torch.equal(make(seed=5)(x)[0], logits)


def test_training_lowers_the_loss_and_the_trace_matches_the_forward_routes():
    model, data = make(n_layers=2), corpus()
    losses = train_moe(model, data, steps=150, batch_size=64, lr=1e-2, aux_weight=0.01, generator=gen(3))
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.3
    x, y = data.windows(torch.arange(0, 1000), 4)
    trace, loss = routing_trace(model, x, y, batch_size=128)
    assert trace.shape == (1000, 2) and trace.dtype == np.int64
    with torch.no_grad():
        logits, routes, _ = model(x)
    assert np.array_equal(trace, routes.numpy())
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert math.isnan(routing_trace(model, x)[1])
    again = make(n_layers=2)
    assert train_moe(again, data, steps=150, batch_size=64, lr=1e-2, aux_weight=0.01, generator=gen(3)) == losses


def test_routing_entropy_and_layer_mutual_information():
    rng = np.random.default_rng(0)
    first = rng.integers(0, 4, 40_000)
    follow = np.stack([first, (first + 1) % 4, rng.integers(0, 4, 40_000)], axis=1)
    np.testing.assert_allclose(routing_entropy(follow, 4), 2.0, atol=1e-3)
    mi = layer_mutual_information(follow, 4)
    assert mi[0] == pytest.approx(2.0, abs=1e-3) and mi[1] == pytest.approx(0.0, abs=1e-3)
    assert routing_entropy(np.zeros((10, 2), dtype=np.int64), 4).tolist() == [0.0, 0.0]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="n_layers"):
        make(n_layers=1)
    with pytest.raises(TypeError, match="generator"):
        TinyMoELM(11, 4, 3, 8, 6, 3, 4, generator=0)
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        make()(torch.zeros(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="aux_weight"):
        train_moe(make(), corpus(), steps=1, batch_size=2, lr=1e-3, aux_weight=-1.0, generator=gen())
