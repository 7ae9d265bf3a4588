"""Masked sparse layers, G2G masks, correlation tracking and DST rewiring in commlab.models.sparse."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from commlab.models import fit, sparse


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- groups and masks ----------------------------------------------------------------------------


def test_index_grouping_is_contiguous_and_balanced():
    labels = sparse.group_labels(16, 4)
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert sparse.group_labels(10, 8).tolist() == [0, 0, 1, 2, 3, 4, 4, 5, 6, 7]


def test_random_grouping_keeps_sizes_and_is_seeded():
    a = sparse.group_labels(100, 8, "random", gen(1))
    b = sparse.group_labels(100, 8, "random", gen(1))
    c = sparse.group_labels(100, 8, "random", gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.bincount(a), torch.bincount(sparse.group_labels(100, 8)))


@pytest.mark.parametrize("kwargs, error", [
    ({"n": 0, "groups": 2}, ValueError), ({"n": 4, "groups": 0}, ValueError),
    ({"n": 4.0, "groups": 2}, TypeError), ({"n": 4, "groups": 2, "scheme": "mixer"}, ValueError),
    ({"n": 4, "groups": 2, "scheme": "random"}, ValueError),  # no generator
])
def test_group_labels_rejects_bad_input(kwargs, error):
    with pytest.raises(error):
        sparse.group_labels(**kwargs)


def test_g2g_mask_limits_are_block_diagonal_and_dense():
    out_g, in_g = sparse.group_labels(6, 3), sparse.group_labels(9, 3)
    block = sparse.g2g_mask(out_g, in_g, 0.0, gen())
    assert torch.equal(block, out_g[:, None] == in_g[None, :])
    assert sparse.g2g_mask(out_g, in_g, 1.0, gen()).all()
    with pytest.raises(ValueError, match="p_inter"):
        sparse.g2g_mask(out_g, in_g, 1.5, gen())


def test_g2g_mask_density_and_traffic_match_the_analytic_values():
    out_g, in_g = sparse.group_labels(512, 8), sparse.group_labels(784, 8, "random", gen(3))
    mask = sparse.g2g_mask(out_g, in_g, 0.15, gen(4))
    assert sparse.g2g_density(out_g, in_g, 0.15) == pytest.approx(0.125 + 0.15 * 7 / 8)
    assert float(mask.float().mean()) == pytest.approx(sparse.g2g_density(out_g, in_g, 0.15), abs=0.003)
    expected = 0.15 * 7 / 8 / (0.125 + 0.15 * 7 / 8)
    assert sparse.g2g_inter_fraction(out_g, in_g, 0.15) == pytest.approx(expected)
    assert sparse.inter_group_fraction(mask, out_g, in_g) == pytest.approx(expected, abs=0.005)


def test_random_mask_has_exact_edge_count():
    mask = sparse.random_mask(30, 40, 0.25, gen())
    assert mask.dtype == torch.bool and int(mask.sum()) == 300


# --- layers --------------------------------------------------------------------------------------


def test_masked_linear_computes_masked_product_and_masked_entries_get_no_gradient():
    mask = sparse.g2g_mask(sparse.group_labels(5, 2), sparse.group_labels(7, 2), 0.2, gen())
    layer = sparse.MaskedLinear(7, 5, mask, generator=gen(1))
    x = torch.randn(3, 7, generator=gen(2))
    y = layer(x)
    assert torch.allclose(y, x @ (layer.weight * mask).T + layer.bias)
    assert torch.all(layer.weight[~mask] == 0)
    y.sum().backward()
    assert torch.all(layer.weight.grad[~mask] == 0) and torch.any(layer.weight.grad[mask] != 0)
    assert layer.nnz == int(mask.sum()) == layer.macs()


def test_masked_entries_never_affect_the_output_after_adam_steps():
    model, _ = sparse.g2g_mlp([12, 16, 4], 4, 0.1, generator=gen())
    x, y = torch.randn(64, 12, generator=gen(1)), torch.randint(0, 4, (64,), generator=gen(2))
    fit.fit_classifier(model, x, y, steps=20, batch_size=16, lr=1e-2, generator=gen(3))
    before = model(x)
    with torch.no_grad():
        for layer in model.layers:
            layer.weight[~layer.mask] = 123.0
    assert torch.allclose(model(x), before)


def test_init_scale_follows_the_active_fan_in():
    dense = sparse.MaskedLinear(400, 300, generator=gen())
    assert float(dense.weight.detach().abs().max()) <= 1 / 400**0.5
    mask = torch.zeros(300, 400, dtype=torch.bool)
    mask[:, :100] = True
    thin = sparse.MaskedLinear(400, 300, mask, generator=gen())
    assert float(thin.weight.detach().abs().max()) <= 1 / 100**0.5
    assert float(thin.weight.detach()[mask].std()) == pytest.approx((1 / 100**0.5) / 3**0.5, rel=0.05)


def test_masked_linear_rejects_a_wrong_mask():
    with pytest.raises(ValueError, match="mask"):
        sparse.MaskedLinear(3, 2, torch.ones(3, 2, dtype=torch.bool), generator=gen())
    with pytest.raises(ValueError, match="mask"):
        sparse.MaskedLinear(3, 2, torch.ones(2, 3), generator=gen())


def test_g2g_mlp_sparsity_and_macs():
    model, labels = sparse.g2g_mlp([784, 512, 512, 10], 8, 0.15, generator=gen())
    assert [len(g) for g in labels] == [784, 512, 512, 10]
    assert 0.72 < model.sparsity < 0.77
    assert model.macs() == model.nnz == sum(int(layer.mask.sum()) for layer in model.layers)
    dense = sparse.MaskedMLP([784, 128, 128, 10], generator=gen())
    assert dense.sparsity == 0.0 and dense.macs() == 784 * 128 + 128 * 128 + 128 * 10


# --- correlations and rewiring -------------------------------------------------------------------


def test_correlation_tracker_matches_pearson_on_one_batch():
    a_in = torch.randn(500, 3, generator=gen())
    a_out = torch.stack([2 * a_in[:, 0] + 1, -a_in[:, 1], torch.randn(500, generator=gen(1))], dim=1)
    tracker = sparse.CorrelationTracker(3, 3)
    tracker.update(a_in, a_out)
    expected = torch.corrcoef(torch.cat([a_out, a_in], dim=1).T)[:3, 3:]
    assert torch.allclose(tracker.correlation(), expected, atol=1e-4)
    assert tracker.correlation()[0, 0] == pytest.approx(1.0, abs=1e-4)
    assert tracker.correlation()[1, 1] == pytest.approx(-1.0, abs=1e-4)


def test_correlation_is_zero_for_a_constant_unit():
    tracker = sparse.CorrelationTracker(1, 2)
    tracker.update(torch.stack([torch.zeros(50), torch.randn(50, generator=gen())], 1), torch.randn(50, 1))
    assert tracker.correlation()[0, 0] == 0.0
    with pytest.raises(RuntimeError):
        sparse.CorrelationTracker(1, 1).correlation()


def test_magnitude_prune_random_grow_keeps_density_and_zeroes_moved_edges():
    layer = sparse.MaskedLinear(20, 10, sparse.random_mask(10, 20, 0.5, gen()), generator=gen(1))
    before = layer.mask.clone()
    active_w = layer.weight.detach().abs()[before]
    k = sparse.prune_and_regrow(layer, 0.2, generator=gen(2))
    assert k == 20 and layer.nnz == int(before.sum())
    pruned, grown = before & ~layer.mask, layer.mask & ~before
    assert int(pruned.sum()) == int(grown.sum()) == k
    assert float(layer.weight.detach().abs()[before & layer.mask].min()) >= float(active_w.sort().values[k - 1])
    assert torch.all(layer.weight[grown] == 0) and torch.all(layer.weight[pruned] == 0)


def test_hebbian_rewiring_follows_correlations_and_resets_adam_state():
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[:, :2] = True
    layer = sparse.MaskedLinear(4, 2, mask, generator=gen())
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
    tracker = layer.track()
    x = torch.randn(256, 4, generator=gen(1))
    target = torch.stack([x[:, 3], x[:, 2]], 1)  # outputs should come to follow inputs 3 and 2
    for _ in range(30):
        loss = F.mse_loss(layer(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert tracker.batches == 30
    corr = tracker.correlation().abs()
    inactive_best = corr.masked_fill(layer.mask, -1).view(-1).argmax()
    k = sparse.prune_and_regrow(layer, 0.25, prune="hebbian", grow="hebbian", optimizer=optimizer)
    assert k == 1 and layer.mask.view(-1)[inactive_best]
    assert optimizer.state[layer.weight]["exp_avg"].view(-1)[inactive_best] == 0
    assert optimizer.state[layer.weight]["exp_avg_sq"].view(-1)[inactive_best] == 0


def test_rewiring_rejects_bad_rules_and_missing_inputs():
    layer = sparse.MaskedLinear(4, 2, generator=gen())
    with pytest.raises(ValueError, match="prune"):
        sparse.prune_and_regrow(layer, 0.1, prune="set", generator=gen())
    with pytest.raises(ValueError, match="grow"):
        sparse.prune_and_regrow(layer, 0.1, grow="sparse", generator=gen())
    with pytest.raises(ValueError, match="track"):
        sparse.prune_and_regrow(layer, 0.1, prune="hebbian", generator=gen())
    with pytest.raises(ValueError, match="Generator"):
        sparse.prune_and_regrow(layer, 0.1)
    with pytest.raises(ValueError, match="fraction"):
        sparse.prune_and_regrow(layer, 1.5, generator=gen())
    assert sparse.prune_and_regrow(layer, 0.5, generator=gen()) == 0  # dense: nothing to regrow


# --- training -------------------------------------------------------------------------------------


def test_fit_classifier_learns_and_is_seeded():
    x = torch.randn(256, 2, 3, generator=gen())
    y = (x[:, 0, 0] > 0).long()

    def run():
        model = sparse.MaskedMLP([6, 16, 2], generator=gen(1))
        losses = fit.fit_classifier(model, x, y, steps=60, batch_size=32, lr=1e-2, generator=gen(2))
        return model, losses

    (m1, l1), (_, l2) = run(), run()
    assert l1 == l2 and len(l1) == 60
    accuracy = float((fit.predict_proba(m1, x).argmax(1) == y).float().mean())
    assert accuracy > 0.9 and sum(l1[-10:]) < sum(l1[:10])


def test_fit_classifier_calls_back_every_step_and_checks_sizes():
    x, y = torch.randn(8, 3), torch.zeros(8, dtype=torch.long)
    calls = []
    fit.fit_classifier(sparse.MaskedMLP([3, 2], generator=gen()), x, y, steps=5, batch_size=4, lr=1e-3,
                          generator=gen(), on_step=lambda step, opt: calls.append((step, type(opt).__name__)))
    assert calls == [(s, "Adam") for s in range(1, 6)]
    with pytest.raises(ValueError, match="batch_size"):
        fit.fit_classifier(sparse.MaskedMLP([3, 2], generator=gen()), x, y, steps=1, batch_size=9, lr=1e-3,
                              generator=gen())
