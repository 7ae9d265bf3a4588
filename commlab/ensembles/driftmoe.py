"""DriftMoE: an online mixture of incremental experts with a neural router, and prequential evaluation.

"DriftMoE: A Mixture of Experts Approach to Handle Concept Drifts" (Aspis, Cajas Ordóñez,
Suárez-Cetrulo, Simón Carbajo, 2025; arXiv 2507.18464). A pool of :math:`E` incremental Hoeffding
trees (river's ``HoeffdingTreeClassifier``) is trained jointly with a small MLP router
:math:`r_\\phi(x) \\in \\mathbb R^E`. For every arriving :math:`(x, y)`, test then train:

1. predict: MoE-Data answers with expert :math:`e^* = \\arg\\max_e r_\\phi(x)_e`; MoE-Task (one
   one-vs-rest expert per class) answers :math:`\\arg\\max_c g_c(x)\\, p_c(y{=}c \\mid x)` with
   :math:`g = \\mathrm{softmax}(r_\\phi(x))` (our reading of the task variant);
2. correctness mask :math:`c_e = 1\\{\\text{expert } e \\text{ is right on } x\\}`; if no expert is right,
   :math:`c` is one-hot on the expert that gave the true answer the highest probability
   (:func:`correctness_mask`);
3. router step on :math:`\\mathrm{BCE}(\\sigma(r_\\phi(x)), c)` (Adam), a multi-hot target that lets
   every right expert gain the region;
4. experts: MoE-Data updates the top-:math:`k` experts by router score with :math:`(x, y)`; MoE-Task
   updates each class expert with the binary label :math:`1\\{y = \\text{its class}\\}`.

The router sees features standardised by running means and variances (Welford), updated after the
prediction. :func:`prequential` runs any river-style model (``predict_one`` then ``learn_one``) over
a stream and returns per-sample correctness; :func:`sliding_accuracy`, :func:`cohen_kappa` and
:func:`recovery_times` turn it into the paper's metrics. :func:`drift_stream` joins river's synthetic
generators (SEA, LED, RBF, ...) into a stream whose concept changes every ``drift_every`` samples,
abruptly or gradually (river's ``ConceptDriftStream`` sigmoid).

Labels are any hashable values (river's SEA gives ``bool``); a prediction of ``None`` (an untrained
tree) counts as wrong.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from commlab._checks import check_choice, check_int, check_real_number

VARIANTS = ("data", "task")


def _hoeffding_tree():
    from river import tree

    return tree.HoeffdingTreeClassifier()


def _check_x(x, n_features: int) -> list[float]:
    if not isinstance(x, Mapping):
        raise TypeError(f"x must be a mapping of feature name to value (river's dict), got {type(x).__name__}")
    if len(x) != n_features:
        raise ValueError(f"x must have n_features = {n_features} features, got {len(x)}")
    values = [float(v) for v in x.values()]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("x must hold finite feature values")
    return values


class Router(nn.Module):
    """MLP router :math:`r_\\phi: \\mathbb R^d \\to \\mathbb R^E` (ReLU hidden layers), logits ``[E]``.

    All weights live in one flat parameter ``theta`` (views per layer), so that one Adam step per
    sample touches a single tensor.

    Args:
        n_features: input dimension d.
        n_experts: output dimension E.
        hidden: widths of the hidden layers (the brief: two of 32).
        generator: torch.Generator for the initialisation (Xavier-uniform weights, zero biases).
    """

    def __init__(self, n_features: int, n_experts: int, hidden: Sequence[int], *, generator: torch.Generator):
        super().__init__()
        widths = [check_int("n_features", n_features, low=1), *[check_int("hidden", h, low=1) for h in hidden],
                  check_int("n_experts", n_experts, low=1)]
        self.shapes = list(zip(widths[1:], widths[:-1], strict=True))  # (out, in) per layer
        self.theta = nn.Parameter(torch.zeros(sum(o * i + o for o, i in self.shapes)))
        with torch.no_grad():
            for weight, _ in self.layers():
                bound = math.sqrt(6.0 / sum(weight.shape))
                weight.uniform_(-bound, bound, generator=generator)

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(weight [out, in], bias [out])`` views of ``theta``, layer by layer."""
        views, start = [], 0
        for o, i in self.shapes:
            weight = self.theta[start:start + o * i].view(o, i)
            views.append((weight, self.theta[start + o * i:start + o * i + o]))
            start += o * i + o
        return views

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [d]`` or ``[N, d]`` -> logits ``[E]`` or ``[N, E]``."""
        layers = self.layers()
        for k, (weight, bias) in enumerate(layers):
            x = nn.functional.linear(x, weight, bias)
            if k < len(layers) - 1:
                x = torch.relu(x)
        return x


def mixture_weights(logits: torch.Tensor) -> torch.Tensor:
    """Gate :math:`g = \\mathrm{softmax}(r_\\phi(x))` over the last axis: non-negative, sums to one."""
    return torch.softmax(logits, dim=-1)


def correctness_mask(correct: Sequence[bool], true_scores: Sequence[float]) -> torch.Tensor:
    """Router target :math:`c \\in \\{0,1\\}^E`: 1 for every expert that was right; if none was,
    one-hot on the expert with the highest probability of the true answer (first on ties).

    Args:
        correct: ``[E]`` whether expert e predicted the label.
        true_scores: ``[E]`` each expert's probability of the true answer.
    """
    correct = [bool(c) for c in correct]
    scores = np.asarray(true_scores, dtype=np.float64)
    if not correct or scores.shape != (len(correct),):
        raise ValueError(f"correct and true_scores must be non-empty and of equal length, got {len(correct)} "
                         f"and {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("true_scores must be finite")
    mask = torch.tensor(correct, dtype=torch.float32)
    if not mask.any():
        mask[int(np.argmax(scores))] = 1.0
    return mask


class DriftMoE:
    """Mixture of incremental experts with an online-trained router (river-style ``predict_one`` /
    ``learn_one``).

    Args:
        n_features: number of features d of each ``x`` (a dict, river's convention).
        n_experts: E (MoE-Data); for MoE-Task it must equal ``len(classes)``.
        variant: ``"data"`` (experts specialise on regimes, multi-class) or ``"task"`` (one-vs-rest).
        classes: the class labels (required for ``"task"``; expert e is the expert of ``classes[e]``).
        top_k: experts updated per sample in MoE-Data (by router score).
        hidden: router hidden widths.
        lr: Adam learning rate of the router.
        expert_factory: callable returning a fresh incremental classifier (default: river's
            ``HoeffdingTreeClassifier()``).
        generator: torch.Generator for the router's initialisation.
    """

    def __init__(self, n_features: int, n_experts: int = 8, *, variant: str = "data",
                 classes: Sequence | None = None, top_k: int = 2, hidden: Sequence[int] = (32, 32),
                 lr: float = 1e-3, expert_factory: Callable[[], object] | None = None,
                 generator: torch.Generator):
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.n_features = check_int("n_features", n_features, low=1)
        self.n_experts = check_int("n_experts", n_experts, low=1)
        self.variant = check_choice("variant", variant, VARIANTS)
        self.top_k = check_int("top_k", top_k, low=1, high=self.n_experts)
        self.lr = check_real_number("lr", lr, low=0.0, low_open=True)
        if variant == "task":
            if classes is None or len(classes) != self.n_experts or len(set(classes)) != len(classes):
                raise ValueError(f"variant='task' needs n_experts = {self.n_experts} distinct classes, got {classes!r}")
        self.classes = None if classes is None else list(classes)
        factory = expert_factory or _hoeffding_tree
        self.experts = [factory() for _ in range(self.n_experts)]
        self.router = Router(self.n_features, self.n_experts, hidden, generator=generator)
        self.optimizer = torch.optim.Adam(self.router.parameters(), lr=self.lr)
        self.n_seen = 0
        self.mean = np.zeros(self.n_features)
        self.m2 = np.zeros(self.n_features)
        self._cache: tuple | None = None  # (x, features, logits, expert outputs) of the last predict_one

    # --- test ---------------------------------------------------------------------------------
    def _features(self, values: list[float]) -> torch.Tensor:
        std = np.sqrt(self.m2 / self.n_seen) if self.n_seen > 1 else np.ones(self.n_features)
        z = (np.asarray(values) - self.mean) / np.where(std > 0, std, 1.0)
        return torch.tensor(z, dtype=torch.float32)

    def _outputs(self, x: Mapping) -> list[dict]:
        return [expert.predict_proba_one(x) for expert in self.experts]

    def _forward(self, x: Mapping) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
        values = _check_x(x, self.n_features)
        if self._cache is not None and self._cache[0] == x:
            return self._cache[1], self._cache[2], self._cache[3]
        features = self._features(values)
        logits = self.router(features)  # kept with its graph: learn_one on the same x back-propagates it
        outputs = self._outputs(x)
        self._cache = (dict(x), features, logits, outputs)
        return features, logits, outputs

    def weights_one(self, x: Mapping) -> torch.Tensor:
        """Mixture weights :math:`g(x) = \\mathrm{softmax}(r_\\phi(x))`, ``[E]``, summing to one."""
        return mixture_weights(self._forward(x)[1].detach())

    def route_one(self, x: Mapping) -> int:
        """The expert :math:`\\arg\\max_e r_\\phi(x)_e` chosen for ``x``."""
        return int(torch.argmax(self._forward(x)[1].detach()))

    def predict_one(self, x: Mapping):
        """The mixture's prediction for ``x`` (``None`` while the chosen expert knows no class)."""
        _, logits, outputs = self._forward(x)
        logits = logits.detach()
        if self.variant == "data":
            proba = outputs[int(torch.argmax(logits))]
            return max(proba, key=proba.get) if proba else None
        gate = mixture_weights(logits)
        scores = [float(g) * out.get(True, 0.0) for g, out in zip(gate, outputs, strict=True)]
        return self.classes[int(np.argmax(scores))]  # argmax_c g_c(x) p_c(y=c|x)

    # --- train --------------------------------------------------------------------------------
    def _mask(self, outputs: list[dict], y) -> torch.Tensor:
        if self.variant == "data":
            correct = [bool(out) and max(out, key=out.get) == y for out in outputs]
            scores = [out.get(y, 0.0) for out in outputs]
        else:
            targets = [y == c for c in self.classes]
            positive = [out.get(True, 0.0) for out in outputs]
            correct = [bool(out) and (p > 0.5) == t for out, p, t in zip(outputs, positive, targets, strict=True)]
            scores = [p if t else 1.0 - p for p, t in zip(positive, targets, strict=True)]
        return correctness_mask(correct, scores)

    def learn_one(self, x: Mapping, y) -> None:
        """Update the router toward the correctness mask, then the experts, with one labelled sample."""
        features, logits, outputs = self._forward(x)
        mask = self._mask(outputs, y)
        self.optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(logits, mask)  # BCE(σ(r_φ(x)), c)
        loss.backward()
        self.optimizer.step()
        if self.variant == "data":
            for e in torch.topk(logits.detach(), self.top_k).indices.tolist():  # top-k experts by router score
                self.experts[e].learn_one(x, y)
        else:
            for expert, c in zip(self.experts, self.classes, strict=True):
                expert.learn_one(x, y == c)  # one-vs-rest label 1{y = c}
        values = np.asarray(_check_x(x, self.n_features))
        self.n_seen += 1  # Welford running mean and variance of the router's input
        delta = values - self.mean
        self.mean += delta / self.n_seen
        self.m2 += delta * (values - self.mean)
        self._cache = None

    # --- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Router and optimiser state, input statistics, and deep copies of the experts."""
        return {"router": copy.deepcopy(self.router.state_dict()),
                "optimizer": copy.deepcopy(self.optimizer.state_dict()), "n_seen": self.n_seen,
                "mean": self.mean.copy(), "m2": self.m2.copy(), "experts": copy.deepcopy(self.experts)}

    def load_state_dict(self, state: dict) -> None:
        if len(state["experts"]) != self.n_experts:
            raise ValueError(f"state holds {len(state['experts'])} experts, this model has {self.n_experts}")
        self.router.load_state_dict(state["router"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.n_seen, self.mean, self.m2 = int(state["n_seen"]), state["mean"].copy(), state["m2"].copy()
        self.experts = copy.deepcopy(state["experts"])
        self._cache = None


# --- streams ----------------------------------------------------------------------------------
def drift_stream(concepts: Sequence[Iterable], n_samples: int, drift_every: int, *, width: int = 1,
                 seed: int = 0) -> tuple[list[tuple[dict, object]], list[int]]:
    """A stream whose concept changes every ``drift_every`` samples, cycling through ``concepts``.

    Around drift point :math:`p` (of width :math:`w`) a sample comes from the new concept with
    probability :math:`1 / (1 + e^{-4 (t - p) / w})` (river's ``ConceptDriftStream``), :math:`p` the
    nearest drift point; ``width = 1`` is abrupt (sample t from concept ``t // drift_every``). Each
    concept is an iterable of ``(x, y)`` (a river generator, seeded by the caller).

    Returns:
        ``(samples, drifts)``: ``n_samples`` pairs ``(x, y)``, and the drift positions.
    """
    n_samples = check_int("n_samples", n_samples, low=1)
    drift_every = check_int("drift_every", drift_every, low=1)
    width = check_int("width", width, low=1)
    if len(concepts) < 2:
        raise ValueError(f"concepts must hold at least 2 generators, got {len(concepts)}")
    iterators = [iter(c) for c in concepts]
    rng = np.random.default_rng(check_int("seed", seed, low=0))
    drifts = list(range(drift_every, n_samples, drift_every))
    samples = []
    for t in range(n_samples):
        segment = t // drift_every
        if width > 1:
            k = min(max(round(t / drift_every), 1), max(len(drifts), 1))  # nearest drift p = k * drift_every
            new = rng.random() < 1.0 / (1.0 + math.exp(-4.0 * (t - k * drift_every) / width))
            segment = k if new else k - 1
        samples.append(next(iterators[segment % len(iterators)]))
    return samples, drifts


# --- prequential evaluation -------------------------------------------------------------------
@dataclass
class Prequential:
    """Outcome of a test-then-train run: ``y_true``, ``y_pred`` (``[T]`` object arrays), ``correct``
    (``[T]`` bool) and, for a :class:`DriftMoE`, the routed expert per sample (``[T]`` int, else empty)."""

    y_true: np.ndarray
    y_pred: np.ndarray
    correct: np.ndarray
    routes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    @property
    def kappa(self) -> float:
        return cohen_kappa(self.y_true, self.y_pred)


def prequential(model, stream: Iterable[tuple[Mapping, object]]) -> Prequential:
    """Test-then-train: for each ``(x, y)``, ``model.predict_one(x)`` first, then ``model.learn_one(x, y)``."""
    if not (hasattr(model, "predict_one") and hasattr(model, "learn_one")):
        raise TypeError(f"model must have predict_one and learn_one, got {type(model).__name__}")
    routed = isinstance(model, DriftMoE) and model.variant == "data"
    y_true, y_pred, routes = [], [], []
    for x, y in stream:
        y_pred.append(model.predict_one(x))
        if routed:
            routes.append(model.route_one(x))
        y_true.append(y)
        model.learn_one(x, y)
    if not y_true:
        raise ValueError("stream must hold at least one sample")
    y_true_a, y_pred_a = np.array(y_true, dtype=object), np.array(y_pred, dtype=object)
    correct = np.array([p is not None and p == t for p, t in zip(y_pred, y_true, strict=True)])
    return Prequential(y_true_a, y_pred_a, correct, np.array(routes, dtype=int))


def sliding_accuracy(correct, window: int) -> np.ndarray:
    """Trailing-window accuracy :math:`a_t = \\frac{1}{|W_t|}\\sum_{s \\in W_t} 1\\{\\hat y_s = y_s\\}`,
    :math:`W_t = \\{\\max(0, t-w+1), \\dots, t\\}`, ``[T]``."""
    correct = np.asarray(correct, dtype=np.float64)
    if correct.ndim != 1 or len(correct) == 0:
        raise ValueError(f"correct must be a non-empty 1-D array, got shape {correct.shape}")
    window = check_int("window", window, low=1)
    sums = np.cumsum(np.concatenate([[0.0], correct]))
    t = np.arange(1, len(correct) + 1)
    lo = np.maximum(0, t - window)
    return (sums[t] - sums[lo]) / (t - lo)


def cohen_kappa(y_true, y_pred) -> float:
    """Cohen's :math:`\\kappa = (p_o - p_e) / (1 - p_e)`, :math:`p_e = \\sum_c \\Pr[y{=}c]\\Pr[\\hat y{=}c]`
    (``None`` predictions form their own, always-wrong, category); 0 when :math:`p_e = 1`."""
    y_true, y_pred = list(y_true), list(y_pred)
    if not y_true or len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred must be non-empty and of equal length, got {len(y_true)}, {len(y_pred)}")
    n = len(y_true)
    p_o = sum(p is not None and p == t for p, t in zip(y_pred, y_true, strict=True)) / n
    labels = {t for t in y_true if t is not None}
    p_e = sum((y_true.count(c) / n) * (sum(p is not None and p == c for p in y_pred) / n) for c in labels)
    return 0.0 if p_e >= 1.0 else float((p_o - p_e) / (1.0 - p_e))


def recovery_times(accuracy, drifts: Sequence[int], *, tolerance: float = 0.01) -> np.ndarray:
    """Samples after each drift until the accuracy curve is back to its pre-drift level.

    For drift :math:`p` with next drift (or end) :math:`q`: level :math:`L = a_{p-1}`; if the curve
    never falls below :math:`L - \\text{tol}` on :math:`[p, q)` the recovery time is 0; otherwise it is
    the first :math:`\\tau` after the first dip with :math:`a_{p+\\tau} \\ge L - \\text{tol}`, and
    :math:`q - p` (censored) if that never happens before :math:`q`.

    Args:
        accuracy: ``[T]`` accuracy curve (e.g. :func:`sliding_accuracy`).
        drifts: increasing drift positions in ``[1, T)``.
        tolerance: slack below the pre-drift level that counts as recovered (accuracy units).
    Returns:
        ``[len(drifts)]`` recovery times in samples.
    """
    accuracy = np.asarray(accuracy, dtype=np.float64)
    if accuracy.ndim != 1 or len(accuracy) < 2 or not np.all(np.isfinite(accuracy)):
        raise ValueError(f"accuracy must be a finite 1-D array of length >= 2, got shape {accuracy.shape}")
    tolerance = check_real_number("tolerance", tolerance, low=0.0)
    drifts = [check_int("drifts", p, low=1, high=len(accuracy) - 1) for p in drifts]
    if any(b <= a for a, b in zip(drifts[:-1], drifts[1:], strict=False)):
        raise ValueError(f"drifts must be strictly increasing, got {drifts}")
    times = []
    for i, p in enumerate(drifts):
        q = drifts[i + 1] if i + 1 < len(drifts) else len(accuracy)
        level = accuracy[p - 1] - tolerance
        after = accuracy[p:q]
        below = np.flatnonzero(after < level)
        if len(below) == 0:
            times.append(0)
            continue
        back = np.flatnonzero(after[below[0]:] >= level)
        times.append(int(below[0] + back[0]) if len(back) else q - p)
    return np.array(times, dtype=int)
