"""Partition-and-vote ensembles with certificates against data poisoning: DPA and DPA + run-off election.

Deep Partition Aggregation (DPA; Levine & Feizi, 2021) splits the training set into ``k`` disjoint
partitions by a hash of each sample's *content* and trains one base model per partition. A poisoned
sample (inserted, deleted or modified) lands in one partition, so ``r`` poisoned samples change at
most ``r`` base models, each arbitrarily. A prediction is certified at radius ``r`` when no change of
``r`` base models alters it.

Conventions used throughout (prediction and certificates use the same ones):

* ``scores`` is ``[B, k, C]``: for each of ``B`` inputs, the logits of ``k`` base models over ``C``
  classes. A model's *ranking* sorts the classes by decreasing score, ties toward the smaller class
  index; its *vote* is the first class of its ranking and it *prefers* ``a`` to ``b`` when ``a``
  comes first in its ranking, so every model prefers exactly one of any two classes.
* ``v_c`` is the number of votes for ``c``; ``N[a, b]`` the number of models preferring ``a`` to ``b``.
* Vote ties are broken toward the smaller class index. ``gap(a, b) = v_a - v_b - [b < a]`` is
  ``>= 0`` exactly when ``a`` is ranked ahead of ``b``.

**Plurality vote (DPA).** The prediction is ``w = argmax_c v_c``; one changed model lowers
``gap(w, c)`` by at most 2, so the certified radius is ``min_{c != w} floor(gap(w, c) / 2)``.

**Run-off election (ROE; Rezaei et al., ICML 2023, "Run-Off Election: Improved Provable Defense
against Data Poisoning Attacks").** Round 1 takes the two classes with the most votes, ``m1, m2``;
round 2 is a pairwise election between them using every model's full ranking: the margin
``e = N[m1, m2] - N[m2, m1]``; the winner is ``m1`` if ``e > 0`` or (``e == 0`` and ``m1 < m2``),
else ``m2``. Call the winner ``w`` and the other finalist ``l``.

The ROE certificate (:func:`roe_certificate`) is a lower bound on the number of changed models an
attack needs, minimised over the ways the prediction can change (each bound counts, per changed
model, the most it can move the quantity in question):

1. *``l`` wins the run-off*: the pairwise margin of ``w`` over ``l`` must drop below the tie rule;
   one model moves it by at most 2.
2. *A third class ``c`` replaces ``l`` in the run-off and beats ``w``*: ``c`` must overtake ``l`` in
   votes (a model that voted ``l`` moves ``gap(l, c)`` by 2, any other model by at most 1) and the
   pairwise margin of ``w`` over ``c`` must flip (at most 2 per model); one model may do both, so
   the route needs the larger of the two counts.
3. *``w`` misses the run-off*: two classes ``a, b`` must both overtake ``w``. A model that voted
   ``w`` lowers ``gap(w, a) + gap(w, b)`` by at most 3 and each gap by at most 2; any other model
   lowers the sum by at most 1. With ``n`` changes of which at most ``min(n, v_w)`` voted ``w``,
   this gives closed-form conditions; minimise over the pairs.

The certified radius is the smallest of these counts minus one. The bound is checked against
exhaustive search on small ensembles by :func:`exact_certificate` (unit tests and the notebook).
"""

from __future__ import annotations

import hashlib
import itertools
from math import comb

import numpy as np
import torch

RULES = ("dpa", "roe")
"""Aggregation rules: plurality vote (``"dpa"``) and the two-round run-off election (``"roe"``)."""

MAX_EXACT_STATES = 200_000
"""Largest number of ensemble states (multisets of rankings) :func:`exact_certificate` enumerates."""


# --- partitions ----------------------------------------------------------------------------------


def partition_by_hash(samples, k: int) -> np.ndarray:
    """Assign each sample to one of ``k`` partitions by the SHA-256 of its bytes.

    The assignment depends only on the sample's own content (not on its position or on other
    samples), so inserting, deleting or modifying one sample changes at most one partition.

    Args:
        samples: uint8 array or tensor ``[N, ...]`` (e.g. raw image pixels); each row is hashed.
        k: number of partitions, >= 1.

    Returns:
        int64 array ``[N]`` with values in ``0..k-1``: the first 8 bytes of SHA-256, big-endian,
        modulo ``k``.
    """
    k = _check_count("k", k)
    array = samples.numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    if array.dtype != np.uint8:
        raise TypeError(f"samples must be uint8 (raw bytes, e.g. pixels 0..255), got dtype {array.dtype}")
    if array.ndim < 1 or array.shape[0] == 0:
        raise ValueError(f"samples must be a non-empty array [N, ...], got shape {array.shape}")
    rows = np.ascontiguousarray(array).reshape(array.shape[0], -1)
    digests = (int.from_bytes(hashlib.sha256(row.tobytes()).digest()[:8], "big") % k for row in rows)
    return np.fromiter(digests, dtype=np.int64, count=rows.shape[0])


def fit_partition_logreg(features: torch.Tensor, labels: torch.Tensor, parts: np.ndarray, k: int, n_classes: int,
                         *, steps: int = 150, lr: float = 0.05, weight_decay: float = 1e-4) -> torch.Tensor:
    """Train one multinomial logistic regression per partition, all ``k`` at once.

    Partitions are padded to the largest one and trained as a stacked model (``torch.bmm``) with
    full-batch Adam on the sum over partitions of each partition's mean cross-entropy, so every
    model gets exactly its own gradient; ``weight_decay`` adds ``weight_decay/2 * ||W_j||^2`` per model.
    Training is deterministic (zero initialisation, full batches).

    Args:
        features: float32 ``[N, D]`` (per-sample features only: no statistics fitted on the whole set).
        labels: int64 ``[N]`` in ``0..n_classes-1``.
        parts: int64 ``[N]`` partition of each sample, in ``0..k-1`` (:func:`partition_by_hash`).
        k: number of partitions (an empty partition keeps a zero model, which votes for class 0).
        n_classes: number of classes C.
        steps, lr, weight_decay: Adam steps, learning rate and L2 strength.

    Returns:
        float32 ``[k, D + 1, C]``: weights with the bias in the last row. Scores of model ``j`` on
        inputs ``x`` are ``x @ W[j, :-1] + W[j, -1]`` (:func:`partition_scores`).
    """
    k = _check_count("k", k)
    n_classes = _check_count("n_classes", n_classes)
    steps = _check_count("steps", steps)
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(f"features must be [N, D] and labels [N], got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    parts = np.asarray(parts)
    if parts.shape != (features.shape[0],) or parts.min() < 0 or parts.max() >= k:
        raise ValueError(f"parts must be [N] with values in 0..{k - 1}")
    order = np.argsort(parts, kind="stable")
    sizes = np.bincount(parts, minlength=k)
    width = int(sizes.max())
    slot = np.arange(len(parts)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    index = torch.zeros(k, width, dtype=torch.int64)
    mask = torch.zeros(k, width)
    index[parts[order], slot] = torch.from_numpy(order)
    mask[parts[order], slot] = 1.0
    x = torch.cat([features[index], mask[..., None]], dim=-1)  # bias column (0 on padding)
    y = labels[index]
    weight_per_sample = mask / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    weights = torch.zeros(k, features.shape[1] + 1, n_classes, requires_grad=True)
    optimiser = torch.optim.Adam([weights], lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        logits = torch.bmm(x, weights)
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, n_classes), y.reshape(-1), reduction="none")
        loss = (nll.reshape(k, width) * weight_per_sample).sum() + 0.5 * weight_decay * (weights**2).sum()
        loss.backward()
        optimiser.step()
    return weights.detach()


def partition_scores(weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Scores ``[B, k, C]`` of the ``k`` stacked linear models ``weights [k, D + 1, C]`` on ``features [B, D]``."""
    return torch.einsum("bd,kdc->bkc", features, weights[:, :-1]) + weights[:, -1]


# --- counting votes ------------------------------------------------------------------------------


def preference_counts(scores) -> tuple[np.ndarray, np.ndarray]:
    """Votes and pairwise preferences of an ensemble.

    Args:
        scores: ``[B, k, C]`` real array or tensor (finite), C >= 2.

    Returns:
        ``(votes, pairwise)``: int64 ``[B, C]`` with ``votes[b, c]`` = number of models whose vote is
        ``c``; int64 ``[B, C, C]`` with ``pairwise[b, a, c]`` = number of models preferring ``a`` to ``c``
        (zero diagonal; ``pairwise + pairwise^T = k`` off the diagonal).
    """
    scores = _check_scores(scores)
    n_inputs, _, n_classes = scores.shape
    votes = np.zeros((n_inputs, n_classes), dtype=np.int64)
    pairwise = np.zeros((n_inputs, n_classes, n_classes), dtype=np.int64)
    for start in range(0, n_inputs, 256):
        block = scores[start:start + 256]
        order = np.argsort(-block, axis=-1, kind="stable")
        position = np.empty_like(order)
        np.put_along_axis(position, order, np.arange(n_classes), axis=-1)
        votes[start:start + 256] = (order[..., 0, None] == np.arange(n_classes)).sum(axis=1)
        pairwise[start:start + 256] = (position[..., :, None] < position[..., None, :]).sum(axis=1)
    return votes, pairwise


def _gap(votes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tie-aware vote gap ``v_a - v_b - [b < a]`` (>= 0 iff ``a`` is ranked ahead of ``b``); broadcasts."""
    return np.take_along_axis(votes, a, axis=1) - np.take_along_axis(votes, b, axis=1) - (b < a)


def _top_two(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and second class by votes, ties toward the smaller index: int64 ``[B]`` each."""
    first = votes.argmax(axis=1)
    masked = votes.copy()
    masked[np.arange(len(votes)), first] = -1
    return first, masked.argmax(axis=1)


def _runoff(votes: np.ndarray, pairwise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run-off winner and loser from counts: int64 ``[B]`` each."""
    first, second = _top_two(votes)
    rows = np.arange(len(votes))
    margin = pairwise[rows, first, second] - pairwise[rows, second, first]
    first_wins = (margin > 0) | ((margin == 0) & (first < second))
    return np.where(first_wins, first, second), np.where(first_wins, second, first)


def _predict_counts(votes: np.ndarray, pairwise: np.ndarray, rule: str) -> np.ndarray:
    return votes.argmax(axis=1) if rule == "dpa" else _runoff(votes, pairwise)[0]


def predict(scores, rule: str) -> np.ndarray:
    """Ensemble prediction, int64 ``[B]``: plurality vote (``rule="dpa"``) or run-off election (``"roe"``)."""
    _check_rule(rule)
    return _predict_counts(*preference_counts(scores), rule)


# --- certificates --------------------------------------------------------------------------------


def _changes_needed(deficit: np.ndarray, supply: np.ndarray, strong: int) -> np.ndarray:
    """Fewest changes ``n`` with ``n + (strong - 1) * min(n, supply) >= deficit``.

    A change moves the quantity by at most ``strong`` when it is one of the ``supply`` models that can
    move it that much, and by at most 1 otherwise. ``deficit <= 0`` needs no change.
    """
    deficit = np.maximum(deficit, 0)
    fast = -(-deficit // strong)  # ceil(deficit / strong), enough when it uses strong changes only
    return np.where(deficit <= strong * supply, fast, deficit - (strong - 1) * supply)


def _pairwise_changes(margin: np.ndarray, tie_favours_other: np.ndarray) -> np.ndarray:
    """Changes needed to make a pairwise margin lose: each change moves it by at most 2."""
    return np.maximum((margin - tie_favours_other) // 2 + 1, 0)


def dpa_certificate(scores) -> tuple[np.ndarray, np.ndarray]:
    """Plurality-vote prediction and its certified radius (DPA).

    Returns:
        ``(prediction, radius)``, int64 ``[B]`` each: ``radius = min_{c != w} floor(gap(w, c) / 2)``, the
        largest number of base models that can be changed arbitrarily without changing the prediction.
    """
    votes, _ = preference_counts(scores)
    winner = votes.argmax(axis=1)
    classes = np.broadcast_to(np.arange(votes.shape[1]), votes.shape)
    gaps = _gap(votes, winner[:, None], classes)
    gaps = np.where(classes == winner[:, None], np.iinfo(np.int64).max, gaps)
    return winner, gaps.min(axis=1) // 2


def roe_certificate(scores) -> tuple[np.ndarray, np.ndarray]:
    """Run-off-election prediction and a certified radius for it (module docstring, routes 1-3).

    Returns:
        ``(prediction, radius)``, int64 ``[B]`` each: the prediction cannot change while at most
        ``radius`` base models are changed arbitrarily.
    """
    votes, pairwise = preference_counts(scores)
    n_inputs, n_classes = votes.shape
    rows = np.arange(n_inputs)
    winner, loser = _runoff(votes, pairwise)
    w, loser_col = winner[:, None], loser[:, None]
    classes = np.broadcast_to(np.arange(n_classes), votes.shape)
    margin = pairwise[rows[:, None], w, classes] - pairwise[rows[:, None], classes, w]  # [B, C]: w over c
    beat_w = _pairwise_changes(margin, classes < w)  # [B, C]

    needed = beat_w[rows, loser]  # route 1
    third = (classes != w) & (classes != loser_col)
    if n_classes > 2:
        overtake_loser = _changes_needed(_gap(votes, loser_col, classes) + 1, votes[rows, loser][:, None], 2)
        route2 = np.where(third, np.maximum(overtake_loser, beat_w), np.iinfo(np.int64).max)
        needed = np.minimum(needed, route2.min(axis=1))

        deficit = _gap(votes, w, classes) + 1  # [B, C]: vote swing c needs to overtake w
        d_a, d_b = np.maximum(deficit[:, :, None], 0), np.maximum(deficit[:, None, :], 0)
        own = votes[rows, winner][:, None, None]
        route3 = np.maximum(_changes_needed(np.maximum(d_a, d_b), own, 2), _changes_needed(d_a + d_b, own, 3))
        others = classes != w
        pair_ok = others[:, :, None] & others[:, None, :] & ~np.eye(n_classes, dtype=bool)
        needed = np.minimum(needed, np.where(pair_ok, route3, np.iinfo(np.int64).max).min(axis=(1, 2)))
    return winner, needed - 1


def certify(scores, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """``(prediction, radius)`` by :func:`dpa_certificate` (``rule="dpa"``) or :func:`roe_certificate` (``"roe"``)."""
    _check_rule(rule)
    return dpa_certificate(scores) if rule == "dpa" else roe_certificate(scores)


def exact_certificate(scores, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and the *exact* largest certified radius, by exhaustive search (small ensembles only).

    An ensemble's prediction depends only on how many models hold each of the ``C!`` rankings.
    Changing ``n`` models turns the count vector ``h`` into any ``h'`` with the same total and
    ``sum(max(h' - h, 0)) == n``; the exact radius is the smallest such ``n`` over all ``h'`` whose
    prediction differs, minus one (``k`` when no state changes the prediction).

    Args:
        scores: ``[B, k, C]``; the number of states ``C(k + C! - 1, k)`` must be at most
            :data:`MAX_EXACT_STATES` (e.g. ``C = 3`` with ``k <= 40``, ``C = 4`` with ``k <= 5``).
        rule: ``"dpa"`` or ``"roe"``.

    Returns:
        ``(prediction, radius)``, int64 ``[B]`` each.
    """
    _check_rule(rule)
    scores = _check_scores(scores)
    n_inputs, n_models, n_classes = scores.shape
    rankings = np.array(list(itertools.permutations(range(n_classes))), dtype=np.int64)  # [R, C]
    n_states = comb(n_models + len(rankings) - 1, n_models)
    if n_states > MAX_EXACT_STATES:
        raise ValueError(f"exact_certificate would enumerate {n_states} states for k={n_models}, C={n_classes}; "
                         f"at most {MAX_EXACT_STATES} are allowed")
    # each ranking as scores (C - position), so preference_counts recovers it exactly
    ranking_scores = np.empty_like(rankings)
    np.put_along_axis(ranking_scores, rankings, n_classes - np.arange(n_classes), axis=1)
    ranking_votes, ranking_pairwise = preference_counts(ranking_scores[:, None, :])  # [R, C], [R, C, C]
    states = np.zeros((n_states, len(rankings)), dtype=np.int64)
    for row, combo in enumerate(itertools.combinations_with_replacement(range(len(rankings)), n_models)):
        np.add.at(states[row], list(combo), 1)
    state_prediction = _predict_counts(states @ ranking_votes,
                                       np.einsum("sr,rac->sac", states, ranking_pairwise), rule)

    order = np.argsort(-scores, axis=-1, kind="stable")  # each model's ranking, matched to a row of `rankings`
    code = (order * n_classes ** np.arange(n_classes)[::-1]).sum(axis=-1)
    ranking_code = (rankings * n_classes ** np.arange(n_classes)[::-1]).sum(axis=-1)
    which = np.searchsorted(ranking_code, code)  # rankings are generated in lexicographic order
    histograms = np.zeros((n_inputs, len(rankings)), dtype=np.int64)
    np.add.at(histograms, (np.repeat(np.arange(n_inputs), n_models), which.ravel()), 1)
    prediction = _predict_counts(*preference_counts(scores), rule)
    radius = np.empty(n_inputs, dtype=np.int64)
    for i in range(n_inputs):
        changes = np.maximum(states - histograms[i], 0).sum(axis=1)
        flipped = changes[state_prediction != prediction[i]]
        radius[i] = flipped.min() - 1 if flipped.size else n_models
    return prediction, radius


def certified_accuracy(prediction, radius, labels, radii) -> np.ndarray:
    """Fraction of inputs predicted correctly with certified radius ``>= r``, for each ``r`` in ``radii``.

    Args:
        prediction, radius, labels: int arrays ``[B]``.
        radii: sequence of non-negative integers.

    Returns:
        float64 ``[len(radii)]`` in [0, 1].
    """
    prediction, radius, labels = (np.asarray(a) for a in (prediction, radius, labels))
    if not prediction.shape == radius.shape == labels.shape or prediction.ndim != 1:
        raise ValueError(f"prediction, radius and labels must be equal-length 1-D arrays, got shapes "
                         f"{prediction.shape}, {radius.shape}, {labels.shape}")
    radii = np.asarray(radii)
    if radii.ndim != 1 or (radii < 0).any():
        raise ValueError(f"radii must be a 1-D sequence of non-negative integers, got {radii!r}")
    correct = prediction == labels
    return np.array([(correct & (radius >= r)).mean() for r in radii])


# --- argument checks -----------------------------------------------------------------------------


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer >= 1, got {type(value).__name__}: {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _check_rule(rule) -> None:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def _check_scores(scores) -> np.ndarray:
    array = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"scores must be a real array [B, k, C], got dtype {array.dtype}")
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0 or array.shape[2] < 2:
        raise ValueError(f"scores must have shape [B >= 1, k >= 1, C >= 2], got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("scores must be finite (no NaN or Inf)")
    return array
