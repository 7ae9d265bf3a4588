"""Paths of elephant flows through a two-tier leaf–spine fabric: ECMP hashing against planned assignment
(C4P-like), their link loads, and the flows' completion on the discrete-event engine.

**Fabric.** L leaves and S spines; every leaf has one uplink to every spine and every spine one downlink to
every leaf (full bisection, each of ``fabric_link``'s bandwidth). Every leaf hosts ``nics_per_leaf`` NICs;
NIC r sits on leaf r // nics_per_leaf. A flow (src NIC, dst NIC) between two leaves crosses
``tx[src] → up[leaf(src)][k] → down[k][leaf(dst)] → rx[dst]`` through the spine k its path names; a flow
inside one leaf crosses only ``tx[src] → rx[dst]`` (path −1).

**ECMP** (:func:`ecmp_paths`) picks k = hash(seed, src, dst, flow number) mod S with a version-stable hash
(BLAKE2b), uniform and independent across flows. **Planning** (:func:`planned_paths`) assigns flows to
spines to minimise the maximum link load: greedy longest-first (each flow, largest first, to the spine
whose busier link is least loaded), or exactly by an integer programme (``exact=True``, scipy's HiGHS):
minimise t subject to Σ_k x[f, k] = 1 and Σ_f size_f · x[f, k] ≤ t on every up- and downlink.

**Completion** (:func:`step_seconds`): all flows start at once on a :class:`LeafSpineNetwork` (the engine's
:class:`~commlab.systems.events.Network` with these routes) and share the wires max-min fairly. With equal
flows of n bits and NIC links no slower than the fabric, the flows on the most loaded link get B/k_max each
until they end together, so the step lasts ℓ_nic + ℓ_fabric + k_max·n/B: collective time ∝ max link load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from commlab._checks import check_int, check_nonnegative, check_seed
from commlab.comm.link import Link
from commlab.systems.events import Network, Wire


def ring_flows(leaves: int, nics_per_leaf: int) -> np.ndarray:
    """``[L·G, 2]`` (src NIC, dst NIC) of one ring step across leaves: NIC g of leaf i sends to NIC g of leaf
    i + 1 (mod L), G = ``nics_per_leaf`` concurrent rings (one per NIC), so G flows per leaf pair."""
    L, G = check_int("leaves", leaves, low=2), check_int("nics_per_leaf", nics_per_leaf, low=1)
    src = np.arange(L * G)
    return np.stack([src, ((src // G + 1) % L) * G + src % G], axis=1)


def ecmp_paths(flows, spines: int, seed: int, *, nics_per_leaf: int, failed: Sequence[int] = ()) -> np.ndarray:
    """``[F]`` spine of each flow by ECMP: BLAKE2b of (seed, src, dst, flow number) modulo the spines
    that are up (``failed`` ones removed); −1 for flows that stay inside a leaf."""
    flows, up = _flows(flows), _spines_up(spines, failed)
    seed, G = check_seed(seed), check_int("nics_per_leaf", nics_per_leaf, low=1)
    paths = np.full(len(flows), -1)
    for f, (src, dst) in enumerate(flows):
        if src // G != dst // G:
            digest = hashlib.blake2b(f"{seed}|{src}|{dst}|{f}".encode(), digest_size=8).digest()
            paths[f] = up[int.from_bytes(digest, "little") % len(up)]
    return paths


def planned_paths(flows, spines: int, *, nics_per_leaf: int, sizes=None, failed: Sequence[int] = (),
                  exact: bool = False) -> np.ndarray:
    """``[F]`` spine of each flow minimising the maximum link load (greedy longest-first, or an exact integer
    programme with ``exact=True``; see the module docstring); −1 for flows inside a leaf. ``sizes``: ``[F]``
    (default 1 each)."""
    flows, up = _flows(flows), _spines_up(spines, failed)
    G = check_int("nics_per_leaf", nics_per_leaf, low=1)
    sizes = _sizes(sizes, len(flows))
    leaves = int(flows.max()) // G + 1 if len(flows) else 1
    paths = np.full(len(flows), -1)
    crossing = [f for f in range(len(flows)) if flows[f, 0] // G != flows[f, 1] // G]
    if exact and crossing:
        return _exact(flows, sizes, up, G, leaves, crossing, paths)
    upload, download = np.zeros((leaves, spines)), np.zeros((spines, leaves))
    for f in sorted(crossing, key=lambda f: -sizes[f]):  # stable: equal sizes keep their order
        a, b = flows[f] // G
        busier = np.maximum(upload[a, up], download[up, b])
        k = up[int(np.argmin(busier))]
        paths[f] = k
        upload[a, k] += sizes[f]
        download[k, b] += sizes[f]
    return paths


def link_loads(flows, paths, spines: int, *, nics_per_leaf: int, sizes=None) -> tuple[np.ndarray, np.ndarray]:
    """``(up [L, S], down [S, L])``: total size of the flows on every leaf uplink and spine downlink."""
    flows, G = _flows(flows), check_int("nics_per_leaf", nics_per_leaf, low=1)
    S, paths, sizes = check_int("spines", spines, low=1), np.asarray(paths), _sizes(sizes, len(flows))
    if paths.shape != (len(flows),) or ((paths < -1) | (paths >= S)).any():
        raise ValueError(f"paths must be [{len(flows)}] spines in [0, {S}) (or -1 inside a leaf), got {paths!r}")
    leaves = int(flows.max()) // G + 1 if len(flows) else 1
    upload, download = np.zeros((leaves, S)), np.zeros((S, leaves))
    for (src, dst), k, size in zip(flows, paths, sizes, strict=True):
        if src // G != dst // G:
            if k < 0:
                raise ValueError(f"flow {src} -> {dst} crosses leaves but has no spine (path -1)")
            upload[src // G, k] += size
            download[k, dst // G] += size
    return upload, download


def max_link_load(flows, paths, spines: int, *, nics_per_leaf: int, sizes=None) -> float:
    """The largest load over all fabric links (:func:`link_loads`), in flows (or in ``sizes``' unit)."""
    upload, download = link_loads(flows, paths, spines, nics_per_leaf=nics_per_leaf, sizes=sizes)
    return float(max(upload.max(initial=0.0), download.max(initial=0.0)))


class LeafSpineNetwork(Network):
    """The engine's :class:`~commlab.systems.events.Network` of ``leaves`` × ``nics_per_leaf`` NICs (ranks)
    joined by a leaf–spine fabric; :meth:`route` sends a flow through the spine ``paths[(src, dst)]``.

    Args:
        leaves, spines, nics_per_leaf: L, S, G.
        nic_link: every NIC's :class:`~commlab.comm.link.Link` to its leaf (bit/s, s).
        fabric_link: every leaf–spine link (each direction a :class:`Wire` of its bandwidth and half its
            latency, so a crossing flow waits ℓ_nic + ℓ_fabric).
        paths: ``{(src, dst): spine}`` for every pair of NICs on different leaves that sends.
    """

    def __init__(self, leaves: int, spines: int, nics_per_leaf: int, nic_link: Link, fabric_link: Link,
                 paths: dict[tuple[int, int], int]):
        L, S = check_int("leaves", leaves, low=1), check_int("spines", spines, low=1)
        self.nics_per_leaf = check_int("nics_per_leaf", nics_per_leaf, low=1)
        super().__init__(L * self.nics_per_leaf, nic_link)
        half = fabric_link.latency / 2
        self.up = [[Wire(f"up{a}.{k}", fabric_link.bandwidth, half) for k in range(S)] for a in range(L)]
        self.down = [[Wire(f"down{k}.{b}", fabric_link.bandwidth, half) for b in range(L)] for k in range(S)]
        for (src, dst), k in paths.items():
            self._rank("src", src)
            self._rank("dst", dst)
            check_int("spine", k, low=0, high=S - 1)
        self.paths = dict(paths)

    def route(self, src: int, dst: int) -> list[Wire]:
        """``[tx[src], rx[dst]]`` inside a leaf, else ``[tx[src], up[a][k], down[k][b], rx[dst]]``."""
        a, b = src // self.nics_per_leaf, dst // self.nics_per_leaf
        if a == b:
            return [self.tx[src], self.rx[dst]]
        if (src, dst) not in self.paths:
            raise ValueError(f"no spine assigned to the flow {src} -> {dst} (leaf {a} -> leaf {b})")
        k = self.paths[(src, dst)]
        return [self.tx[src], self.up[a][k], self.down[k][b], self.rx[dst]]


def step_seconds(flows, paths, bits: float, *, leaves: int, spines: int, nics_per_leaf: int, nic_link: Link,
                 fabric_link: Link) -> float:
    """Seconds until the last of ``flows`` (``[F, 2]`` NIC pairs, each sending ``bits``, all starting at 0)
    has arrived on a :class:`LeafSpineNetwork` with ``paths`` (``[F]`` spines)."""
    flows, bits = _flows(flows), check_nonnegative("bits", bits)
    paths = np.asarray(paths)
    link_loads(flows, paths, spines, nics_per_leaf=nics_per_leaf)  # checks the paths
    if len({(int(s), int(d)) for s, d in flows}) != len(flows):
        raise ValueError("flows must be distinct (src, dst) pairs")
    net = LeafSpineNetwork(leaves, spines, nics_per_leaf, nic_link, fabric_link,
                           {(int(s), int(d)): int(k) for (s, d), k in zip(flows, paths, strict=True) if k >= 0})
    for src, dst in flows:
        net.start(net.send(int(src), int(dst), bits))
        net.start(net.recv(int(dst), int(src)))
    net.run()
    return float(net.now)


def _exact(flows, sizes, up, G, leaves, crossing, paths) -> np.ndarray:
    from scipy.optimize import Bounds, LinearConstraint, milp

    F, K = len(crossing), len(up)
    n = F * K + 1  # x[f, k] for crossing flows f and spines up[k], then t
    rows, lower, upper = [], [], []
    for i in range(F):  # every flow takes exactly one spine
        row = np.zeros(n)
        row[i * K:(i + 1) * K] = 1
        rows.append(row), lower.append(1), upper.append(1)
    for side in (0, 1):  # every up- and downlink: load - t <= 0
        for leaf in range(leaves):
            for j in range(K):
                row = np.zeros(n)
                for i, f in enumerate(crossing):
                    if flows[f, side] // G == leaf:
                        row[i * K + j] = sizes[f]
                if row.any():
                    row[-1] = -1
                    rows.append(row), lower.append(-np.inf), upper.append(0)
    cost = np.zeros(n)
    cost[-1] = 1
    integrality = np.ones(n)
    integrality[-1] = 0
    result = milp(cost, constraints=LinearConstraint(np.array(rows), lower, upper), integrality=integrality,
                  bounds=Bounds(np.zeros(n), np.r_[np.ones(n - 1), np.inf]))
    if not result.success:
        raise RuntimeError(f"the integer programme failed: {result.message}")
    choice = np.asarray(result.x[:-1]).reshape(F, K).argmax(axis=1)
    for i, f in enumerate(crossing):
        paths[f] = up[choice[i]]
    return paths


def _flows(flows) -> np.ndarray:
    flows = np.asarray(flows)
    if flows.ndim != 2 or flows.shape[1] != 2 or not np.issubdtype(flows.dtype, np.integer) or (flows < 0).any():
        raise ValueError(f"flows must be an [F, 2] integer array of (src NIC, dst NIC) >= 0, got {flows!r}")
    if (flows[:, 0] == flows[:, 1]).any():
        raise ValueError("a flow's src and dst NIC must differ")
    return flows


def _spines_up(spines: int, failed: Sequence[int]) -> np.ndarray:
    S = check_int("spines", spines, low=1)
    failed = {check_int("failed spine", k, low=0, high=S - 1) for k in failed}
    up = np.array([k for k in range(S) if k not in failed])
    if not len(up):
        raise ValueError(f"all {S} spines have failed; no path is left")
    return up


def _sizes(sizes, count: int) -> np.ndarray:
    sizes = np.ones(count) if sizes is None else np.asarray(sizes, dtype=np.float64)
    if sizes.shape != (count,) or not np.isfinite(sizes).all() or (sizes < 0).any():
        raise ValueError(f"sizes must be [{count}] finite non-negative numbers, got {sizes!r}")
    return sizes
