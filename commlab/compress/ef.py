"""Error feedback and shifts: how a worker's compressed messages stay faithful over many rounds.

Every mechanism has the same two-sided shape, on a stack of workers (leading axis W; W = 1 on a
``torch.distributed`` rank)::

    mechanism = EF21(TopK(k=1))
    mechanism.start(grads_0)                       # optional dense initial message (counted)
    payload = mechanism.client_step(grads, generator=g)   # [W, d] -> what the workers send
    estimate = mechanism.server_step(payload)      # -> [d], what the server uses

``payload.bits`` / ``payload.row_bits`` are the uplink bits. Worker state lives in the mechanism
(``state_dict()`` / ``load_state_dict()`` for checkpoints); it is created on the first call with the
shape of the input, and a later input with another number of workers or dimension is an error.

Notation: g_i is worker i's gradient (or whatever vector it must communicate), C the compressor,
ĉ = decompress(C(·)) what the receiver sees, n = W.
"""

from __future__ import annotations

import torch

from commlab.compress.base import Compressor
from commlab.compress.payload import Payload
from commlab.compress.quantize import Identity


class Mechanism:
    """Base class: input checks, lazily created state, and one decompression shared by both sides.

    ``takes_step`` says what the workers communicate: False (the default) — their gradients, and the
    server's vector is a gradient estimate to be multiplied by γ; True — the step γ·g itself, and
    the server's vector is the update (classic error feedback).
    """

    takes_step = False

    def __init__(self, compressor: Compressor):
        if not isinstance(compressor, Compressor):
            raise TypeError(f"compressor must be a commlab Compressor, got {type(compressor).__name__}")
        self.compressor = compressor
        self.state: dict[str, torch.Tensor] = {}
        self._decoded: tuple[Payload, torch.Tensor] | None = None

    # -- the two sides ------------------------------------------------------------------------

    def client_step(self, g: torch.Tensor, generator: torch.Generator | None = None) -> Payload:
        """Workers compress their messages from ``g`` of shape ``[W, d]``; returns the payload."""
        g = self._check(g)
        self._ensure_state(g)
        payload = self.compressor.compress(self._message(g), generator)
        decoded = self.compressor.decompress(payload)
        self._decoded = (payload, decoded)
        self._client_update(g, decoded)
        return payload

    def server_step(self, payload: Payload) -> torch.Tensor:
        """The server's vector (shape ``[d]``) after receiving ``payload`` from all workers."""
        if self._decoded is not None and self._decoded[0] is payload:
            decoded = self._decoded[1]
        else:
            decoded = self.compressor.decompress(payload)
        return self.aggregate(decoded)

    def step(self, g: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Payload]:
        """One round on both sides: ``(server vector [d], payload)``."""
        payload = self.client_step(g, generator)
        return self.server_step(payload), payload

    # -- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: value.clone() for name, value in self.state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.state = {name: value.clone() for name, value in state.items()}

    def reset(self) -> None:
        self.state, self._decoded = {}, None

    def _check(self, g: torch.Tensor) -> torch.Tensor:
        if not isinstance(g, torch.Tensor) or not g.is_floating_point():
            raise TypeError(f"g must be a floating torch.Tensor of shape [W, d], got {type(g).__name__}")
        if g.dim() != 2:
            raise ValueError(f"g must have shape [W, d] (a leading worker axis), got {tuple(g.shape)}")
        for value in self.state.values():
            if value.dim() == 2 and value.shape != g.shape:
                raise ValueError(f"g has shape {tuple(g.shape)} but the state was built for {tuple(value.shape)}")
        low, high = torch.aminmax(g)  # NaN propagates; one pass, no temporary
        if not (torch.isfinite(low) and torch.isfinite(high)):
            raise ValueError("g contains NaN or Inf")
        return g.detach()

    # -- what subclasses define -----------------------------------------------------------------

    def _ensure_state(self, g: torch.Tensor) -> None:
        pass

    def _message(self, g: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _client_update(self, g: torch.Tensor, decoded: torch.Tensor) -> None:
        pass

    def aggregate(self, decoded: torch.Tensor) -> torch.Tensor:
        """The server's update from every worker's decompressed message ``decoded`` ``[n, d]``;
        returns the server's vector ``[d]``. On a ``torch.distributed`` rank each rank calls it
        with the gathered messages of all ranks, so the (replicated) server state stays equal."""
        raise NotImplementedError

    @property
    def mean_aggregate(self) -> bool:
        """Whether :meth:`aggregate` depends on the messages only through their mean, so that an
        all-reduce of a linear compressor's payloads can replace the all-gather."""
        return True


class Plain(Mechanism):
    """Compressed gradient descent without feedback (CSGD): send C(g_i), average. Biased for biased C."""

    def _message(self, g):
        return g

    def aggregate(self, decoded):
        return decoded.mean(dim=0)


class EF14(Mechanism):
    """Classic error feedback (Seide et al. 2014; Stich et al. 2018).

    p_i = C(e_i + g_i),  e_i ← e_i + g_i − p̂_i,  server: mean_i p̂_i.
    Pass the *scaled* step γ g_i as ``g`` to get the usual x ← x − mean p̂_i (``takes_step``).
    """

    takes_step = True

    def _ensure_state(self, g):
        self.state.setdefault("e", torch.zeros_like(g))

    def _message(self, g):
        return self.state["e"] + g

    def _client_update(self, g, decoded):
        self.state["e"] = self.state["e"] + g - decoded

    def aggregate(self, decoded):
        return decoded.mean(dim=0)


class EF21(Mechanism):
    """EF21 (Richtárik, Sokolov, Fatkhullin 2021), optionally weighted as EF21-W.

    Worker i tracks h_i and sends c_i = C(g_i / (n w_i) − h_i), then h_i ← h_i + ĉ_i; the server
    keeps h = Σ_i w_i h_i and updates it with Σ_i w_i ĉ_i. Uniform weights w_i = 1/n give EF21.
    :meth:`start` sends h_i = g_i⁰/(n w_i) densely (the paper's init); without it h_i starts at 0.
    """

    def __init__(self, compressor: Compressor, weights: torch.Tensor | None = None):
        super().__init__(compressor)
        if weights is not None:
            weights = torch.as_tensor(weights, dtype=torch.float64)
            if weights.dim() != 1 or not torch.isfinite(weights).all() or (weights <= 0).any():
                raise ValueError("weights must be a 1-D tensor of positive finite numbers")
            weights = weights / weights.sum()
        self.weights = weights

    @property
    def mean_aggregate(self) -> bool:
        return self.weights is None

    def _w(self, g: torch.Tensor) -> torch.Tensor:
        n = g.shape[0]
        if self.weights is None:
            return torch.full((n,), 1 / n, dtype=g.dtype)
        if self.weights.numel() != n:
            raise ValueError(f"g has {n} workers but {self.weights.numel()} weights were given")
        return self.weights.to(g.dtype)

    def start(self, g0: torch.Tensor) -> Payload:
        """Dense initial message: h_i = g_i⁰/(n w_i). Returns its payload (32 bits per float32 value)."""
        g0 = self._check(g0)
        self.reset()
        w = self._w(g0)
        h = g0 / (g0.shape[0] * w[:, None])
        self.state = {"h": h.clone(), "server": (w[:, None] * h).sum(dim=0)}
        return Identity().compress(h)

    def _ensure_state(self, g):
        if not self.state:
            self.state = {"h": torch.zeros_like(g), "server": torch.zeros_like(g[0])}

    def _message(self, g):
        if self.weights is None:
            return g - self.state["h"]
        return g / (g.shape[0] * self._w(g)[:, None]) - self.state["h"]

    def _client_update(self, g, decoded):
        self.state["h"] = self.state["h"] + decoded

    def aggregate(self, decoded):
        if self.weights is None:
            step = decoded.mean(dim=0)
        else:
            step = (self._w(decoded)[:, None] * decoded).sum(dim=0)
        self.state["server"] = self.state["server"] + step
        return self.state["server"]


class EF21W(EF21):
    """EF21-W (Richtárik et al. 2024, "Error Feedback Reloaded"): EF21 with w_i = L_i / Σ_j L_j.

    Args:
        compressor: any compressor (contractive in the theory).
        smoothness: per-worker smoothness constants L_i, shape ``[n]``.
    """

    def __init__(self, compressor: Compressor, smoothness: torch.Tensor):
        super().__init__(compressor, weights=smoothness)


class EControl(Mechanism):
    """EControl (Gao, Islamov, Stich 2024): error control on top of an EF21-style tracker.

    Δ_i = C(η e_i + g_i − h_i),  e_i ← e_i + g_i − h_i − Δ̂_i,  h_i ← h_i + Δ̂_i;
    the server keeps h = mean_i h_i. :meth:`start` sends h_i = g_i⁰ densely; otherwise h_i = 0.

    Args:
        compressor: a contractive compressor with constant δ (Top-k: δ = k/d).
        eta: the error weight η (the paper's theory uses δ/400; 0.01 works well in practice).
    """

    def __init__(self, compressor: Compressor, eta: float = 0.01):
        super().__init__(compressor)
        if not 0 <= eta <= 1:
            raise ValueError(f"eta must be in [0, 1], got {eta!r}")
        self.eta = eta

    def start(self, g0: torch.Tensor) -> Payload:
        g0 = self._check(g0)
        self.reset()
        self.state = {"e": torch.zeros_like(g0), "h": g0.clone(), "server": g0.mean(dim=0)}
        return Identity().compress(g0)

    def _ensure_state(self, g):
        if not self.state:
            self.state = {"e": torch.zeros_like(g), "h": torch.zeros_like(g), "server": torch.zeros_like(g[0])}

    def _message(self, g):
        return self.eta * self.state["e"] + g - self.state["h"]

    def _client_update(self, g, decoded):
        self.state["e"] = self.state["e"] + g - self.state["h"] - decoded
        self.state["h"] = self.state["h"] + decoded

    def aggregate(self, decoded):
        self.state["server"] = self.state["server"] + decoded.mean(dim=0)
        return self.state["server"]


class DIANA(Mechanism):
    """DIANA shifts (Mishchenko et al. 2019) for unbiased compressors.

    c_i = C(g_i − h_i); the server's estimate is h + mean_i ĉ_i; then h_i ← h_i + a ĉ_i and
    h ← h + a mean_i ĉ_i. The default shift rate is a = 1/(1 + ω).
    """

    def __init__(self, compressor: Compressor, shift_rate: float | None = None):
        super().__init__(compressor)
        if shift_rate is None:
            if compressor.omega is None:
                raise ValueError("give shift_rate: the compressor states no dimension-free omega")
            shift_rate = 1 / (1 + compressor.omega)
        if not 0 < shift_rate <= 1:
            raise ValueError(f"shift_rate must be in (0, 1], got {shift_rate!r}")
        self.shift_rate = shift_rate

    def _ensure_state(self, g):
        if not self.state:
            self.state = {"h": torch.zeros_like(g), "server": torch.zeros_like(g[0])}

    def _message(self, g):
        return g - self.state["h"]

    def _client_update(self, g, decoded):
        self.state["h"] = self.state["h"] + self.shift_rate * decoded

    def aggregate(self, decoded):
        mean = decoded.mean(dim=0)
        estimate = self.state["server"] + mean
        self.state["server"] = self.state["server"] + self.shift_rate * mean
        return estimate
