"""models.charlm.CharNGramMLP: every replica equals an ordinary nn.Embedding + nn.Linear MLP built from
its row of flat; gradients, evaluation, layout (layer slices, strided fragments) and argument checks."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from commlab.distributed.outer import fragment_indices
from commlab.models.charlm import CharNGramMLP, bits_per_char


def make(replicas=3, seed=0, dtype=torch.float64, **kwargs):
    kwargs = {"context": 5, "embed": 3, "hidden": (7, 6), "vocab": 11, **kwargs}
    return CharNGramMLP(replicas=replicas, generator=torch.Generator().manual_seed(seed), dtype=dtype, **kwargs)


def reference(model, row):
    """An ordinary embedding + MLP holding the parameters of one row of flat."""
    emb = nn.Embedding(model.vocab, model.embed).to(row.dtype)
    sizes = (model.context * model.embed, *model.hidden, model.vocab)
    linears = [nn.Linear(a, b).to(row.dtype) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    with torch.no_grad():
        emb.weight.copy_(row[model.layer_slices[0][0]].view(model.vocab, model.embed))
        for lin, (w, b), n_in, n_out in zip(linears, model.layer_slices[1:], sizes[:-1], sizes[1:], strict=True):
            lin.weight.copy_(row[w].view(n_in, n_out).T)
            lin.bias.copy_(row[b])

    def f(x):  # x [B, C] -> logits [B, V]
        h = emb(x).reshape(len(x), -1)
        for i, lin in enumerate(linears):
            h = lin(h)
            if i < len(linears) - 1:
                h = torch.relu(h)
        return h

    return f, [emb.weight, *(p for lin in linears for p in (lin.weight, lin.bias))]


def batch(model, K, B, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(model.vocab, (K, B, model.context), generator=g)
    return x, torch.randint(model.vocab, (K, B), generator=g)


def test_every_replica_is_an_embedding_plus_mlp():
    model = make(same_init=False)
    x, y = batch(model, 3, 4)
    logits = model(x)
    assert logits.shape == (3, 4, 11)
    for r in range(3):
        f, _ = reference(model, model.flat[r].detach())
        torch.testing.assert_close(logits[r], f(x[r]), rtol=0, atol=1e-12)


def test_loss_and_grad_are_each_replicas_own():
    model = make(same_init=False)
    x, y = batch(model, 3, 8)
    loss, grad = model.loss_and_grad(x, y)
    assert loss.shape == (3,) and grad.shape == (3, model.d)
    for r in range(3):
        f, params = reference(model, model.flat[r].detach())
        ref_loss = F.cross_entropy(f(x[r]), y[r])
        ref_grads = torch.autograd.grad(ref_loss, params)
        torch.testing.assert_close(loss[r], ref_loss.detach(), rtol=0, atol=1e-12)
        sizes = (model.context * model.embed, *model.hidden, model.vocab)
        torch.testing.assert_close(grad[r, model.layer_slices[0][0]], ref_grads[0].reshape(-1), rtol=0, atol=1e-12)
        for k, ((w, b), n_in, n_out) in enumerate(zip(model.layer_slices[1:], sizes[:-1], sizes[1:], strict=True)):
            torch.testing.assert_close(grad[r, w].view(n_in, n_out), ref_grads[1 + 2 * k].T, rtol=0, atol=1e-12)
            torch.testing.assert_close(grad[r, b], ref_grads[2 + 2 * k], rtol=0, atol=1e-12)


def test_layout_init_and_the_only_parameter():
    model = make()
    assert [name for name, _ in model.named_parameters()] == ["flat"]
    assert model.d == 11 * 3 + (15 * 7 + 7) + (7 * 6 + 6) + (6 * 11 + 11)
    covered = torch.zeros(model.d, dtype=torch.int64)
    for layer in model.layer_slices:
        for piece in layer:
            covered[piece] += 1
    assert covered.eq(1).all()
    assert len(model.layer_slices) == 1 + 3 and len(model.layer_slices[0]) == 1
    assert torch.equal(model.flat[0], model.flat[2])  # same_init
    differ = make(same_init=False)
    assert not torch.equal(differ.flat[0], differ.flat[1])
    assert torch.equal(make(seed=4).flat, make(seed=4).flat) and not torch.equal(make(seed=4).flat, model.flat)
    # embedding ~ N(0, 1); first linear uniform in ±1/sqrt(C·D)
    big = CharNGramMLP(context=16, embed=8, hidden=(32,), replicas=1, generator=torch.Generator().manual_seed(0))
    table = big.flat[0, big.layer_slices[0][0]].detach()
    assert abs(table.std().item() - 1) < 0.1
    assert big.flat[0, big.layer_slices[1][0]].abs().max() <= 128**-0.5


def test_strided_fragments_put_embedding_and_output_in_different_fragments():
    model = CharNGramMLP(context=16, embed=8, hidden=(224,) * 4, replicas=2, generator=torch.Generator().manual_seed(0))
    f0, f1 = fragment_indices(model.layer_slices, 2, model.d)
    assert set(range(model.n_embedding)) <= set(f0.tolist())
    output = model.layer_slices[-1]
    assert set(range(output[0].start, output[1].stop)) <= set(f1.tolist())
    assert len(f0) + len(f1) == model.d and abs(len(f0) - len(f1)) / model.d < 0.01  # balanced halves


def test_evaluate_matches_losses_and_counts_correct():
    model = make(same_init=False)
    x, y = batch(model, 1, 50, seed=3)
    loss, acc = model.evaluate(x[0], y[0], batch_size=7)
    assert loss.shape == acc.shape == (3,) and loss.dtype == torch.float64
    per_replica = model.losses(x.expand(3, -1, -1), y.expand(3, -1)).detach()
    torch.testing.assert_close(loss, per_replica.double(), rtol=0, atol=1e-12)
    logits = model(x.expand(3, -1, -1)).detach()
    torch.testing.assert_close(acc, (logits.argmax(-1) == y).double().mean(1))
    single, _ = model.evaluate(x[0], y[0], flat=model.flat[1].detach())
    torch.testing.assert_close(single, loss[1:2])
    assert bits_per_char(math.log(2)) == pytest.approx(1.0)
    torch.testing.assert_close(bits_per_char(torch.tensor([math.log(4)])), torch.tensor([2.0]))


def test_float32_default_and_training_lowers_the_loss():
    model = CharNGramMLP(context=4, embed=4, hidden=(16,), replicas=2, generator=torch.Generator().manual_seed(0))
    assert model.flat.dtype == torch.float32
    x, y = batch(model, 2, 32)
    opt = torch.optim.Adam([model.flat], lr=1e-2)
    first, _ = model.loss_and_grad(x, y)
    for _ in range(30):
        _, grad = model.loss_and_grad(x, y)
        model.flat.grad = grad
        opt.step()
    assert (model.loss_and_grad(x, y)[0] < 0.5 * first).all()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        (dict(context=0), ValueError),
        (dict(embed=0), ValueError),
        (dict(vocab=1), ValueError),
        (dict(hidden=8), TypeError),
        (dict(hidden=(8, 0)), ValueError),
        (dict(replicas=0), ValueError),
        (dict(dtype=torch.int64), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        make(**kwargs)
    with pytest.raises(TypeError, match="generator"):
        CharNGramMLP(generator=None)


def test_bad_inputs():
    model = make()
    x, y = batch(model, 3, 4)
    with pytest.raises(ValueError, match="int64"):
        model(x.float())
    with pytest.raises(ValueError, match="int64"):
        model(x[:2])
    with pytest.raises(ValueError, match="int64"):
        model(x[..., :4])
    with pytest.raises(ValueError, match="ids in"):
        model(x + 11)
    with pytest.raises(ValueError, match="y must"):
        model.losses(x, y[:, :3])
    with pytest.raises(ValueError, match="flat"):
        model(x, flat=torch.zeros(3, model.d + 1))
    with pytest.raises(ValueError, match="y must"):
        model.evaluate(x[0], y[0, :2])
