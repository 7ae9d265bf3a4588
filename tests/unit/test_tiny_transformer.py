"""models.transformer.TinyTransformer: causal masking (a future token never changes past logits), shapes,
log-probabilities against cross-entropy, seeded initialisation without the global RNG, tied and untied heads,
Kaplan's FLOP count, a few steps of learning, and argument checks."""

import math

import pytest
import torch
import torch.nn.functional as F

from commlab.models.transformer import TinyTransformer


def make(seed=0, **kwargs):
    kwargs = {"vocab": 13, "d_model": 16, "n_layers": 2, "n_heads": 4, "context": 12, **kwargs}
    return TinyTransformer(generator=torch.Generator().manual_seed(seed), **kwargs)


def ids(shape, vocab=13, seed=1):
    return torch.randint(vocab, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("tied", [True, False])
def test_changing_a_future_token_leaves_every_earlier_logit_unchanged(tied):
    model = make(tied=tied, dtype=torch.float64)
    x = ids((3, 12))
    for t in (0, 5, 11):
        changed = x.clone()
        changed[:, t] = (changed[:, t] + 1) % 13
        with torch.no_grad():
            before, after = model(x), model(changed)
        torch.testing.assert_close(after[:, :t], before[:, :t], rtol=0, atol=1e-12)
        assert (after[:, t:] - before[:, t:]).abs().amax() > 1e-6  # position t and later do see it


def test_shapes_and_log_probs_agree_with_cross_entropy():
    model = make()
    x, y = ids((4, 10)), ids((4, 10), seed=2)
    logits = model(x)
    assert logits.shape == (4, 10, 13)
    logp = model.token_log_probs(x, y)
    assert logp.shape == (4, 10) and (logp <= 0).all()
    expected = F.cross_entropy(logits.reshape(-1, 13), y.reshape(-1))
    torch.testing.assert_close(model.loss(x, y), expected)
    torch.testing.assert_close(logp.exp().sum(), torch.softmax(logits, -1).gather(-1, y[..., None]).sum())


def test_initialisation_is_seeded_and_leaves_the_global_generator_alone():
    state = torch.get_rng_state()
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert not torch.equal(a.blocks[0].qkv.weight, c.blocks[0].qkv.weight)
    std = a.embed.weight.std().item()
    assert 0.01 < std < 0.03  # N(0, 0.02^2)
    assert torch.equal(a.blocks[0].qkv.bias, torch.zeros_like(a.blocks[0].qkv.bias))
    assert torch.equal(a.blocks[1].ln2.weight, torch.ones(16))


def test_tied_head_shares_the_embedding_and_untied_head_has_its_own():
    tied, untied = make(tied=True), make(tied=False)
    assert tied.head is None
    assert untied.head.weight.shape == (13, 16)
    assert untied.n_params() == tied.n_params() + 13 * 16
    assert tied.n_params(non_embedding=False) == tied.n_params() + 13 * 16 + 12 * 16
    x = ids((2, 5))
    torch.testing.assert_close(tied(x), F.linear(tied.ln_f(_trunk(tied, x)), tied.embed.weight))


def _trunk(model, x):
    h = model.embed(x) + model.position.weight[: x.shape[1]]
    for block in model.blocks:
        h = block(h)
    return h


def test_flops_per_token_is_kaplans_6n_plus_6ltd():
    model = make(d_ff=24)
    d, L = 16, 2
    per_block = (d * 3 * d + 3 * d) + (d * d + d) + (d * 24 + 24) + (24 * d + d) + 4 * d  # linears + two LayerNorms
    n = L * per_block + 2 * d  # + the final LayerNorm
    assert model.n_params() == n
    assert model.flops_per_token() == 6 * n + 6 * L * 12 * d
    assert model.flops_per_token(context=4) == 6 * n + 6 * L * 4 * d
    with pytest.raises(ValueError, match="context"):
        model.flops_per_token(context=13)


def test_a_few_adamw_steps_learn_a_periodic_sequence():
    model = make(seed=5)
    sequence = torch.arange(13).repeat(2)[None, :13]  # 0, 1, ..., 12
    x, y = sequence[:, :-1], sequence[:, 1:]
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = model.loss(x, y).item()
    for _ in range(60):
        loss = model.loss(x, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert first > math.log(13) - 0.5 and model.loss(x, y).item() < 0.1 * first


def test_bad_configuration_and_input_raise():
    with pytest.raises(ValueError, match="divisible"):
        make(d_model=18, n_heads=4)
    with pytest.raises(ValueError, match="n_layers"):
        make(n_layers=0)
    with pytest.raises(ValueError, match="context"):
        make(context=0)
    with pytest.raises(TypeError, match="generator"):
        TinyTransformer(generator=0)
    with pytest.raises(TypeError, match="dtype"):
        make(dtype=torch.int64)
    model = make()
    with pytest.raises(ValueError, match="T = 13"):
        model(ids((1, 13)))
    with pytest.raises(ValueError, match="ids in"):
        model(torch.full((1, 3), 13))
    with pytest.raises(ValueError, match="int64"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="y must"):
        model.token_log_probs(ids((1, 3)), ids((1, 4)))
