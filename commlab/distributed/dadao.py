"""DADAO: decoupled, accelerated, decentralised, asynchronous optimisation (Nabli & Oyallon, ICML 2023).

n nodes minimise f(x) = Σ_i f_i(x), f_i L-smooth and μ-strongly convex, talking only along the edges of
a graph. Reference: A. Nabli, E. Oyallon, "DADAO: Decoupled Accelerated Decentralized Asynchronous
Optimization", ICML 2023, arXiv:2208.00779. Constants as the authors' code sets them (read, not copied),
with ν = μ/2:

    α = ¼√(ν/L)   α̃ = ⅛√(ν/L)   η = η̃ = ⅛√(ν/L)   θ = ½√(L/ν)
    γ = 1/(4L)    γ̃ = 1/(4√(Lν))   δ = ¼√(ν/L)   δ̃ = 1   β = ½   β̃ = 2 χ₁* √(L/ν)

where χ₁* = χ₁/λ_mix is χ₁ of the rate Laplacian Λ = Σ_ij λ_ij (e_i − e_j)(e_i − e_j)ᵀ.

**State.** Node i holds six vectors s_i = (x, x̃, y, ỹ, z, z̃) ∈ R^{6×d} (rows in that order). Between
its events they follow the linear ODE ṡ_i = A s_i with the fixed 6 × 6 matrix (:func:`ode_matrix`)

    ẋ = η(x̃ − x)    x̃̇ = η̃(x − x̃)    ẏ = α(ỹ − y)    ỹ̇ = −θν x̃ − θ y − θ z
    ż = α(z̃ − z)    z̃̇ = α̃(z − z̃)

which :class:`LinearFlow` integrates exactly and lazily: at node i's next event, s_i ← e^{AΔt} s_i with
e^{AΔt} = V diag(e^{λ_k Δt}) V⁻¹ from one eigendecomposition A = V diag(λ) V⁻¹ made once (A is
diagonalisable: its eigenvalue 0 has the two eigenvectors of the x- and z-blocks' consensus).

**Events** (a merged Poisson process, :func:`dadao_events`): gradient events at total rate n (rate 1 per
node) and gossip events at total rate λ_mix (rate λ_mix/|E| per edge of the current graph):

    gradient at i:   r = ∇f_i(x_i) − ν x_i − ỹ_i;  x_i −= γ r;  x̃_i −= γ̃ r;  ỹ_i += (δ + δ̃) r
    gossip on (i,j): w = (y_i + z_i) − (y_j + z_j);  z_i −= β w;  z̃_i −= β̃ w;  z_j += β w;  z̃_j += β̃ w

each after the lazy ODE update of every node it touches (both ends of a gossip edge). A gossip event
moves z between its two ends, so Σ_k z_k and Σ_k (y_k + z_k) are conserved by it.

**Counting.** A gossip event is one *edge activation*: nodes i and j exchange y + z, two messages of d
numbers (2·64·d bits in float64). Gradients are counted one per gradient event.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from commlab._checks import check_int, check_positive, check_seed
from commlab.distributed.clocks import PoissonClocks
from commlab.distributed.gradient_tracking import first_below
from commlab.seeding import SeedTree

ROWS = ("x", "x_tilde", "y", "y_tilde", "z", "z_tilde")
BITS_PER_NUMBER = 64  # float64 messages


@dataclass(frozen=True)
class DadaoConstants:
    """The ODE rates and jump sizes of DADAO (module docstring), in units of the event clock (1/s)."""

    L: float
    mu: float
    chi_1_star: float
    nu: float
    alpha: float
    alpha_tilde: float
    eta: float
    eta_tilde: float
    theta: float
    gamma: float
    gamma_tilde: float
    delta: float
    delta_tilde: float
    beta: float
    beta_tilde: float

    @classmethod
    def from_problem(cls, L: float, mu: float, chi_1_star: float) -> DadaoConstants:
        """Constants for L-smooth, μ-strongly convex f_i (0 < μ <= L) and χ₁* = χ₁(Λ) (seconds)."""
        L, mu, chi_1_star = check_positive("L", L), check_positive("mu", mu), check_positive("chi_1_star", chi_1_star)
        if mu > L:
            raise ValueError(f"mu must be <= L, got mu = {mu} > L = {L}")
        nu = mu / 2  # ν = μ/2
        root = math.sqrt(nu / L)  # √(ν/L)
        return cls(L=L, mu=mu, chi_1_star=chi_1_star, nu=nu,
                   alpha=root / 4, alpha_tilde=root / 8, eta=root / 8, eta_tilde=root / 8, theta=0.5 / root,
                   gamma=1 / (4 * L), gamma_tilde=1 / (4 * math.sqrt(L * nu)), delta=root / 4, delta_tilde=1.0,
                   beta=0.5, beta_tilde=2 * chi_1_star / root)  # β̃ = 2 χ₁* √(L/ν)


def ode_matrix(k: DadaoConstants) -> np.ndarray:
    """The 6 × 6 float64 matrix A of ṡ = A s, rows and columns in the order ``ROWS``."""
    A = np.zeros((6, 6))
    A[0, 0], A[0, 1] = -k.eta, k.eta  # ẋ = η(x̃ − x)
    A[1, 0], A[1, 1] = k.eta_tilde, -k.eta_tilde  # x̃̇ = η̃(x − x̃)
    A[2, 2], A[2, 3] = -k.alpha, k.alpha  # ẏ = α(ỹ − y)
    A[3, 1], A[3, 2], A[3, 4] = -k.theta * k.nu, -k.theta, -k.theta  # ỹ̇ = −θν x̃ − θ y − θ z
    A[4, 4], A[4, 5] = -k.alpha, k.alpha  # ż = α(z̃ − z)
    A[5, 4], A[5, 5] = k.alpha_tilde, -k.alpha_tilde  # z̃̇ = α̃(z − z̃)
    return A


class LinearFlow:
    """Exact flow e^{At} of ṡ = A s for a diagonalisable real square A, from one eigendecomposition.

    Args:
        A: [k, k] float64, diagonalisable (eigenvector matrix with condition number < 1e8).

    Attributes:
        eigenvalues: [k] complex; V, V_inv: [k, k] complex, A = V diag(eigenvalues) V⁻¹.
    """

    def __init__(self, A: np.ndarray):
        A = np.asarray(A, dtype=np.float64)
        if A.ndim != 2 or A.shape[0] != A.shape[1] or not np.isfinite(A).all():
            raise ValueError(f"A must be a finite square matrix, got shape {A.shape}")
        self.A = A
        values, V = np.linalg.eig(A)
        scale = max(1.0, float(np.abs(A).max()))
        done = np.zeros(len(values), dtype=bool)
        for a in range(len(values)):  # a repeated eigenvalue: LAPACK may return one eigenvector twice, so
            if done[a]:  # take an orthonormal basis of its eigenspace null(A − λI) instead
                continue
            group = np.flatnonzero(np.abs(values - values[a]) <= 1e-9 * scale)
            done[group] = True
            if len(group) > 1:
                value = values[group].mean()
                _, sing, vh = np.linalg.svd(A - value * np.eye(len(A)))
                if sing[-len(group)] > 1e-8 * scale:
                    raise ValueError(f"A is not diagonalisable: eigenvalue {value:.3g} of multiplicity {len(group)} "
                                     "has a smaller eigenspace")
                values[group], V[:, group] = value, vh[-len(group):].conj().T
        if np.linalg.cond(V) > 1e8:
            raise ValueError("A is not (numerically) diagonalisable: its eigenvectors are nearly dependent")
        self.eigenvalues, self.V, self.V_inv = values, V, np.linalg.inv(V)

    def propagator(self, dt) -> np.ndarray:
        """e^{A dt}: [k, k] for a scalar dt >= 0, [m, k, k] for an array of m times (seconds)."""
        dt = np.asarray(dt, dtype=np.float64)
        if not np.isfinite(dt).all() or (dt < 0).any():
            raise ValueError("dt must be finite and >= 0 (the flow runs forward in time)")
        grow = np.exp(np.multiply.outer(dt, self.eigenvalues))  # e^{λ_k dt}
        return ((self.V * grow[..., None, :]) @ self.V_inv).real

    def first_row(self, dt: np.ndarray) -> np.ndarray:
        """Row 0 of e^{A dt} for each of m times: [m, k] (the x row of DADAO's state)."""
        grow = np.exp(np.multiply.outer(np.asarray(dt, dtype=np.float64), self.eigenvalues))
        return ((self.V[0] * grow) @ self.V_inv).real


class Events(NamedTuple):
    """A merged event stream as arrays (K events, in time order).

    Attributes:
        time: [K] float64 seconds. kind: [K] int8, 0 = gradient, 1 = gossip.
        i: [K] int64 node (gradient) or first end (gossip). j: [K] int64 second end, −1 for a gradient.
    """

    time: np.ndarray
    kind: np.ndarray
    i: np.ndarray
    j: np.ndarray

    def __len__(self) -> int:
        return len(self.time)

    @property
    def gradients(self) -> int:
        return int((self.kind == 0).sum())

    @property
    def communications(self) -> int:
        """Edge activations (each is two messages)."""
        return int((self.kind == 1).sum())


def _clock_arrays(events) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.array([e.time for e in events], dtype=np.float64)
    i = np.array([e.i for e in events], dtype=np.int64)
    j = np.array([-1 if e.j is None else e.j for e in events], dtype=np.int64)
    return t, i, j


def dadao_events(n: int, graphs: Sequence[Sequence[tuple[int, int]]], lambda_mix: float, *, horizon: float,
                 seed: int, switch_rate: float | None = None, lambda_grad: float = 1.0,
                 max_events: int | None = None) -> Events:
    """DADAO's two independent Poisson processes, merged, from :class:`PoissonClocks`.

    Gradient events: every node's clock at rate ``lambda_grad`` (total n·lambda_grad). Gossip events:
    total rate ``lambda_mix`` spread uniformly over the edges of the current graph (rate λ_mix/|E_g| per
    edge). With one graph it is static; with K graphs, graph g = ⌊t·switch_rate⌋ mod K is the current
    one (the paper changes graph every 1/χ₁ time units). Graph g's edge clocks run only while g is current
    (their own clock time advances through g's intervals one after another), which by the memorylessness
    of Poisson processes is exact.

    Args:
        n: nodes. graphs: one or more edge lists on n nodes (each edge once, i < j).
        lambda_mix: total gossip rate (events per second). horizon: seconds to simulate.
        seed: root seed; the gradient clock and graph g's clock take ``SeedTree(seed).seed_for(...)``.
        switch_rate: graph changes per second (needed with several graphs).
        lambda_grad: per-node gradient rate (1 in the paper: total rate n).
        max_events: keep at most this many events (the first ones).
    """
    n = check_int("n", n, low=2)
    lambda_mix, horizon = check_positive("lambda_mix", lambda_mix), check_positive("horizon", horizon)
    lambda_grad = check_positive("lambda_grad", lambda_grad)
    tree = SeedTree(check_seed(seed))
    graphs = [list(g) for g in graphs]
    if not graphs or any(not g for g in graphs):
        raise ValueError("graphs must be a non-empty list of non-empty edge lists")
    grad = PoissonClocks(lambda_grad, n=n, seed=tree.seed_for("dadao-gradients"))
    t_g, i_g, _ = _clock_arrays(grad.until(horizon))
    clocks = [PoissonClocks(0.0, g, lambda_mix / len(g), n=n, seed=tree.seed_for("dadao-gossip", k))
              for k, g in enumerate(graphs)]
    if len(graphs) == 1:
        t_c, i_c, j_c = _clock_arrays(clocks[0].until(horizon))
    else:
        if switch_rate is None:
            raise ValueError("several graphs need switch_rate, the graph changes per second")
        period = 1.0 / check_positive("switch_rate", switch_rate)
        count = len(graphs)
        laps = int(math.ceil(horizon / (period * count))) + 1  # each graph's clock time runs laps · period
        parts = []
        for g, clock in enumerate(clocks):
            # interval k = lap·K + g of [k·period, (k+1)·period) is graph g's lap-th: its own clock time
            # τ ∈ [lap·period, (lap+1)·period) maps to t = τ + lap·(K − 1)·period + g·period
            tau, i, j = _clock_arrays(clock.until(laps * period))
            t = tau + np.floor(tau / period) * (count - 1) * period + g * period
            keep = t <= horizon
            parts.append((t[keep], i[keep], j[keep]))
        t_c, i_c, j_c = (np.concatenate(p) for p in zip(*parts, strict=True))
    time = np.concatenate([t_g, t_c])
    order = np.argsort(time, kind="stable")
    kind = np.concatenate([np.zeros(len(t_g), np.int8), np.ones(len(t_c), np.int8)])[order]
    i = np.concatenate([i_g, i_c])[order]
    j = np.concatenate([np.full(len(t_g), -1, np.int64), j_c])[order]
    events = Events(time[order], kind, i, j)
    if max_events is not None:
        keep = check_int("max_events", max_events, low=1)
        events = Events(*(a[:keep] for a in events))
    return events


class Trace(NamedTuple):
    """What :meth:`DADAO.play` recorded at its checkpoints (one entry per checkpoint, the start included).

    Attributes: events (processed so far), time (seconds), gradients, communications (edge activations),
    distance ((1/n) Σ_i ‖x_i(t) − x*‖² / ‖x*‖², every node advanced to time t): [C] arrays.
    """

    events: np.ndarray
    time: np.ndarray
    gradients: np.ndarray
    communications: np.ndarray
    distance: np.ndarray

    def first_below(self, eps: float, field: str = "communications") -> float:
        """``field`` at the first checkpoint whose distance is <= eps; inf if none is."""
        return first_below(self.distance, getattr(self, field), eps)


class DADAO:
    """The DADAO event-driven simulation of n nodes (module docstring for the mechanism).

    Args:
        grad: local gradient oracle ``grad(i, x) -> [d]`` float64, ∇f_i at x ∈ R^d.
        x0: [n, d] initial x of every node (the other five vectors start at 0).
        L, mu: smoothness and strong convexity of every f_i (worst case over nodes).
        chi_1_star: χ₁* = χ₁(L_norm)/λ_mix, seconds.

    Attributes:
        state: [n, 6, d] float64, node i's six vectors as of its last event ``last[i]`` (seconds).
        constants: :class:`DadaoConstants`; flow: :class:`LinearFlow` of :func:`ode_matrix`.
        gradients, communications: events processed of each kind; time: the last event's time.
    """

    def __init__(self, grad: Callable[[int, np.ndarray], np.ndarray], x0, *, L: float, mu: float,
                 chi_1_star: float):
        if not callable(grad):
            raise TypeError(f"grad must be callable as grad(i, x), got {type(grad).__name__}")
        x0 = np.asarray(x0, dtype=np.float64)
        if x0.ndim != 2 or x0.shape[0] < 2 or not np.isfinite(x0).all():
            raise ValueError(f"x0 must be a finite [n, d] array with n >= 2 nodes, got shape {x0.shape}")
        self.grad = grad
        self.n, self.d = x0.shape
        self.constants = DadaoConstants.from_problem(L, mu, chi_1_star)
        self.flow = LinearFlow(ode_matrix(self.constants))
        k = self.constants
        self._u_grad = np.array([-k.gamma, -k.gamma_tilde, 0, k.delta + k.delta_tilde, 0, 0])[:, None]
        self._u_gossip = np.array([0, 0, 0, 0, -k.beta, -k.beta_tilde])[:, None]
        self.state = np.zeros((self.n, 6, self.d))
        self.state[:, 0] = x0
        self.last = np.zeros(self.n)
        self.time = 0.0
        self.gradients = self.communications = 0

    # -- one event ----------------------------------------------------------------------------------

    def _check_time(self, t: float) -> float:
        t = float(t)
        if not t >= self.time:
            raise ValueError(f"events must come in time order: t = {t} is before the last event at {self.time}")
        return t

    def gradient_step(self, i: int, t: float) -> None:
        """Node i's gradient event at time t: its lazy ODE update, then the gradient jump."""
        t = self._check_time(t)
        s = self.flow.propagator(t - self.last[i]) @ self.state[i]  # s_i ← e^{AΔt} s_i
        self._gradient_jump(i, s)
        self.state[i], self.last[i], self.time = s, t, t
        self.gradients += 1

    def gossip_step(self, i: int, j: int, t: float) -> None:
        """Edge (i, j)'s gossip event at time t: both ends' lazy ODE updates, then the gossip jump."""
        if i == j:
            raise ValueError(f"a gossip edge needs two distinct nodes, got ({i}, {j})")
        t = self._check_time(t)
        pair = [i, j]
        s = self.flow.propagator(t - self.last[pair]) @ self.state[pair]  # both ends to time t
        self._gossip_jump(s)
        self.state[pair], self.last[pair], self.time = s, t, t
        self.communications += 1

    def _gradient_jump(self, i: int, s: np.ndarray) -> None:
        x = s[0]
        r = self.grad(i, x) - self.constants.nu * x - s[3]  # r = ∇f_i(x_i) − ν x_i − ỹ_i
        s += self._u_grad * r  # x −= γ r; x̃ −= γ̃ r; ỹ += (δ + δ̃) r

    def _gossip_jump(self, s: np.ndarray) -> None:
        w = s[0, 2] + s[0, 4] - s[1, 2] - s[1, 4]  # (e_i − e_j)(e_i − e_j)ᵀ (y + z), row i
        s[0] += self._u_gossip * w  # z_i −= β w, z̃_i −= β̃ w
        s[1] -= self._u_gossip * w  # and w_j = −w_i on the other end

    # -- a stream -----------------------------------------------------------------------------------

    def positions(self, t: float | None = None) -> np.ndarray:
        """[n, d]: every node's x advanced by the ODE to time t (default: the last event's time)."""
        t = self.time if t is None else self._check_time(t)
        rows = self.flow.first_row(t - self.last)  # [n, 6]
        return np.einsum("nk,nkd->nd", rows, self.state)

    def play(self, events: Events, *, x_star, every: int = 100, stop_below: float = 0.0) -> Trace:
        """Process ``events`` in order, recording the relative distance to ``x_star`` [d] every ``every``
        events (and at the start and the end), every node advanced to the checkpoint's time; stop early
        at the first checkpoint whose distance is below ``stop_below`` (0: never)."""
        every = check_int("every", every, low=1)
        stop_below = float(stop_below)
        x_star = np.asarray(x_star, dtype=np.float64)
        if x_star.shape != (self.d,):
            raise ValueError(f"x_star must have shape [{self.d}], got {list(x_star.shape)}")
        norm = float(x_star @ x_star)
        if not norm > 0:
            raise ValueError("x_star must be non-zero (the distance is relative to ‖x*‖²)")
        if len(events) and events.time[0] < self.time:
            raise ValueError(f"events start at {events.time[0]} s, before the last event at {self.time} s")
        rec: list[tuple] = []

        def record(k):
            x = self.positions()
            rec.append((k, self.time, self.gradients, self.communications,
                        float(np.mean(np.sum((x - x_star) ** 2, axis=1)) / norm)))

        record(0)
        lam, V, V_inv, state, last = self.flow.eigenvalues, self.flow.V, self.flow.V_inv, self.state, self.last
        times, kinds, first, second = events.time.tolist(), events.kind.tolist(), events.i.tolist(), events.j.tolist()
        for k, (t, kind, i, j) in enumerate(zip(times, kinds, first, second, strict=True), start=1):
            if kind == 0:  # the hot loop inlines gradient_step / gossip_step (same arithmetic)
                s = ((V * np.exp(lam * (t - last[i]))) @ V_inv).real @ state[i]
                self._gradient_jump(i, s)
                state[i], last[i] = s, t
                self.gradients += 1
            else:
                pair = [i, j]
                grow = np.exp(np.multiply.outer(t - last[pair], lam))
                s = ((V * grow[:, None, :]) @ V_inv).real @ state[pair]
                self._gossip_jump(s)
                state[pair], last[pair] = s, t
                self.communications += 1
            self.time = t
            if k % every == 0 or k == len(times):
                record(k)
                if rec[-1][-1] < stop_below:
                    break
        return Trace(*(np.array(col) for col in zip(*rec, strict=True)))

    def summary(self) -> dict:
        """Counts so far: gradients, communications (edge activations), messages (2 per activation),
        bits (messages × d × 64) and the simulated time in seconds."""
        return {"gradients": self.gradients, "communications": self.communications,
                "messages": 2 * self.communications,
                "bits": 2 * self.communications * self.d * BITS_PER_NUMBER, "time": self.time}

    def state_dict(self) -> dict:
        """Plain data to resume exactly: the six vectors, last event times, counters and constants."""
        return {"state": self.state.copy(), "last": self.last.copy(), "time": self.time,
                "gradients": self.gradients, "communications": self.communications,
                "constants": asdict(self.constants)}

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict` output of a DADAO with the same n, d and constants."""
        if state["constants"] != asdict(self.constants):
            raise ValueError("state_dict was saved with other constants (L, mu or chi_1_star differ)")
        arr = np.asarray(state["state"], dtype=np.float64)
        if arr.shape != self.state.shape:
            raise ValueError(f"state must have shape {self.state.shape}, got {arr.shape}")
        self.state[...] = arr
        self.last[...] = np.asarray(state["last"], dtype=np.float64)
        self.time = float(state["time"])
        self.gradients, self.communications = int(state["gradients"]), int(state["communications"])
