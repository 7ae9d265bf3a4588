"""InfoNCE against a hand computation, Recall@K on constructed cases, and the contrastive ensemble."""

import math

import pytest
import torch

from commlab.models.contrastive import contrastive_scores, ensemble_representations, info_nce, recall_at_k


def test_info_nce_matches_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    tau = 0.5
    # row 0: logits (2, 1.2), positive 2; row 1: logits (0, 1.6), positive 1.6
    hand = 0.5 * (-(2 - math.log(math.exp(2) + math.exp(1.2))) - (1.6 - math.log(1 + math.exp(1.6))))
    assert float(info_nce(q, k, tau)) == pytest.approx(hand, rel=1e-6)


def test_info_nce_is_small_for_matching_pairs_and_has_gradients():
    q = torch.eye(4, requires_grad=True)
    aligned = info_nce(q, torch.eye(4), 0.05).detach()
    shuffled = info_nce(q, torch.eye(4).roll(1, dims=0), 0.05)
    assert float(aligned) < 1e-6 < float(shuffled.detach())
    shuffled.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def test_recall_at_k_on_a_constructed_case():
    gallery = torch.eye(4)
    # query 0 and 1 hit; query 2 prefers item 3 (its own item second); query 3 prefers item 0, own item third
    queries = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0.5, 1.0], [1.0, 0, 0, 0.2]])
    queries[3, 1] = 0.5  # item 1 also beats item 3 for query 3
    assert recall_at_k(queries, gallery, 1) == 0.5
    assert recall_at_k(queries, gallery, 2) == 0.75
    assert recall_at_k(queries, gallery, 3) == 1.0


def test_recall_ties_count_for_the_query():
    assert recall_at_k(torch.ones(3, 2), torch.ones(3, 2), 1) == 1.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="same non-empty shape"):
        info_nce(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.zeros(3, 2), torch.zeros(3, 2), 0.0)
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(torch.zeros(3, 2), torch.zeros(3, 2), 4)
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(torch.full((3, 2), math.nan), torch.zeros(3, 2), 1)
    with pytest.raises(ValueError, match="weighting"):
        ensemble_representations(torch.zeros(2, 3, 2), torch.zeros(3, 2), weighting="median")
    with pytest.raises(ValueError, match="needs the anchor"):
        ensemble_representations(torch.zeros(2, 3, 2), None)


def test_scores_and_weights_favour_the_member_that_matches_the_anchor():
    anchor = torch.eye(3)
    good, bad = torch.eye(3), torch.eye(3).roll(1, dims=0)
    reps = torch.stack([good, bad])
    scores = contrastive_scores(reps, anchor, 0.5)
    hand = torch.log_softmax(good @ anchor.T / 0.5, dim=1).diagonal()
    assert torch.allclose(scores[0], hand)
    assert (scores[0] > scores[1]).all()
    ensemble, weights = ensemble_representations(reps, anchor, score_temperature=0.5, weight_temperature=1.0)
    assert torch.allclose(weights.sum(0), torch.ones(3))
    assert torch.allclose(weights, torch.softmax(scores, dim=0))
    assert torch.allclose(ensemble, weights[0, :, None] * good + weights[1, :, None] * bad)
    # a colder weighting temperature moves the ensemble towards the better member
    cold, _ = ensemble_representations(reps, anchor, score_temperature=0.5, weight_temperature=0.01)
    assert torch.allclose(cold, good, atol=1e-4)


def test_mean_weighting_is_the_plain_average():
    reps = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    ensemble, weights = ensemble_representations(reps, weighting="mean")
    assert torch.allclose(ensemble, reps.mean(0)) and torch.allclose(weights, torch.full((3, 5), 1 / 3))
