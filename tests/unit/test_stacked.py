"""StackedMLP: replicas match independent nn.Linear MLPs, per-replica gradients, evaluation, checks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from commlab.models.stacked import StackedMLP


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _as_module(model: StackedMLP, r: int) -> nn.Sequential:
    """Replica r as an ordinary nn.Sequential of Linear/ReLU layers with the same parameters."""
    layers = []
    for W, b in model.layers():
        linear = nn.Linear(W.shape[1], W.shape[2], dtype=W.dtype)
        with torch.no_grad():
            linear.weight.copy_(W[r].T)
            linear.bias.copy_(b[r])
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def test_layout_and_size():
    model = StackedMLP((6, 5, 3), replicas=4, generator=_gen())
    assert model.d == 6 * 5 + 5 + 5 * 3 + 3
    assert model.flat.shape == (4, model.d)
    (w1, b1), (w2, b2) = model.layer_slices
    assert (w1.start, w1.stop, b1.stop, w2.stop, b2.stop) == (0, 30, 35, 50, 53)


def test_same_init_and_independent_init():
    same = StackedMLP((6, 5, 3), replicas=3, generator=_gen(1))
    assert torch.equal(same.flat[0], same.flat[2])
    own = StackedMLP((6, 5, 3), replicas=3, generator=_gen(1), same_init=False)
    assert not torch.equal(own.flat[0], own.flat[1])
    bound = 6 ** -0.5
    assert own.flat[:, :35].abs().max() <= bound and own.flat[:, 35:].abs().max() <= 5 ** -0.5


def test_forward_and_gradients_match_independent_modules():
    model = StackedMLP((6, 5, 4, 3), replicas=3, generator=_gen(2), same_init=False, dtype=torch.float64)
    x = torch.randn(3, 7, 2, 3, generator=_gen(3), dtype=torch.float64)  # features flatten to 6
    y = torch.randint(3, (3, 7), generator=_gen(4))
    loss, grad = model.loss_and_grad(x, y)
    for r in range(3):
        reference = _as_module(model, r)
        expected = F.cross_entropy(reference(x[r].reshape(7, 6)), y[r])
        expected.backward()
        assert torch.allclose(loss[r], expected.detach())
        # gradient rows in the flat layout: W as [in, out] (transposed nn.Linear weight), then b
        flat_grad = torch.cat([torch.cat([lin.weight.grad.T.reshape(-1), lin.bias.grad])
                               for lin in reference if isinstance(lin, nn.Linear)])
        assert torch.allclose(grad[r], flat_grad)


def test_evaluate_runs_every_replica_on_the_shared_set_and_accepts_other_flats():
    model = StackedMLP((4, 8, 3), replicas=2, generator=_gen(5), same_init=False)
    x = torch.randn(50, 4, generator=_gen(6))
    y = torch.randint(3, (50,), generator=_gen(7))
    loss, acc = model.evaluate(x, y, batch_size=16)
    for r in range(2):
        logits = _as_module(model, r)(x)
        assert torch.isclose(loss[r], F.cross_entropy(logits, y).double(), atol=1e-6)
        assert acc[r] == (logits.argmax(1) == y).double().mean()
    mean_loss, _ = model.evaluate(x, y, flat=model.flat.detach().mean(0, keepdim=True))
    assert mean_loss.shape == (1,)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="sizes"):
        StackedMLP((5,), replicas=2, generator=_gen())
    with pytest.raises(ValueError, match="replicas"):
        StackedMLP((5, 2), replicas=0, generator=_gen())
    with pytest.raises(TypeError, match="generator"):
        StackedMLP((5, 2), replicas=1, generator=0)
    model = StackedMLP((5, 2), replicas=2, generator=_gen())
    with pytest.raises(ValueError, match="one batch per replica"):
        model(torch.zeros(3, 4, 5))
    with pytest.raises(ValueError, match="features"):
        model(torch.zeros(2, 4, 6))
    with pytest.raises(ValueError, match="y must have shape"):
        model.losses(torch.zeros(2, 4, 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="flat"):
        model.evaluate(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long), flat=torch.zeros(1, 3))
