"""Minimum-entropy coupling (MEC) and entropy-bounded information maximisation (EBIM) on small alphabets.

The MEC-B framework (Ebrahimi, Chen, Khisti, NeurIPS 2024) compresses a source X into a code T and
reconstructs Y with a fixed marginal p_Y over the Markov chain X → T → Y:

* **EBIM** (the encoder): maximise I(X; T) subject to H(T) ≤ R;
* **MEC** (the decoder): couple p_T and p_Y with the least joint entropy, i.e. the largest I(T; Y).

Everything is numpy float64 and in **bits**. A pmf is a 1-D array ``[n]`` that is non-negative and sums
to 1 (within 1e-9); a joint pmf is a 2-D array ``[n, m]``; an encoder is the joint ``p_XT [|X|, |T|]``
(rows sum to p_X) and a decoder the coupling ``p_TY [|T|, |Y|]``.

Functions:

* :func:`check_pmf`, :func:`entropy`, :func:`mutual_information`, :func:`compose` (the chain X → T → Y),
  :func:`map_accuracy` (of the MAP decoder);
* :func:`greedy_mec` (Kocaoglu et al. 2017), :func:`exact_mec` (vertex enumeration over the spanning trees
  of the bipartite support graph; exact for small alphabets);
* EBIM: :func:`set_partitions`, :func:`partition_entropies`, :func:`encoder_from_labels`,
  :func:`ebim_oracle` (exhaustive deterministic optimum), :func:`ebim_refined` (commlab's stochastic
  refinement of the oracle), :func:`ebim_naive_merge`, :func:`ebim_candidate_greedy` (commlab's
  best-final-merge greedy; **not** the paper's Algorithm 1, which is not implemented here);
* random instances: :func:`dirichlet_pmf`, :func:`zipf_pmf` (explicit ``numpy.random.Generator``).
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from commlab._checks import check_int, check_real_number

_TOL = 1e-9  # how far a pmf's sum may be from 1
MAX_SET_PARTITION_SIZE = 9  # Bell(9) = 21,147 set partitions
MAX_TREE_CANDIDATES = 200_000  # edge subsets exact_mec may examine


def check_pmf(name: str, p, *, ndim: int = 1) -> np.ndarray:
    """``p`` as a float64 array of ``ndim`` dimensions that is finite, non-negative and sums to 1 (1e-9)."""
    if isinstance(p, str | bytes) or p is None:
        raise TypeError(f"{name} must be an array of probabilities, got {type(p).__name__}")
    try:
        a = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be an array of real probabilities") from error
    if a.ndim != ndim or a.size == 0:
        raise ValueError(f"{name} must be a non-empty {ndim}-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    if np.any(a < 0):
        raise ValueError(f"{name} must be non-negative, got a minimum of {a.min()}")
    if abs(a.sum() - 1.0) > _TOL:
        raise ValueError(f"{name} must sum to 1 (within {_TOL}), got {a.sum()!r}")
    return a


def _h(a: np.ndarray, axis=None) -> np.ndarray:
    """Entropy in bits of non-negative masses along ``axis`` (zeros contribute 0), no checks."""
    safe = np.where(a > 0, a, 1.0)
    return -(a * np.log2(safe)).sum(axis=axis)


def entropy(p) -> float:
    """Shannon entropy in bits, H(p) = −Σ p log₂ p, of a pmf of any shape (a joint pmf gives the joint entropy)."""
    return float(_h(check_pmf("p", p, ndim=max(np.ndim(p), 1)).ravel()))


def mutual_information(joint) -> float:
    """I(A; B) = H(A) + H(B) − H(A, B) in bits of a joint pmf ``[|A|, |B|]``."""
    j = check_pmf("joint", joint, ndim=2)
    return float(_h(j.sum(axis=1)) + _h(j.sum(axis=0)) - _h(j.ravel()))


def compose(p_xt, p_ty) -> np.ndarray:
    """The joint p_XY ``[|X|, |Y|]`` of the chain X → T → Y: p(x, y) = Σ_t p(x, t) p(t, y) / p(t)."""
    p_xt = check_pmf("p_xt", p_xt, ndim=2)
    p_ty = check_pmf("p_ty", p_ty, ndim=2)
    if p_xt.shape[1] != p_ty.shape[0]:
        raise ValueError(f"p_xt has {p_xt.shape[1]} code values, p_ty {p_ty.shape[0]}")
    p_t = p_xt.sum(axis=0)
    if not np.allclose(p_t, p_ty.sum(axis=1), atol=1e-9):
        raise ValueError("the T marginals of p_xt and p_ty differ")
    decoder = np.divide(p_ty, p_t[:, None], out=np.zeros_like(p_ty), where=p_t[:, None] > 0)  # q(y | t)
    return p_xt @ decoder


def map_accuracy(joint) -> float:
    """Probability that the MAP guess of A from B is right, Σ_b max_a p(a, b), for a joint pmf ``[|A|, |B|]``."""
    return float(check_pmf("joint", joint, ndim=2).max(axis=0).sum())


# ---------------------------------------------------------------------------------------------- MEC


def greedy_mec(p, q) -> np.ndarray:
    """Greedy minimum-entropy coupling of two pmfs (Kocaoglu et al., AAAI 2017): ``[n], [m] -> [n, m]``.

    Repeatedly put m = min(max p_rem, max q_rem) on the cell of the two largest remaining masses and subtract
    it from both; each step empties at least one mass, so at most n + m − 1 cells are used. Its entropy is
    within 1 bit of the optimum (Cicalese et al. 2019; log₂(e)/e ≈ 0.53 bits, Compton et al. 2023).
    """
    p_rem = check_pmf("p", p).copy()
    q_rem = check_pmf("q", q).copy()
    joint = np.zeros((p_rem.size, q_rem.size))
    for _ in range(p_rem.size + q_rem.size - 1):
        i, j = int(np.argmax(p_rem)), int(np.argmax(q_rem))
        mass = min(p_rem[i], q_rem[j])
        if mass <= 0:
            break
        joint[i, j] += mass
        # the smaller of the two is emptied exactly, so no rounding dust is left behind
        if p_rem[i] <= q_rem[j]:
            q_rem[j] -= p_rem[i]
            p_rem[i] = 0.0
        else:
            p_rem[i] -= q_rem[j]
            q_rem[j] = 0.0
    return joint


def _root(parent: list[int], a: int) -> int:
    """Union-find root of node a, halving the path."""
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@functools.lru_cache(maxsize=16)
def _spanning_tree_maps(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """For every spanning tree of the complete bipartite graph K_{n,m}: its edges and the map from
    (p, q) to the unique flow on them. Returns ``edges [K, n+m−1]`` (cell index i·m + j) and
    ``maps [K, n+m−1, n+m−1]`` with flow = maps @ [p_0..p_{n−1}, q_0..q_{m−2}] (q_{m−1}'s equation is
    implied because both sum to 1). There are n^{m−1}·m^{n−1} trees."""
    k = n + m - 1
    trees, maps = [], []
    for cells in itertools.combinations(range(n * m), k):
        parent = list(range(n + m))  # union-find over the n row nodes and m column nodes
        acyclic = True
        for c in cells:
            a, b = _root(parent, c // m), _root(parent, n + c % m)
            if a == b:
                acyclic = False
                break
            parent[a] = b
        if not acyclic:
            continue
        incidence = np.zeros((k, k))  # row constraints i, then column constraints j < m − 1
        for e, c in enumerate(cells):
            i, j = divmod(c, m)
            incidence[i, e] = 1.0
            if j < m - 1:
                incidence[n + j, e] = 1.0
        trees.append(cells)
        maps.append(np.rint(np.linalg.inv(incidence)))  # totally unimodular: the inverse is integral
    return np.array(trees, dtype=np.int64), np.array(maps)


def exact_mec(p, q) -> np.ndarray:
    """Exact minimum-entropy coupling of two small pmfs: ``[n], [m] -> [n, m]``.

    Entropy is concave, so its minimum over the transportation polytope {J ≥ 0 : J1 = p, Jᵀ1 = q} is at a
    vertex; every vertex is the unique flow on a spanning tree of the bipartite graph rows–columns. All
    n^{m−1}·m^{n−1} trees are enumerated (4,096 for 4 × 4), each tree's flow solved, the non-negative ones kept
    and the one of least entropy returned. Raises ValueError when more than
    :data:`MAX_TREE_CANDIDATES` edge subsets would have to be examined (e.g. 5 × 5).
    """
    p = check_pmf("p", p)
    q = check_pmf("q", q)
    n, m = p.size, q.size
    if math.comb(n * m, n + m - 1) > MAX_TREE_CANDIDATES:
        raise ValueError(f"exact_mec enumerates spanning trees and is for small alphabets; {n} × {m} needs "
                         f"{math.comb(n * m, n + m - 1):,} candidate edge sets (at most {MAX_TREE_CANDIDATES:,})")
    edges, maps = _spanning_tree_maps(n, m)
    flows = maps @ np.concatenate([p, q[:-1]])  # [K, n + m − 1]
    feasible = np.all(flows >= -1e-12, axis=1)
    flows = np.clip(flows[feasible], 0.0, None)
    best = int(np.argmin(_h(flows, axis=1)))
    joint = np.zeros(n * m)
    joint[edges[feasible][best]] = flows[best]
    return joint.reshape(n, m)


# --------------------------------------------------------------------------------------------- EBIM


def _check_rate(rate) -> float:
    return check_real_number("rate", rate, low=0.0)


def set_partitions(n: int) -> np.ndarray:
    """All set partitions of {0, …, n−1} as restricted-growth label strings ``[Bell(n), n]`` (int64, read-only):
    label[0] = 0 and label[i] ≤ 1 + max(label[:i]). n ≤ :data:`MAX_SET_PARTITION_SIZE` (Bell(9) = 21,147)."""
    return _set_partitions(check_int("n", n, low=1, high=MAX_SET_PARTITION_SIZE))


@functools.lru_cache(maxsize=MAX_SET_PARTITION_SIZE)
def _set_partitions(n: int) -> np.ndarray:
    rows = [[0]]
    for _ in range(1, n):
        rows = [r + [c] for r in rows for c in range(max(r) + 2)]
    labels = np.array(rows, dtype=np.int64)
    labels.flags.writeable = False
    return labels


def partition_entropies(p) -> tuple[np.ndarray, np.ndarray]:
    """Every deterministic encoder T = f(X) of a pmf with |X| ≤ 9, by its cell masses' entropy.

    Returns ``(labels [B, n], entropies [B])`` sorted by entropy; for T = f(X), I(X; T) = H(T) (the staircase)."""
    p = check_pmf("p", p)
    labels = set_partitions(p.size)
    b, n = labels.shape
    cells = (np.arange(b)[:, None] * n + labels).ravel()
    masses = np.bincount(cells, weights=np.tile(p, b), minlength=b * n).reshape(b, n)  # cell masses per partition
    h = _h(masses, axis=1)
    order = np.argsort(h, kind="stable")
    return labels[order], h[order]


def encoder_from_labels(p, labels) -> np.ndarray:
    """The deterministic encoder p_XT ``[n, k]`` of T = labels[x] (labels in 0..k−1, empty codes dropped)."""
    p = check_pmf("p", p)
    labels = np.asarray(labels)
    if labels.shape != p.shape or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"labels must be {p.size} non-negative integers, got {labels!r}")
    _, codes = np.unique(labels, return_inverse=True)
    joint = np.zeros((p.size, codes.max() + 1))
    joint[np.arange(p.size), codes] = p
    return joint


def ebim_oracle(p, rate) -> np.ndarray:
    """Exhaustive deterministic EBIM: the partition of X whose cell masses have the largest entropy ≤ rate.

    ``[n], R -> p_XT [n, k]``; I(X; T) = H(T) ≤ min(R, H(X)). |X| ≤ 9 (set-partition enumeration)."""
    rate = _check_rate(rate)
    labels, h = partition_entropies(p)
    best = int(np.searchsorted(h, rate + 1e-12, side="right")) - 1  # h[0] = 0: the one-cell partition
    return encoder_from_labels(p, labels[best])


def ebim_refined(p, rate, *, iterations: int = 60) -> np.ndarray:
    """commlab's stochastic refinement of :func:`ebim_oracle` (not the paper's characterisation).

    From the deterministic optimum f (H(f) ≤ R), move a fraction α of one source value x's mass from its code
    to one other code t' (an existing one or a new one): T becomes stochastic and, for the (x, t') pairs where
    H(T) reaches R on α ∈ (0, 1], α is the smallest root of H(T)(α) = R (bisection, ``iterations`` steps).
    Returns the best encoder of these and f itself by I(X; T) = H(T) − H(T | X), where H(T | X) = p_x·h(α).
    ``[n], R -> p_XT [n, k]`` with k = |codes of f| + 1 (the last column may be empty).
    """
    p = check_pmf("p", p)
    rate = _check_rate(rate)
    iterations = check_int("iterations", iterations, low=1)
    base = ebim_oracle(p, rate)
    n, k = base.shape
    base = np.concatenate([base, np.zeros((n, 1))], axis=1)  # room for a new code
    codes = base.argmax(axis=1)
    cand_x, cand_t = np.array([(x, t) for x in range(n) for t in range(k + 1) if t != codes[x] and p[x] > 0],
                              dtype=np.int64).reshape(-1, 2).T
    if cand_x.size == 0:
        return base

    def moved(alpha: np.ndarray) -> np.ndarray:
        """Encoders [C, n, k+1] with fraction alpha [C] of p[x] moved from code f(x) to t'."""
        joints = np.repeat(base[None], cand_x.size, axis=0)
        c = np.arange(cand_x.size)
        joints[c, cand_x, codes[cand_x]] -= alpha * p[cand_x]
        joints[c, cand_x, cand_t] += alpha * p[cand_x]
        return joints

    h_t = lambda alpha: _h(moved(alpha).sum(axis=1), axis=1)  # noqa: E731  H(T)(α) per candidate
    # the first α on a grid where H(T) ≥ R brackets the smallest root
    grid = np.linspace(0.0, 1.0, 33)
    above = np.stack([h_t(np.full(cand_x.size, a)) for a in grid]) >= rate  # [33, C]
    reach = above.any(axis=0)
    if not reach.any():
        return base
    hi_idx = above.argmax(axis=0)
    lo, hi = grid[np.maximum(hi_idx - 1, 0)], grid[hi_idx]
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        up = h_t(mid) >= rate
        hi, lo = np.where(up, mid, hi), np.where(up, lo, mid)
    joints = moved(np.where(reach, lo, 0.0))  # lo: H(T) ≤ R, within 2^-iterations of the root
    info = np.array([mutual_information(j) for j in joints])
    best = int(np.argmax(info))
    if info[best] <= mutual_information(base):
        return base
    return joints[best]


def _merge_cells(masses: np.ndarray, a: int, b: int) -> np.ndarray:
    out = np.delete(masses, b)
    out[a if a < b else a - 1] = masses[a] + masses[b]
    return out


def _labels_after_merge(labels: np.ndarray, a: int, b: int) -> np.ndarray:
    """Cell labels 0..k−1 after merging cells a and b (cell b's label is removed)."""
    merged = np.where(labels == b, a, labels)
    return np.where(merged > b, merged - 1, merged)


def _naive_path(p: np.ndarray, rate: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """States (labels, cell masses) of naive merging, from T = X until H(T) ≤ rate (the last state)."""
    labels, masses = np.arange(p.size), p.copy()
    path = [(labels, masses)]
    while _h(masses) > rate + 1e-12 and masses.size > 1:
        a, b = np.argsort(masses, kind="stable")[:2]  # the two smallest cells
        labels, masses = _labels_after_merge(labels, a, b), _merge_cells(masses, a, b)
        path.append((labels, masses))
    return path


def ebim_naive_merge(p, rate) -> np.ndarray:
    """Naive (Huffman-like) deterministic EBIM: from T = X, merge the two smallest cells until H(T) ≤ rate.

    A baseline known to be far from optimal. ``[n], R -> p_XT [n, k]``."""
    p = check_pmf("p", p)
    labels, _ = _naive_path(p, _check_rate(rate))[-1]
    return encoder_from_labels(p, labels)


def ebim_candidate_greedy(p, rate) -> np.ndarray:
    """commlab's best-final-merge greedy for deterministic EBIM (**not** the paper's Algorithm 1).

    Follow naive merging (:func:`ebim_naive_merge`) while H(T) > R; from every state on that path consider
    every single merge of two cells, and return the one with the largest H(T) ≤ R (the naive result is one
    of them). Merging a larger pair loses more entropy, so from an earlier state it can land closer to R
    from below than the naive merge does. ``[n], R -> p_XT [n, k]``.
    """
    p = check_pmf("p", p)
    rate = _check_rate(rate)
    path = _naive_path(p, rate)
    best_labels, best_h = path[-1][0], _h(path[-1][1])
    for labels, masses in path[:-1]:  # the states with H(T) > R
        for a, b in itertools.combinations(range(masses.size), 2):
            h = _h(_merge_cells(masses, a, b))
            if best_h < h <= rate + 1e-12:
                best_labels, best_h = _labels_after_merge(labels, a, b), h
    return encoder_from_labels(p, best_labels)


# ----------------------------------------------------------------------------------- random instances


def dirichlet_pmf(n: int, rng: np.random.Generator, concentration: float = 1.0) -> np.ndarray:
    """A pmf ``[n]`` drawn from the symmetric Dirichlet(concentration) with the given generator."""
    n = check_int("n", n, low=1)
    concentration = check_real_number("concentration", concentration, low=0.0, low_open=True)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    p = rng.dirichlet(np.full(n, concentration))
    return p / p.sum()


def zipf_pmf(n: int, exponent: float = 1.2, rng: np.random.Generator | None = None) -> np.ndarray:
    """The Zipf pmf p_k ∝ k^(−exponent), k = 1..n, in a random order when ``rng`` is given (else descending)."""
    n = check_int("n", n, low=1)
    exponent = check_real_number("exponent", exponent, low=0.0)
    p = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    p /= p.sum()
    if rng is not None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        p = p[rng.permutation(n)]
    return p
