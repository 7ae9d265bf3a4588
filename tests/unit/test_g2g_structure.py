"""The G2G MLP of the G2GNet notebook's configuration has the brief's sparsity and a cross-group share of
non-zero weights equal to the analytic value (commlab.models.sparse.g2g_mlp).

These were the notebook's claims `g2g-sparsity` and `g2g-traffic`; both hold by construction of the mask
(a Bernoulli draw compared with its own expectation), so they are tested here, on the library, instead.
"""

from __future__ import annotations

import pytest
import torch

from commlab.models import sparse

SIZES = [784, 512, 512, 10]  # the notebook's quick configuration (H = 512)


def model_traffic(model: sparse.MaskedMLP, labels: list[torch.Tensor]) -> float:
    """Share of all non-zero weights of the model that link units of different groups."""
    cross = sum(sparse.inter_group_fraction(layer.mask, labels[i + 1], labels[i]) * layer.nnz
                for i, layer in enumerate(model.layers))
    return cross / model.nnz


def analytic_traffic(labels: list[torch.Tensor], p_inter: float) -> float:
    """The expected cross-group share over all layers: sum n p (1 - s) / sum n density."""
    pairs = [(len(labels[i + 1]) * len(labels[i]), sparse.within_group_share(labels[i + 1], labels[i]))
             for i in range(len(labels) - 1)]
    cross = sum(n * p_inter * (1 - s) for n, s in pairs)
    return cross / sum(n * sparse.g2g_density(labels[i + 1], labels[i], p_inter) for i, (n, _) in enumerate(pairs))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("scheme", ["index", "random"])
def test_g2g_mlp_is_about_75_percent_sparse(seed, scheme):
    # brief, claim g2g-sparsity: sparsity over all masked layers in [0.70, 0.78] for G = 8, p_inter = 0.15
    model, labels = sparse.g2g_mlp(SIZES, 8, 0.15, generator=torch.Generator().manual_seed(seed),
                                   input_scheme=scheme, hidden_scheme=scheme)
    assert 0.70 <= model.sparsity <= 0.78
    entries = [layer.mask.numel() for layer in model.layers]
    expected = 1 - sum(n * sparse.g2g_density(labels[i + 1], labels[i], 0.15)
                       for i, n in enumerate(entries)) / sum(entries)
    assert model.sparsity == pytest.approx(expected, abs=0.005)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("p_inter", [0.05, 0.15, 0.3])
def test_cross_group_share_matches_the_analytic_value(seed, p_inter):
    # brief, claim g2g-traffic: |measured - analytic| <= 0.03 (it is far closer for this size)
    model, labels = sparse.g2g_mlp(SIZES, 8, p_inter, generator=torch.Generator().manual_seed(seed))
    measured = model_traffic(model, labels)
    assert measured == pytest.approx(analytic_traffic(labels, p_inter), abs=0.01)
    if p_inter == 0.15:
        assert measured == pytest.approx(0.51, abs=0.02)  # p_inter (G-1)/G / density, brief's 0.51


def test_a_dense_model_has_the_dense_cross_group_share():
    labels = [sparse.group_labels(n, 8) for n in SIZES]
    dense = sparse.MaskedMLP(SIZES, generator=torch.Generator().manual_seed(0))
    assert dense.sparsity == 0.0
    assert model_traffic(dense, labels) == pytest.approx(analytic_traffic(labels, 1.0))
    assert analytic_traffic(labels, 0.0) == 0.0
