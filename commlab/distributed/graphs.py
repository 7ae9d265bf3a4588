"""Communication graphs as undirected edge lists: the families of DADAO's simulations.

A graph on n nodes is a list of pairs ``(i, j)`` with ``0 <= i < j < n``, each undirected edge once,
the form :class:`~commlab.distributed.clocks.PoissonClocks` and
:func:`~commlab.distributed.gossip.rate_matrix` take. The families of Nabli & Oyallon (ICML 2023,
arXiv:2208.00779, Section 5) are

* :func:`complete_graph`, :func:`cycle_graph`, :func:`path_graph`, :func:`star_graph`;
* :func:`grid_graph` (the most nearly square r × c 2-D grid with r·c = n);
* :func:`barbell_graph` (two cliques of n/2 nodes joined by one edge: n must be even);
* :func:`random_geometric_graph`: n points uniform in [0, 1]², an edge between points closer than
  ``radius``; if that graph is disconnected, one edge joins a random node of each connected component
  to a random node of the next (components in order of their smallest node), so it always is connected;
* :func:`time_varying_graphs`: a list of K such random connected graphs, visited in turn.

:func:`uniform_edge_constants` gives the graph constants of uniform edge sampling (the brief's
L_norm = Laplacian/|E|) through :func:`~commlab.distributed.gossip.graph_constants`.
"""

from __future__ import annotations

import math

import numpy as np

from commlab._checks import check_int, check_positive
from commlab.distributed.gossip import GraphConstants, graph_constants, rate_matrix

Edges = list[tuple[int, int]]
FAMILIES = ("complete", "cycle", "path", "star", "grid", "barbell", "random_geometric")


def complete_graph(n: int) -> Edges:
    """All n(n − 1)/2 pairs."""
    n = check_int("n", n, low=2)
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def cycle_graph(n: int) -> Edges:
    """The ring 0 − 1 − … − (n − 1) − 0 (n edges; n >= 3)."""
    n = check_int("n", n, low=3)
    return sorted((min(i, (i + 1) % n), max(i, (i + 1) % n)) for i in range(n))


def path_graph(n: int) -> Edges:
    """The line 0 − 1 − … − (n − 1) (n − 1 edges)."""
    n = check_int("n", n, low=2)
    return [(i, i + 1) for i in range(n - 1)]


def star_graph(n: int) -> Edges:
    """Node 0 joined to every other node (n − 1 edges)."""
    n = check_int("n", n, low=2)
    return [(0, j) for j in range(1, n)]


def grid_graph(n: int) -> Edges:
    """The r × c 2-D grid with r·c = n and r the largest divisor of n with r <= √n (10 → 2 × 5,
    16 → 4 × 4; n >= 4 and not prime); node a·c + b sits at row a, column b."""
    n = check_int("n", n, low=4)
    r = max(k for k in range(1, math.isqrt(n) + 1) if n % k == 0)
    if r == 1:
        raise ValueError(f"a 2-D grid needs n = r·c with r, c >= 2, but n = {n} is prime")
    c = n // r
    edges = [(a * c + b, a * c + b + 1) for a in range(r) for b in range(c - 1)]
    edges += [(a * c + b, (a + 1) * c + b) for a in range(r - 1) for b in range(c)]
    return sorted(edges)


def barbell_graph(n: int) -> Edges:
    """Two cliques on nodes 0…n/2 − 1 and n/2…n − 1 joined by the edge (n/2 − 1, n/2) (n even, >= 4)."""
    n = check_int("n", n, low=4)
    if n % 2:
        raise ValueError(f"a barbell graph needs an even number of nodes, got n = {n}")
    h = n // 2
    left = [(i, j) for i in range(h) for j in range(i + 1, h)]
    right = [(i + h, j + h) for i, j in left]
    return sorted(left + right + [(h - 1, h)])


def _components(n: int, edges: Edges) -> list[list[int]]:
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in edges:
        parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=min)


def is_connected(n: int, edges: Edges) -> bool:
    """Whether the graph on n nodes with these edges is connected."""
    return len(_components(check_int("n", n, low=1), list(edges))) == 1


def random_geometric_graph(n: int, radius: float, *, rng: np.random.Generator) -> Edges:
    """A connected random geometric graph: points U[0, 1]², edges between points at distance < ``radius``,
    then one bridging edge from a random node of each component to a random node of the next."""
    n = check_int("n", n, low=2)
    radius = check_positive("radius", radius)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    points = rng.random((n, 2))
    dist = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    edges = [(i, j) for i in range(n) for j in range(i + 1, n) if dist[i, j] < radius]
    parts = _components(n, edges)
    for a, b in zip(parts[:-1], parts[1:], strict=True):
        i, j = int(rng.choice(a)), int(rng.choice(b))
        edges.append((min(i, j), max(i, j)))
    return sorted(edges)


def time_varying_graphs(n: int, count: int, radius: float, *, rng: np.random.Generator) -> list[Edges]:
    """``count`` independent connected random geometric graphs (the time-varying list of the paper)."""
    count = check_int("count", count, low=1)
    return [random_geometric_graph(n, radius, rng=rng) for _ in range(count)]


def family_graph(family: str, n: int, *, radius: float = 0.4, rng: np.random.Generator | None = None) -> Edges:
    """One graph of a named family (``FAMILIES``); ``random_geometric`` needs ``rng``."""
    builders = {"complete": complete_graph, "cycle": cycle_graph, "path": path_graph, "star": star_graph,
                "grid": grid_graph, "barbell": barbell_graph}
    if family == "random_geometric":
        if rng is None:
            raise ValueError("a random geometric graph needs rng, a numpy.random.Generator")
        return random_geometric_graph(n, radius, rng=rng)
    if family not in builders:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return builders[family](n)


def uniform_edge_constants(n: int, edges: Edges) -> GraphConstants:
    """Constants of the Laplacian weighted by uniform edge probabilities 1/|E| (the brief's
    L_norm = L/|E|): χ₁ = 1/λ₂(L_norm), χ₂ = max over edges ½ (e_i − e_j)ᵀ L_norm⁺ (e_i − e_j).
    At a total gossip rate λ_mix every rate is λ_mix/|E|, so both constants divide by λ_mix."""
    edges = list(edges)
    if not edges:
        raise ValueError("edges must not be empty")
    return graph_constants(rate_matrix(n, edges, 1.0 / len(edges)))
