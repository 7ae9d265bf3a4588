"""Expert placement for mixture-of-experts inference: round-robin and inter-layer-affinity-aware.

Following ExFlow (Yao et al., 2024, "Exploiting Inter-Layer Expert Affinity for Accelerating
Mixture-of-Experts Model Inference"), a token's hidden state stays on the device of the expert that
processed it at layer ``l`` (context-coherent expert parallelism: one all-to-all per layer), and it
crosses devices only when its layer-``l + 1`` expert lives elsewhere. A placement ``x[l, e]`` gives the
device of expert ``e`` of layer ``l``; with the transition counts ``C_l[e, e']`` (tokens going from
expert ``e`` at layer ``l`` to ``e'`` at ``l + 1``) the cross-device traffic is

    hops(x) = sum_l sum_{e, e'} C_l[e, e'] * [x[l, e] != x[l + 1, e']],             (1)

minimised subject to the capacity constraint ``#{e : x[l, e] = g} <= cap_g`` for every layer and
device (balance: ``cap_g = E / G``; without it everything collapses onto one device).

* :func:`round_robin_placement`: the affinity-blind baseline, the same placement in every layer.
* :func:`affinity_placement`: sequential layer-pair assignment. Layer 0 is fixed (round-robin by
  default); for each ``l`` the affinity ``A[e', g] = sum_{e : x[l, e] = g} C_l[e, e']`` is maximised by a
  linear assignment of the layer-``l + 1`` experts to device slots (``cap_g`` slots per device).
* :func:`milp_placement`: the integer programme (1) solved by HiGHS with a time limit (validation on
  small instances).
* :func:`cross_device_hops`, :func:`alltoall_traffic`: the resulting communication; its time is
  :meth:`Link.alltoall_seconds <commlab.comm.link.Link.alltoall_seconds>` of the traffic in bits.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linear_sum_assignment, milp
from scipy.sparse import coo_array


def transition_counts(trace, n_experts: int) -> np.ndarray:
    """Tokens moving between experts of consecutive layers.

    Args:
        trace: int ``[T, L]`` routing trace (expert of each token at each layer), values in ``0..E-1``.
        n_experts: E >= 1.

    Returns:
        int64 ``[L - 1, E, E]``: ``[l, e, e']`` = tokens at expert ``e`` of layer ``l`` and ``e'`` of layer ``l + 1``.
    """
    n_experts = _check_positive_int("n_experts", n_experts)
    trace = np.asarray(trace)
    if trace.dtype.kind not in "iu" or trace.ndim != 2 or trace.shape[1] < 2:
        raise ValueError(f"trace must be an integer array [T, L >= 2], got dtype {trace.dtype}, shape {trace.shape}")
    if trace.size and (trace.min() < 0 or trace.max() >= n_experts):
        raise ValueError(f"trace values must be experts in 0..{n_experts - 1}")
    n_layers = trace.shape[1]
    flat = np.arange(n_layers - 1) * n_experts**2 + trace[:, :-1] * n_experts + trace[:, 1:]
    counts = np.bincount(flat.ravel(), minlength=(n_layers - 1) * n_experts**2)
    return counts.reshape(n_layers - 1, n_experts, n_experts).astype(np.int64)


def device_capacity(n_experts: int, n_devices: int, capacity=None) -> np.ndarray:
    """Experts per layer that each device may hold, int64 ``[G]``.

    Args:
        n_experts: E >= 1.
        n_devices: G >= 1.
        capacity: None (balanced: ``E / G`` each; G must divide E), an int for every device, or a
            sequence of G non-negative ints. The total must be at least E.
    """
    n_experts = _check_positive_int("n_experts", n_experts)
    n_devices = _check_positive_int("n_devices", n_devices)
    if capacity is None:
        if n_experts % n_devices:
            raise ValueError(f"n_devices ({n_devices}) must divide n_experts ({n_experts}) for the balanced "
                             f"default capacity; pass capacity= explicitly")
        return np.full(n_devices, n_experts // n_devices, dtype=np.int64)
    caps = np.broadcast_to(np.asarray(capacity), (n_devices,)) if np.ndim(capacity) == 0 else np.asarray(capacity)
    if caps.dtype.kind not in "iu" or caps.shape != (n_devices,) or (caps < 0).any():
        raise ValueError(f"capacity must be a non-negative int or {n_devices} non-negative ints, got {capacity!r}")
    if caps.sum() < n_experts:
        raise ValueError(f"capacity must hold all {n_experts} experts, total is {int(caps.sum())}")
    return caps.astype(np.int64)


def round_robin_placement(n_layers: int, n_experts: int, n_devices: int, capacity=None) -> np.ndarray:
    """The affinity-blind baseline: expert ``e`` on device ``e mod G`` in every layer.

    With unequal capacities, experts are dealt to the devices in turn, skipping full devices.

    Returns:
        int64 ``[L, E]`` device of each expert of each layer.
    """
    n_layers = _check_positive_int("n_layers", n_layers)
    caps = device_capacity(n_experts, n_devices, capacity)
    free, devices, device = caps.copy(), [], 0
    for _ in range(n_experts):
        while free[device] == 0:
            device = (device + 1) % n_devices
        devices.append(device)
        free[device] -= 1
        device = (device + 1) % n_devices
    return np.tile(np.array(devices, dtype=np.int64), (n_layers, 1))


def affinity_placement(counts, n_devices: int, capacity=None, first=None) -> np.ndarray:
    """Sequential layer-pair assignment that keeps frequent transitions on one device.

    Args:
        counts: ``[L - 1, E, E]`` transition counts (:func:`transition_counts`).
        n_devices: G >= 1.
        capacity: see :func:`device_capacity`.
        first: int ``[E]`` placement of layer 0; default the round-robin one.

    Returns:
        int64 ``[L, E]``; each layer uses at most ``capacity[g]`` slots of device ``g``.
    """
    counts = _check_counts(counts)
    n_experts = counts.shape[1]
    caps = device_capacity(n_experts, n_devices, capacity)
    slot_device = np.repeat(np.arange(n_devices), caps)
    placement = np.empty((counts.shape[0] + 1, n_experts), dtype=np.int64)
    placement[0] = round_robin_placement(1, n_experts, n_devices, capacity)[0] if first is None else first
    _check_placement(placement[:1], n_devices, caps)
    for layer, count in enumerate(counts):
        onehot = np.eye(n_devices)[placement[layer]]  # [E, G]
        affinity = count.T @ onehot  # [E', G]: tokens arriving at e' from experts on device g
        experts, slots = linear_sum_assignment(affinity[:, slot_device], maximize=True)
        placement[layer + 1, experts] = slot_device[slots]
    return placement


def milp_placement(counts, n_devices: int, capacity=None, first=None, *, time_limit: float = 10.0) -> np.ndarray:
    """The integer programme (1), solved by HiGHS (``scipy.optimize.milp``) within ``time_limit`` seconds.

    Variables: binary ``x[l, e, g]`` (layer 0 fixed to ``first`` to break the device symmetry) and
    ``z[l, e, e'] >= x[l, e, g] - x[l + 1, e', g]`` for every device g and every transition with
    ``C_l[e, e'] > 0``, so ``z = 1`` exactly when the pair is split. Minimises ``sum C_l[e, e'] z[l, e, e']``.

    Returns:
        int64 ``[L, E]``, the best placement found (optimal only if the solver finished in time).

    Raises:
        RuntimeError: the solver found no feasible placement within the time limit.
    """
    counts = _check_counts(counts)
    if not time_limit > 0:
        raise ValueError(f"time_limit must be > 0 seconds, got {time_limit}")
    n_pairs, n_experts = counts.shape[0], counts.shape[1]
    n_layers = n_pairs + 1
    caps = device_capacity(n_experts, n_devices, capacity)
    start = round_robin_placement(1, n_experts, n_devices, capacity)[0] if first is None else np.asarray(first)
    _check_placement(start[None], n_devices, caps)
    n_x = n_layers * n_experts * n_devices
    layer, src, dst = np.nonzero(counts)
    n_z = len(layer)

    def x_index(lay, expert, device):
        return (lay * n_experts + expert) * n_devices + device

    rows, cols, values, lower, upper = [], [], [], [], []

    def add_row(columns, coefficients, low, high):
        rows.extend([len(lower)] * len(columns))
        cols.extend(columns)
        values.extend(coefficients)
        lower.append(low)
        upper.append(high)

    for lay in range(n_layers):
        for expert in range(n_experts):
            add_row([x_index(lay, expert, g) for g in range(n_devices)], [1.0] * n_devices, 1.0, 1.0)
        for g in range(n_devices):
            add_row([x_index(lay, e, g) for e in range(n_experts)], [1.0] * n_experts, 0.0, float(caps[g]))
    for pair, (lay, e, f) in enumerate(zip(layer, src, dst, strict=True)):
        for g in range(n_devices):  # z - x[l, e, g] + x[l + 1, f, g] >= 0
            add_row([n_x + pair, x_index(lay, e, g), x_index(lay + 1, f, g)], [1.0, -1.0, 1.0], 0.0, np.inf)
    matrix = coo_array((values, (rows, cols)), shape=(len(lower), n_x + n_z)).tocsr()
    low_bound, high_bound = np.zeros(n_x + n_z), np.ones(n_x + n_z)
    fixed = x_index(0, np.arange(n_experts), start)
    low_bound[fixed] = 1.0
    objective = np.concatenate([np.zeros(n_x), counts[layer, src, dst].astype(np.float64)])
    result = milp(objective, constraints=LinearConstraint(matrix, lower, upper), integrality=np.ones(n_x + n_z),
                  bounds=Bounds(low_bound, high_bound), options={"time_limit": float(time_limit)})
    if result.x is None:
        raise RuntimeError(f"HiGHS found no feasible placement within {time_limit} s: {result.message}")
    return result.x[:n_x].reshape(n_layers, n_experts, n_devices).argmax(axis=2).astype(np.int64)


def cross_device_hops(counts, placement) -> np.ndarray:
    """Tokens crossing devices between consecutive layers, eq. (1) per layer: int64 ``[L - 1]``."""
    counts = _check_counts(counts)
    placement = _check_placement_shape(placement, counts)
    split = placement[:-1, :, None] != placement[1:, None, :]  # [L - 1, E, E']
    return (counts * split).sum(axis=(1, 2))


def cross_device_fraction(counts, placement) -> float:
    """Fraction of all layer-to-layer token transitions that cross devices, in [0, 1]."""
    counts = _check_counts(counts)
    total = counts.sum()
    if total == 0:
        raise ValueError("counts must hold at least one transition")
    return float(cross_device_hops(counts, placement).sum() / total)


def alltoall_traffic(counts, placement, n_devices: int) -> np.ndarray:
    """Tokens sent from device to device at each layer boundary (the all-to-all of context-coherent
    expert parallelism): int64 ``[L - 1, G, G]``, ``[l, g, h]`` = tokens moving from device g (layer-l expert)
    to device h (layer-``l + 1`` expert). The diagonal stays local; the off-diagonal sum is
    :func:`cross_device_hops`. Multiply by the bits of one token's hidden state for the volume."""
    counts = _check_counts(counts)
    placement = _check_placement_shape(placement, counts)
    n_devices = _check_positive_int("n_devices", n_devices)
    if placement.max() >= n_devices:
        raise ValueError(f"placement uses device {placement.max()} but n_devices is {n_devices}")
    onehot = np.eye(n_devices, dtype=np.int64)[placement]  # [L, E, G]
    return np.einsum("lef,leg,lfh->lgh", counts, onehot[:-1], onehot[1:])


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer >= 1, got {type(value).__name__}: {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _check_counts(counts) -> np.ndarray:
    counts = np.asarray(counts)
    if counts.dtype.kind not in "iu" or counts.ndim != 3 or counts.shape[1] != counts.shape[2] or not counts.size:
        raise ValueError(f"counts must be a non-empty integer array [L - 1, E, E], got dtype {counts.dtype}, "
                         f"shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError("counts must be non-negative")
    return counts


def _check_placement_shape(placement, counts: np.ndarray) -> np.ndarray:
    placement = np.asarray(placement)
    expected = (counts.shape[0] + 1, counts.shape[1])
    if placement.dtype.kind not in "iu" or placement.shape != expected or placement.min() < 0:
        raise ValueError(f"placement must be non-negative device ids of shape {expected}, got {placement.shape}")
    return placement


def _check_placement(placement: np.ndarray, n_devices: int, caps: np.ndarray) -> None:
    placement = np.asarray(placement)
    if placement.dtype.kind not in "iu" or placement.min() < 0 or placement.max() >= n_devices:
        raise ValueError(f"placement must hold device ids in 0..{n_devices - 1}")
    load = np.stack([np.bincount(row, minlength=n_devices) for row in placement])
    if (load > caps).any():
        raise ValueError(f"placement puts more experts on a device than its capacity {caps.tolist()}")
