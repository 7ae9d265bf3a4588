"""Knowledge distillation through messages over a rate-limited channel, one-way or interactive.

Reconstruction (commlab's, after Zhao et al. 2023, "Talking Models: Distill Pre-trained Knowledge to
Downstream Models via Interactive Communication", arXiv 2310.03188; the paper's architectures and losses
are not public). A frozen teacher ``T = T_up ∘ T_low`` and a small student ``S = S_up ∘ S_low``
(:class:`SplitMLP`) share a message space ``R^q``; four small learned maps translate between each
model's hidden space and the messages. For a batch of downstream inputs ``x``, one interactive round
(:class:`MessageDistillation`, ``interactive=True``) is::

    h_S = S_low(x),  ℓ_S = S_up(h_S),  h_T = T_low(x),  ℓ_T = T_up(h_T)
    m_S = enc_S(sg(h_S))              r_S = uplink(m_S)        the student asks
    h̃_T = dec_T(r_S)                                           the teacher reads the question in its hidden space
    ℓ̃_T = T_up(h̃_T)                                            and processes it with its own (frozen) head
    m_T = enc_T([ℓ_T, ℓ̃_T])           r_T = downlink(m_T)      the teacher replies, knowing its view and its reading
    t̂ = dec_S(r_T)                                             the student reads the reply as logits

``sg`` stops gradients, so knowledge reaches the student's parameters only through what arrives over the
downlink (the codec's training loss never reaches ``S_low`` or ``S_up``). One-way distillation
(``interactive=False``) skips the question: ``m_T = enc_T(ℓ_T)``. The last layer of ``dec_S`` starts at zero, so
the first replies read as uniform soft labels. The student decodes the reply into its logit space rather
than its hidden space (the brief's ``ĥ_S``): a target in the hidden space would move with the student's
own head while the codec learns. The losses (:meth:`MessageDistillation.losses`):

* student: ``(1 − λ)·CE(ℓ_S, y) + λ·τ²·KL(softmax(sg(t̂)/τ) ‖ softmax(A(h_S)/τ))`` with a linear reply head
  ``A: R^{d_S} → R^C`` (learn from the reply through the hidden state; the brief's α term in a KL form), CE on
  the labelled batch and the KL on the transfer batch. A separate head absorbs an uninformative (constant)
  reply in its bias, so a useless channel leaves the student's own head and features alone;
* codec (enc_S, dec_T, enc_T, dec_S): ``τ²·KL(softmax(ℓ_T/τ) ‖ softmax(t̂/τ))`` (the reply, as the student reads
  it, carries the teacher's soft labels) ``+ β·τ²·KL(softmax(sg(ℓ_S)/τ) ‖ softmax(ℓ̃_T/τ))`` (the teacher's
  reading of the question, through its own frozen head, is the student's belief; interactive only).

The codecs are trained end to end through both channels, as a Deep-JSCC pair is: the training gradients
that cross between the models are a simulation convenience and are not counted; the forward messages are.

Channels (:class:`MessageChannel`): ``"ideal"`` (fp32 values), ``"quantise"`` (commlab's b-bit
:class:`~commlab.compress.Uniform` per message, straight-through gradient), ``"awgn"`` (pairs of reals as
complex symbols, :func:`~commlab.channels.power_normalize`, :class:`~commlab.channels.AWGN`), ``"noise"``
(the message is replaced by unit-power noise: zero capacity). Bits per message come from the real
payloads (ideal, quantise) or the capacity ``(q/2)·log2(1 + SNR)`` of the q/2 complex symbols (awgn; 0 for
noise). :func:`equal_bits_message_dim` sizes a one-way message to the interactive round's total payload.

Baselines: :class:`NoKD`, :class:`LogitKD` (Hinton et al. 2015, eq. :func:`kd_kl`), :class:`FeatureKD`
(FitNets-style regression of ``h_T`` from ``h_S`` through a learned linear adapter). Every arm has
``losses(x_lab, y_lab, x_tr, teacher_hidden, teacher_logits, generator) -> (loss, info)``, where ``info``
holds the exact bits of the step's messages; :func:`fit_distillation` trains any arm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from commlab._checks import check_choice, check_int, check_real_number, check_seed
from commlab.channels import AWGN, complex_normal, complex_to_real, power_normalize, real_to_complex
from commlab.compress import Identity, Uniform
from commlab.data.batches import EpochBatches
from commlab.models.mlp import relu_mlp

CHANNEL_KINDS = ("ideal", "quantise", "awgn", "noise")


class SplitMLP(nn.Module):
    """An MLP classifier split into ``low`` (input → last hidden layer, after its ReLU) and ``up`` (the
    output layer): ``forward(x) = up(low(x))``.

    Args:
        sizes: ``(n_in, hidden..., n_classes)`` with at least one hidden width; e.g. ``(784, 512, 512, 10)``.
        seed: initialisation seed.

    ``x`` is ``[B, ...]`` (flattened from dim 1); ``hidden(x)`` is ``[B, sizes[-2]]``; ``forward(x)`` is
    ``[B, sizes[-1]]``.
    """

    def __init__(self, sizes: Sequence[int], *, seed: int):
        super().__init__()
        if isinstance(sizes, int) or not isinstance(sizes, Sequence) or len(sizes) < 3:
            raise ValueError(f"sizes must be (n_in, hidden..., n_classes) with a hidden layer, got {sizes!r}")
        self.sizes = tuple(check_int("sizes", n, low=1) for n in sizes)
        body = relu_mlp(self.sizes[:-1], seed=seed)
        self.low = nn.Sequential(*body, nn.ReLU())
        self.up = relu_mlp(self.sizes[-2:], seed=seed + 1)

    @property
    def hidden_dim(self) -> int:
        return self.sizes[-2]

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.low(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.hidden(x))


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Hinton's distillation term ``τ²·(1/B)·Σ_b KL(softmax(t_b/τ) ‖ softmax(s_b/τ))`` (nats; scalar).

    Both inputs are logits ``[B, C]``; the teacher's side is the target (it gets gradients only if the
    caller lets it). The ``τ²`` keeps the gradient scale independent of ``τ`` (Hinton et al. 2015, §2).
    """
    tau = check_real_number("tau", tau, low=0.0, low_open=True)
    for name, z in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or not z.is_floating_point():
            raise ValueError(f"{name} must be a float tensor [B, C], got {getattr(z, 'shape', type(z).__name__)}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits {tuple(student_logits.shape)} and teacher_logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape")
    log_p_t = F.log_softmax(teacher_logits / tau, dim=1)
    log_p_s = F.log_softmax(student_logits / tau, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()   # (1/B) Σ_b Σ_c p_T (log p_T − log p_S)
    return tau**2 * kl


class MessageChannel(nn.Module):
    """The channel one message ``m`` ``[B, q]`` (one row per example) crosses; stateless.

    Args:
        kind: ``"ideal"`` (fp32 values, 32·q bits), ``"quantise"`` (:class:`~commlab.compress.Uniform` with
            ``bits`` per value: ``q·bits`` plus a 64-bit range per message), ``"awgn"`` (``q`` even: q/2
            complex symbols, unit power per symbol, AWGN at ``snr_db``; rate counted as capacity
            ``(q/2)·log2(1 + SNR)`` bits) or ``"noise"`` (output is fresh unit-power noise: 0 bits).
        bits: quantiser bit width in [1, 16] (``"quantise"`` only).
        snr_db: Es/N0 per complex symbol in dB (``"awgn"`` only).

    ``forward(m, generator) -> (received [B, q], bits)`` where ``bits`` is the exact payload size of the
    whole batch (``"awgn"``: B times the capacity per message). Gradients pass straight through the
    quantiser (``m + sg(Q(m) − m)``) and through the additive noise.
    """

    def __init__(self, kind: str = "ideal", *, bits: int | None = None, snr_db: float | None = None):
        super().__init__()
        self.kind = check_choice("kind", kind, CHANNEL_KINDS)
        if (bits is not None) != (kind == "quantise"):
            raise ValueError(f"bits is required for kind='quantise' and only for it, got kind={kind!r}, bits={bits!r}")
        if (snr_db is not None) != (kind == "awgn"):
            raise ValueError(f"snr_db is required for kind='awgn' and only for it, got kind={kind!r}, "
                             f"snr_db={snr_db!r}")
        self.bits = None if bits is None else check_int("bits", bits, low=1, high=16)
        self.snr_db = None if snr_db is None else check_real_number("snr_db", snr_db)
        self.compressor = Uniform(self.bits) if kind == "quantise" else Identity()

    def bits_per_message(self, q: int) -> float:
        """Bits one message of ``q`` values costs on this channel (capacity for ``"awgn"``, 0 for ``"noise"``)."""
        q = check_int("q", q, low=1)
        if self.kind == "awgn":
            return (q // 2) * math.log2(1.0 + 10.0 ** (self.snr_db / 10.0))   # C = log2(1 + SNR) per complex symbol
        if self.kind == "noise":
            return 0.0
        return float(self.compressor.compress(torch.zeros(1, q), torch.Generator()).bits)

    def forward(self, m: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, float]:
        if not isinstance(m, torch.Tensor) or m.dim() != 2 or not m.is_floating_point():
            raise ValueError(f"m must be a float tensor [B, q], got {getattr(m, 'shape', type(m).__name__)}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if self.kind in ("awgn", "noise") and m.shape[1] % 2:
            raise ValueError(f"kind={self.kind!r} pairs reals into complex symbols: q must be even, got {m.shape[1]}")
        if self.kind in ("ideal", "quantise"):
            payload = self.compressor.compress(m.detach(), generator)      # what crosses the wire
            received = self.compressor.decompress(payload)
            return m + (received - m).detach(), float(payload.bits)       # straight-through estimator
        if self.kind == "noise":
            noise = complex_normal((m.shape[0], m.shape[1] // 2), generator=generator)
            return complex_to_real(noise), 0.0
        z = power_normalize(real_to_complex(m))                            # (1/k) Σ |z_i|² = 1 per message
        y = AWGN(self.snr_db)(z, generator=generator)                      # y = z + w, w ~ CN(0, N0)
        return complex_to_real(y), m.shape[0] * self.bits_per_message(m.shape[1])

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}" + (f", bits={self.bits}" if self.bits else "") + (
            f", snr_db={self.snr_db}" if self.snr_db is not None else "")


def _frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def _check_batch(x_lab, y_lab, x_tr, teacher_hidden, teacher_logits) -> None:
    if not isinstance(y_lab, torch.Tensor) or y_lab.dim() != 1 or len(y_lab) != len(x_lab):
        raise ValueError(f"y_lab must be [B] labels for the {len(x_lab)} labelled examples")
    for name, t in (("teacher_hidden", teacher_hidden), ("teacher_logits", teacher_logits)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or len(t) != len(x_tr):
            raise ValueError(f"{name} must be [B, d] rows for the {len(x_tr)} transfer examples, got "
                             f"{tuple(getattr(t, 'shape', ()))}")


class NoKD(nn.Module):
    """The student alone on its labelled data: ``CE(S(x), y)``; sends nothing."""

    def __init__(self, student: SplitMLP):
        super().__init__()
        self.student = student

    def losses(self, x_lab, y_lab, x_tr, teacher_hidden, teacher_logits, generator):
        _check_batch(x_lab, y_lab, x_tr, teacher_hidden, teacher_logits)
        loss = F.cross_entropy(self.student(x_lab), y_lab)
        return loss, {"bits_up": 0.0, "bits_down": 0.0, "messages": len(x_tr)}


class LogitKD(nn.Module):
    """Hinton KD: ``(1 − λ)·CE(S(x_lab), y) + λ·kd_kl(S(x_tr), ℓ_T, τ)``; the teacher sends its fp32 logits."""

    def __init__(self, student: SplitMLP, *, tau: float = 4.0, weight: float = 0.5):
        super().__init__()
        self.student = student
        self.tau = check_real_number("tau", tau, low=0.0, low_open=True)
        self.weight = check_real_number("weight", weight, low=0.0, high=1.0)

    def losses(self, x_lab, y_lab, x_tr, teacher_hidden, teacher_logits, generator):
        _check_batch(x_lab, y_lab, x_tr, teacher_hidden, teacher_logits)
        bits = float(Identity().compress(teacher_logits).bits)                       # C fp32 values per example
        ce = F.cross_entropy(self.student(x_lab), y_lab)
        loss = (1 - self.weight) * ce + self.weight * kd_kl(self.student(x_tr), teacher_logits, self.tau)
        return loss, {"bits_up": 0.0, "bits_down": bits, "messages": len(x_tr)}


class FeatureKD(nn.Module):
    """FitNets-style feature KD: ``CE(S(x_lab), y) + μ·mean‖A(h_S) − h_T‖²`` with a learned linear adapter
    ``A: R^{d_S} → R^{d_T}``; the teacher sends its fp32 hidden state."""

    def __init__(self, student: SplitMLP, teacher_dim: int, *, weight: float = 1.0, seed: int):
        super().__init__()
        self.student = student
        self.adapter = relu_mlp((student.hidden_dim, check_int("teacher_dim", teacher_dim, low=1)), seed=seed)
        self.weight = check_real_number("weight", weight, low=0.0)

    def losses(self, x_lab, y_lab, x_tr, teacher_hidden, teacher_logits, generator):
        _check_batch(x_lab, y_lab, x_tr, teacher_hidden, teacher_logits)
        bits = float(Identity().compress(teacher_hidden).bits)
        ce = F.cross_entropy(self.student(x_lab), y_lab)
        regression = F.mse_loss(self.adapter(self.student.hidden(x_tr)), teacher_hidden)  # ‖A(h_S) − h_T‖² / d_T
        return ce + self.weight * regression, {"bits_up": 0.0, "bits_down": bits, "messages": len(x_tr)}


class MessageDistillation(nn.Module):
    """Distillation through learned messages over channels: interactive (ask, then reply) or one-way.

    Args:
        student: the student (trained).
        teacher_head: the teacher's ``T_up`` (frozen here), which processes the decoded question.
        teacher_dim: width of the teacher's hidden state ``h_T`` (the space the question is decoded into).
        n_classes: C, the width of the logits ``ℓ_T`` the reply is computed from.
        message_dim: q, the values per message (each direction).
        uplink, downlink: the :class:`MessageChannel` of each direction (``uplink`` ignored when one-way).
        interactive: ask-then-reply (True) or the teacher's reply alone (False).
        tau: temperature τ; weight: λ of the student's reply term; ask_weight: β of the question term.
        width: hidden width of the four message maps.
        seed: initialisation seed of the message maps.

    Shapes: ``x`` ``[B, ...]``, messages ``[B, q]``, ``h̃_T`` ``[B, teacher_dim]``, ``ℓ_T``, ``ℓ̃_T``, ``t̂`` ``[B, C]``.
    The module's ``state_dict`` holds the student and the four maps (the teacher head's frozen copy too).
    """

    def __init__(self, student: SplitMLP, teacher_head: nn.Module, *, teacher_dim: int, n_classes: int,
                 message_dim: int,
                 uplink: MessageChannel, downlink: MessageChannel, interactive: bool = True, tau: float = 4.0,
                 weight: float = 0.5, ask_weight: float = 1.0, width: int = 64, seed: int):
        super().__init__()
        if not isinstance(student, SplitMLP):
            raise TypeError(f"student must be a SplitMLP, got {type(student).__name__}")
        for name, channel in (("uplink", uplink), ("downlink", downlink)):
            if not isinstance(channel, MessageChannel):
                raise TypeError(f"{name} must be a MessageChannel, got {type(channel).__name__}")
        self.student = student
        self.teacher_head = _frozen(teacher_head)
        self.teacher_dim = check_int("teacher_dim", teacher_dim, low=1)
        self.n_classes = c = check_int("n_classes", n_classes, low=1)
        self.message_dim = q = check_int("message_dim", message_dim, low=1)
        self.interactive = bool(interactive)
        self.uplink, self.downlink = uplink, downlink
        self.tau = check_real_number("tau", tau, low=0.0, low_open=True)
        self.weight = check_real_number("weight", weight, low=0.0, high=1.0)
        self.ask_weight = check_real_number("ask_weight", ask_weight, low=0.0)
        width = check_int("width", width, low=1)
        d_s, d_t = student.hidden_dim, self.teacher_dim
        seed = check_seed(seed)
        self.reply_head = relu_mlp((d_s, c), seed=seed + 4)
        self.enc_t = relu_mlp((2 * c if self.interactive else c, width, q), seed=seed + 2)
        self.dec_s = relu_mlp((q, width, c), seed=seed + 3)
        nn.init.zeros_(self.dec_s[-1].weight)
        nn.init.zeros_(self.dec_s[-1].bias)
        if self.interactive:
            self.enc_s = relu_mlp((d_s, width, q), seed=seed)
            self.dec_t = relu_mlp((q, width, d_t), seed=seed + 1)

    def round(self, x: torch.Tensor, teacher_logits: torch.Tensor, generator: torch.Generator) -> dict:
        """One exchange for the transfer batch ``x`` given the teacher's logits ``ℓ_T`` on it; returns the tensors
        of the module docstring's protocol (``h_s``, ``logits_s``, ``h_t_read`` and ``logits_t_read`` when
        interactive, ``reply_logits``) and the exact ``bits_up`` / ``bits_down`` of the batch's
        messages."""
        h_s = self.student.hidden(x)
        out = {"h_s": h_s, "logits_s": self.student.up(h_s), "bits_up": 0.0}
        if self.interactive:
            m_s = self.enc_s(h_s.detach())                                 # m_S = enc_S(sg(h_S))
            r_s, out["bits_up"] = self.uplink(m_s, generator)              # r_S = uplink(m_S)
            out["h_t_read"] = h_t_read = self.dec_t(r_s)                   # h̃_T = dec_T(r_S)
            out["logits_t_read"] = read = self.teacher_head(h_t_read)      # ℓ̃_T = T_up(h̃_T)
            m_t = self.enc_t(torch.cat([teacher_logits, read], dim=1))     # m_T = enc_T([ℓ_T, ℓ̃_T])
        else:
            m_t = self.enc_t(teacher_logits)                               # m_T = enc_T(ℓ_T)
        r_t, out["bits_down"] = self.downlink(m_t, generator)              # r_T = downlink(m_T)
        out["reply_logits"] = self.dec_s(r_t)                               # t̂ = dec_S(r_T)
        return out

    def losses(self, x_lab, y_lab, x_tr, teacher_hidden, teacher_logits, generator):
        _check_batch(x_lab, y_lab, x_tr, teacher_hidden, teacher_logits)
        if teacher_logits.shape[1] != self.n_classes:
            raise ValueError(f"teacher_logits must have {self.n_classes} columns, got {teacher_logits.shape[1]}")
        r = self.round(x_tr, teacher_logits, generator)
        ce = F.cross_entropy(self.student(x_lab), y_lab)
        learn = kd_kl(self.reply_head(r["h_s"]), r["reply_logits"].detach(), self.tau)  # τ² KL(sg(t̂) ‖ A(h_S))
        codec = kd_kl(r["reply_logits"], teacher_logits, self.tau)            # τ² KL(ℓ_T ‖ t̂): the reply carries ℓ_T
        if self.interactive:                                                  # + β τ² KL(sg(ℓ_S) ‖ ℓ̃_T): the question
            codec = codec + self.ask_weight * kd_kl(r["logits_t_read"], r["logits_s"].detach(), self.tau)
        loss = (1 - self.weight) * ce + self.weight * learn + codec
        return loss, {"bits_up": r["bits_up"], "bits_down": r["bits_down"], "messages": len(x_tr)}


def equal_bits_message_dim(message_dim: int, uplink: MessageChannel, downlink: MessageChannel) -> int:
    """The one-way message width q' whose downlink payload equals the interactive round's total
    (``bits(q') = bits_up(q) + bits_down(q)``), found from the channels' payload sizes.

    Raises ValueError when no integer q' matches exactly (e.g. for capacity-counted channels)."""
    message_dim = check_int("message_dim", message_dim, low=1)
    target = uplink.bits_per_message(message_dim) + downlink.bits_per_message(message_dim)
    for width in range(1, 64 * message_dim + 1):
        bits = downlink.bits_per_message(width)
        if bits == target:
            return width
        if bits > target:
            break
    raise ValueError(f"no one-way message width has exactly {target} bits on {downlink!r}")


def fit_distillation(arm: nn.Module, labelled: tuple[torch.Tensor, torch.Tensor], transfer: torch.Tensor,
                     teacher_hidden: torch.Tensor, teacher_logits: torch.Tensor, *, steps: int, batch_size: int,
                     transfer_batch: int, lr: float, generator: torch.Generator) -> dict:
    """Train ``arm`` (any class of this module) with Adam for ``steps`` steps.

    Each step draws a labelled batch (``batch_size`` of ``labelled = (x [N, ...], y [N])``) and a transfer batch
    (``transfer_batch`` rows of ``transfer`` ``[M, ...]`` with the frozen teacher's ``teacher_hidden`` ``[M, d_T]``
    and ``teacher_logits`` ``[M, C]`` precomputed), both from reshuffled epochs of ``generator``, which also
    draws the channels' randomness. Returns ``{"loss": [steps], "bits_up", "bits_down"`` (totals over the run),
    ``"messages"`` (examples exchanged), ``"bits_up_per_sample"``, ``"bits_down_per_sample"}``.
    """
    if not hasattr(arm, "losses"):
        raise TypeError(f"arm must be one of this module's distillation arms, got {type(arm).__name__}")
    x_lab, y_lab = labelled
    if len(x_lab) != len(y_lab):
        raise ValueError(f"labelled images and labels differ in length: {len(x_lab)} and {len(y_lab)}")
    if not len(transfer) == len(teacher_hidden) == len(teacher_logits):
        raise ValueError("transfer, teacher_hidden and teacher_logits must have one row per transfer example")
    steps = check_int("steps", steps, low=1)
    lr = check_real_number("lr", lr, low=0.0, low_open=True)
    params = [p for p in arm.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    lab_batches = EpochBatches(len(y_lab), batch_size, generator)
    tr_batches = EpochBatches(len(transfer), transfer_batch, generator)
    arm.train()
    history = {"loss": [], "bits_up": 0.0, "bits_down": 0.0, "messages": 0}
    for _ in range(steps):
        i, j = next(lab_batches), next(tr_batches)
        loss, info = arm.losses(x_lab[i], y_lab[i], transfer[j], teacher_hidden[j], teacher_logits[j], generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history["loss"].append(loss.item())
        for key in ("bits_up", "bits_down", "messages"):
            history[key] += info[key]
    arm.eval()
    history["bits_up_per_sample"] = history["bits_up"] / history["messages"]
    history["bits_down_per_sample"] = history["bits_down"] / history["messages"]
    return history
