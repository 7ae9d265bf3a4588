"""Predictive diversity of an ensemble of classifiers and diversity-regularised joint training.

"Pathologies of Predictive Diversity in Deep Ensembles" (Abe, Buchanan, Pleiss, Cunningham; TMLR 2024)
trains the M members of an ensemble jointly on their average loss minus γ times a diversity term:
γ > 0 encourages diversity, γ < 0 discourages it, γ = 0 is an ordinary deep ensemble. For the
log-loss the natural diversity term is the **Jensen gap** between the members' losses and the
ensemble's, because of the exact decomposition (the ensemble predicts the mean probability
p̄ = (1/M) Σ_m p_m)::

    CE(p̄, y) = (1/M) Σ_m CE(p_m, y) − JG(y),   JG(y) = log p̄_y − (1/M) Σ_m log p_{m,y} ≥ 0

(Jensen's inequality for the concave log). With this term the objective
``(1/M) Σ_m CE_m − γ·JG = (1 − γ)·(1/M) Σ_m CE_m + γ·CE(p̄)`` runs from independent members (γ = 0)
to training the ensemble's own loss (γ = 1).

Logits are ``[M, B, C]`` (members, examples, classes) and labels ``[B]`` int64; every function works in
log-probabilities and returns nats. Two label-free disagreement measures are here too:
:func:`entropy_gap` (H(p̄) − (1/M) Σ_m H(p_m), the generalised Jensen–Shannon divergence of the
members) and :func:`probability_variance` (the mean over classes of the members' variance of p_{m,c}).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from commlab._checks import check_choice, check_real_number

MEASURES = ("jensen_gap", "entropy_gap", "probability_variance")
"""Diversity terms :func:`diversity_objective` can use."""


def _check(logits: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or not logits.dtype.is_floating_point:
        raise ValueError(f"logits must be a float tensor [M, B, C], got {getattr(logits, 'shape', type(logits))}")
    M, B, C = logits.shape
    if M < 1 or B < 1 or C < 2:
        raise ValueError(f"logits must have M >= 1 members, B >= 1 examples and C >= 2 classes, "
                         f"got {tuple(logits.shape)}")
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or tuple(labels.shape) != (B,):
            raise ValueError(f"labels must be an int64 tensor [{B}], got {getattr(labels, 'shape', type(labels))}")
        if labels.min() < 0 or labels.max() >= C:
            raise ValueError(f"labels must lie in [0, {C - 1}]")


def ensemble_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log p̄ ``[B, C]`` of the ensemble's mean probability, p̄ = (1/M) Σ_m softmax(logits_m)."""
    _check(logits)
    return torch.logsumexp(F.log_softmax(logits, dim=-1), dim=0) - math.log(logits.shape[0])  # log (1/M) Σ_m p_m


def member_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """−log p_{m,y} ``[M, B]``: each member's cross-entropy on each example (nats)."""
    _check(logits, labels)
    log_p = F.log_softmax(logits, dim=-1)
    return -log_p.gather(-1, labels.view(1, -1, 1).expand(logits.shape[0], -1, 1)).squeeze(-1)


def ensemble_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE(p̄, y) = −log p̄_y ``[B]``: the ensemble's cross-entropy on each example (nats)."""
    _check(logits, labels)
    return -ensemble_log_probs(logits).gather(-1, labels.view(-1, 1)).squeeze(-1)


def jensen_gap(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """JG ``[B]`` = (1/M) Σ_m CE(p_m, y) − CE(p̄, y) = log p̄_y − (1/M) Σ_m log p_{m,y} ≥ 0 (nats)."""
    return member_nll(logits, labels).mean(0) - ensemble_nll(logits, labels)  # (1/M) Σ_m CE_m − CE(p̄)


def entropy_gap(logits: torch.Tensor) -> torch.Tensor:
    """H(p̄) − (1/M) Σ_m H(p_m) ``[B]`` (nats, ≥ 0): the generalised Jensen–Shannon divergence of the members."""
    _check(logits)
    log_p = F.log_softmax(logits, dim=-1)
    log_bar = ensemble_log_probs(logits)
    h_bar = -(log_bar.exp() * log_bar).sum(-1)                 # H(p̄) = −Σ_c p̄_c log p̄_c
    h_members = -(log_p.exp() * log_p).sum(-1).mean(0)         # (1/M) Σ_m H(p_m)
    return h_bar - h_members


def probability_variance(logits: torch.Tensor) -> torch.Tensor:
    """(1/C) Σ_c (1/M) Σ_m (p_{m,c} − p̄_c)² ``[B]``: the members' variance of each class probability,
    averaged over the classes."""
    _check(logits)
    p = F.softmax(logits, dim=-1)
    return ((p - p.mean(0, keepdim=True)) ** 2).mean(0).mean(-1)


def diversity_objective(logits: torch.Tensor, labels: torch.Tensor, gamma: float,
                        measure: str = "jensen_gap") -> torch.Tensor:
    """The scalar training loss (1/M) Σ_m mean_b CE(p_m, y) − γ · mean_b D (nats).

    Args:
        logits: ``[M, B, C]`` members' logits on one shared batch.
        labels: ``[B]`` int64.
        gamma: γ: > 0 encourages diversity, < 0 discourages it. With ``measure="jensen_gap"``,
            γ = 1 is the ensemble's own cross-entropy and γ ≤ 1 is required: above 1 the members'
            average loss enters with a negative weight and the objective has no lower bound (a member
            that gives the label probability 0 makes it −∞).
        measure: D, one of :data:`MEASURES`.
    """
    measure = check_choice("measure", measure, MEASURES)
    gamma = check_real_number("gamma", gamma, high=1.0 if measure == "jensen_gap" else None)
    average_member = member_nll(logits, labels).mean()
    if measure == "jensen_gap":
        term = jensen_gap(logits, labels)
    elif measure == "entropy_gap":
        term = entropy_gap(logits)
    else:
        term = probability_variance(logits)
    return average_member - gamma * term.mean()                # (1/M) Σ_m CE_m − γ D


@torch.no_grad()
def decomposition(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Means over the examples (float64, nats) of the ensemble's CE, the members' average CE and the Jensen gap,
    plus the ensemble's and the members' average accuracy (fractions): ``ensemble_nll = member_nll − jensen_gap``.

    Keys: ``ensemble_nll``, ``member_nll``, ``jensen_gap``, ``entropy_gap``, ``ensemble_accuracy``,
    ``member_accuracy``.
    """
    logits = logits.double() if isinstance(logits, torch.Tensor) and logits.dtype.is_floating_point else logits
    members = member_nll(logits, labels)
    ensemble = ensemble_nll(logits, labels)
    return {
        "ensemble_nll": float(ensemble.mean()),
        "member_nll": float(members.mean()),
        "jensen_gap": float(jensen_gap(logits, labels).mean()),
        "entropy_gap": float(entropy_gap(logits).mean()),
        "ensemble_accuracy": float((ensemble_log_probs(logits).argmax(-1) == labels).double().mean()),
        "member_accuracy": float((logits.argmax(-1) == labels).double().mean()),
    }
