"""Synchronous references for decentralised strongly convex optimisation: DIGing and centralised AGD.

**DIGing** (gradient tracking; Nedić, Olshevsky & Shi, SIAM J. Optim. 2017, eq. (3)): with a symmetric,
doubly stochastic mixing matrix W supported on the graph and step α,

    x^{k+1} = W x^k − α y^k,        y^{k+1} = W y^k + ∇F(x^{k+1}) − ∇F(x^k),        y^0 = ∇F(x^0),

where row i of ∇F(x) is ∇f_i(x_i). One iteration costs n gradients (one per node) and one gossip round
over every edge: |E| edge activations, in each of which the two ends exchange (x, y), i.e. two messages
of 2d numbers.

**Centralised accelerated gradient descent** (Nesterov's constant-momentum scheme for μ-strongly
convex, L-smooth f̄ = (1/n) Σ_i f_i): x^{k+1} = v^k − ∇f̄(v^k)/L,  v^{k+1} = x^{k+1} + q (x^{k+1} − x^k)
with q = (√κ − 1)/(√κ + 1), κ = L/μ. Each iteration needs ∇f̄, i.e. n local gradients: the reference for
gradient counts, with no graph.

:func:`metropolis_weights` builds W from an edge list: W_ij = 1/(1 + max(deg_i, deg_j)) on edges,
W_ii = 1 − Σ_{j≠i} W_ij.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from commlab._checks import check_int, check_positive


class SyncTrace(NamedTuple):
    """Per-iteration record of a synchronous run (the start included): [K + 1] arrays of iterations,
    gradients (local gradient evaluations in all), communications (edge activations in all) and the
    relative distance (1/n) Σ_i ‖x_i − x*‖² / ‖x*‖²."""

    iterations: np.ndarray
    gradients: np.ndarray
    communications: np.ndarray
    distance: np.ndarray

    def first_below(self, eps: float, field: str = "communications") -> float:
        """``field`` at the first iteration whose distance is <= eps; inf if none is."""
        return first_below(self.distance, getattr(self, field), eps)


def first_below(distance: np.ndarray, counts: np.ndarray, eps: float) -> float:
    """``counts`` [C] at the first checkpoint whose ``distance`` [C] is <= eps; inf if none is."""
    hit = np.flatnonzero(distance <= eps)
    return float(counts[hit[0]]) if len(hit) else math.inf


def metropolis_weights(n: int, edges) -> np.ndarray:
    """[n, n] float64 Metropolis–Hastings mixing matrix of an undirected graph (symmetric, doubly stochastic)."""
    n = check_int("n", n, low=2)
    edges = [tuple(e) for e in edges]
    deg = np.zeros(n, dtype=np.int64)
    for k, (i, j) in enumerate(edges):
        if not (0 <= i < n and 0 <= j < n) or i == j:
            raise ValueError(f"edges[{k}] = {(i, j)} must join two distinct nodes in [0, {n})")
        deg[i] += 1
        deg[j] += 1
    W = np.zeros((n, n))
    for i, j in edges:
        W[i, j] = W[j, i] = 1.0 / (1 + max(deg[i], deg[j]))
    W[np.diag_indices(n)] = 1.0 - W.sum(axis=1)
    return W


def _relative(x: np.ndarray, x_star: np.ndarray, norm: float) -> float:
    return float(np.mean(np.sum((x - x_star) ** 2, axis=1)) / norm)


def _check_start(x0, x_star) -> tuple[np.ndarray, np.ndarray, float]:
    x0 = np.asarray(x0, dtype=np.float64)
    x_star = np.asarray(x_star, dtype=np.float64)
    if x0.ndim != 2 or x_star.shape != (x0.shape[1],):
        raise ValueError(f"x0 must be [n, d] and x_star [d], got {x0.shape} and {x_star.shape}")
    norm = float(x_star @ x_star)
    if not norm > 0:
        raise ValueError("x_star must be non-zero (the distance is relative to ‖x*‖²)")
    return x0, x_star, norm


def diging(grads: Callable[[np.ndarray], np.ndarray], x0, W, *, step: float, iterations: int, x_star,
           edges: int) -> SyncTrace:
    """Run DIGing for ``iterations`` rounds.

    Args:
        grads: ``grads(X [n, d]) -> [n, d]``, row i = ∇f_i(X[i]).
        x0: [n, d] start. W: [n, n] mixing matrix. step: α > 0.
        x_star: [d] minimiser for the distance. edges: |E|, edge activations per round.
    """
    x, x_star, norm = _check_start(x0, x_star)
    W = np.asarray(W, dtype=np.float64)
    n = x.shape[0]
    if W.shape != (n, n):
        raise ValueError(f"W must be [{n}, {n}], got {W.shape}")
    step = check_positive("step", step)
    iterations = check_int("iterations", iterations, low=1)
    edges = check_int("edges", edges, low=1)
    g = grads(x)
    y = g.copy()  # y^0 = ∇F(x^0)
    dist = [_relative(x, x_star, norm)]
    for _ in range(iterations):
        x = W @ x - step * y  # x^{k+1} = W x^k − α y^k
        g_new = grads(x)
        y = W @ y + g_new - g  # y^{k+1} = W y^k + ∇F(x^{k+1}) − ∇F(x^k)
        g = g_new
        with np.errstate(over="ignore", invalid="ignore"):
            dist.append(_relative(x, x_star, norm))
        if not math.isfinite(dist[-1]):  # a step too large for this problem: diverged
            dist[-1] = math.inf
            break
    k = np.arange(len(dist))
    return SyncTrace(k, n * k, edges * k, np.array(dist))


def accelerated_gd(grads: Callable[[np.ndarray], np.ndarray], x0, *, L: float, mu: float, iterations: int,
                   x_star) -> SyncTrace:
    """Centralised Nesterov AGD on f̄ = (1/n) Σ_i f_i from the mean of ``x0`` [n, d]; n gradients an
    iteration, no communication counted. ``grads`` as in :func:`diging`; L, μ those of f̄."""
    x0, x_star, norm = _check_start(x0, x_star)
    L, mu = check_positive("L", L), check_positive("mu", mu)
    if mu > L:
        raise ValueError(f"mu must be <= L, got mu = {mu} > L = {L}")
    iterations = check_int("iterations", iterations, low=1)
    n = x0.shape[0]
    q = (math.sqrt(L / mu) - 1) / (math.sqrt(L / mu) + 1)
    x = v = x0.mean(axis=0)
    dist = [_relative(x[None], x_star, norm)]
    for _ in range(iterations):
        x_new = v - grads(np.broadcast_to(v, x0.shape)).mean(axis=0) / L  # x^{k+1} = v^k − ∇f̄(v^k)/L
        v = x_new + q * (x_new - x)  # v^{k+1} = x^{k+1} + q (x^{k+1} − x^k)
        x = x_new
        dist.append(_relative(x[None], x_star, norm))
    k = np.arange(len(dist))
    return SyncTrace(k, n * k, np.zeros_like(k), np.array(dist))
