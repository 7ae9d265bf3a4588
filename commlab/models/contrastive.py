"""Contrastive utilities for paired representations: InfoNCE, Recall@K, and the global–local
cross-modal ensemble of CreamFL (Yu et al., ICLR 2023, "Multimodal Federated Learning via Contrastive
Representation Ensemble").

All functions take representations as given (rows of ``[N, d]`` tensors); callers that want cosine
similarities L2-normalise first. Row ``i`` of ``queries`` and row ``i`` of ``keys`` are a positive pair;
every other row of ``keys`` is a negative for query ``i``.

* :func:`info_nce` — ``L = -(1/N) Σ_i log softmax_j(q_i·k_j / τ)[i]`` (van den Oord et al. 2018);
* :func:`recall_at_k` — the share of queries whose own key is among the ``k`` most similar keys;
* :func:`contrastive_scores` — per member and sample, the log-probability the member's representation
  gives its own pair among the anchors: ``s_{c,j} = log softmax_k(R_c[j]·G[k] / τ)[j]``;
* :func:`ensemble_representations` — CreamFL's aggregation (commlab's reconstruction, the exact form is
  unverified): ``A[j] = Σ_c softmax_c(s_{c,j} / T) R_c[j]``, or the plain mean over members.

The contrastive temperature τ and the weighting temperature T are separate parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from commlab._checks import check_choice, check_int, check_positive

WEIGHTINGS = ("contrastive", "mean")


def _pair(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    for name, x in ((name_a, a), (name_b, b)):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 2:
            raise ValueError(f"{name} must be a floating tensor [N, d], got {tuple(getattr(x, 'shape', ()))}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or Inf")
    if a.shape != b.shape or len(a) == 0:
        raise ValueError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same non-empty "
                         "shape [N, d]")


def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE of paired rows: ``-(1/N) Σ_i log [exp(q_i·k_i/τ) / Σ_j exp(q_i·k_j/τ)]`` (nats, a scalar).

    Args:
        queries: ``[N, d]``; keys: ``[N, d]``, row i of each a positive pair, the other rows negatives.
        temperature: τ > 0.

    Returns:
        a 0-d tensor, differentiable with respect to both inputs.
    """
    _pair("queries", queries, "keys", keys)
    temperature = check_positive("temperature", temperature)
    logits = queries @ keys.T / temperature  # [N, N]: q_i·k_j / τ
    return F.cross_entropy(logits, torch.arange(len(queries), device=queries.device))


@torch.no_grad()
def recall_at_k(queries: torch.Tensor, gallery: torch.Tensor, k: int = 1) -> float:
    """Recall@K of retrieving row i of ``gallery`` for row i of ``queries`` by dot product.

    The rank of the true item is the number of gallery rows with a strictly larger score, so ties count
    in the query's favour; a query is a hit when that rank is below ``k``.

    Args:
        queries: ``[N, d]``; gallery: ``[N, d]`` (row i the match of query i).
        k: 1 <= k <= N.

    Returns:
        the share of hits in [0, 1].
    """
    _pair("queries", queries, "gallery", gallery)
    k = check_int("k", k, low=1, high=len(queries))
    scores = queries @ gallery.T  # [N, N]
    true = scores.diagonal()[:, None]
    rank = (scores > true).sum(dim=1)
    return float((rank < k).double().mean())


def _members(reps: torch.Tensor, anchor: torch.Tensor | None) -> None:
    if not isinstance(reps, torch.Tensor) or not reps.is_floating_point() or reps.dim() != 3:
        raise ValueError(f"reps must be a floating tensor [C, N, d], got {tuple(getattr(reps, 'shape', ()))}")
    if reps.shape[0] == 0:
        raise ValueError("reps must hold at least one member")
    _pair("reps[0]", reps[0], "anchor", reps[0] if anchor is None else anchor)
    if not torch.isfinite(reps).all():
        raise ValueError("reps contains NaN or Inf")


@torch.no_grad()
def contrastive_scores(reps: torch.Tensor, anchor: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Each member's contrastive score of each sample against the anchors, ``[C, N]`` (nats, <= 0).

    ``s_{c,j} = log softmax_k(R_c[j]·G[k] / τ)[j]``: how well member c's representation of sample j picks
    out j's anchor (in CreamFL, the global representation of the *other* modality) among all N anchors.

    Args:
        reps: ``[C, N, d]`` the members' representations of the same N samples.
        anchor: ``[N, d]``.
        temperature: τ > 0.
    """
    _members(reps, anchor)
    temperature = check_positive("temperature", temperature)
    logits = reps @ anchor.T / temperature  # [C, N, N]
    return torch.log_softmax(logits, dim=-1).diagonal(dim1=1, dim2=2)


@torch.no_grad()
def ensemble_representations(reps: torch.Tensor, anchor: torch.Tensor | None = None, *,
                             weighting: str = "contrastive", score_temperature: float = 0.1,
                             weight_temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The ensemble ``A`` ``[N, d]`` of C members' representations and the weights ``[C, N]`` it used.

    ``weighting="contrastive"``: ``A[j] = Σ_c w_{c,j} R_c[j]`` with ``w_{·,j} = softmax_c(s_{c,j} / T)`` and
    ``s`` from :func:`contrastive_scores` (score temperature τ, weight temperature T); ``"mean"``: w = 1/C.

    Args:
        reps: ``[C, N, d]``.
        anchor: ``[N, d]``, required for ``"contrastive"``, ignored by ``"mean"`` (pass None).
        weighting: ``"contrastive"`` or ``"mean"``.
        score_temperature: τ > 0; weight_temperature: T > 0.
    """
    weighting = check_choice("weighting", weighting, WEIGHTINGS)
    weight_temperature = check_positive("weight_temperature", weight_temperature)
    if weighting == "mean":
        if anchor is not None:
            raise ValueError("weighting='mean' uses no anchor; pass anchor=None")
        _members(reps, None)
        weights = torch.full(reps.shape[:2], 1.0 / reps.shape[0], dtype=reps.dtype, device=reps.device)
    else:
        if anchor is None:
            raise ValueError("weighting='contrastive' needs the anchor representations [N, d]")
        scores = contrastive_scores(reps, anchor, score_temperature)
        weights = torch.softmax(scores / weight_temperature, dim=0)  # softmax over members c
    return torch.einsum("cn,cnd->nd", weights, reps), weights
