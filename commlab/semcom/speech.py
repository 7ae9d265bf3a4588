"""Speech semantic transmission: log-mel frontend, a tiny CTC recogniser, token selection, per-feature channel codec.

The mechanism of Han et al. (2022, "Semantic-preserved communication system for highly efficient speech
transmission"), reconstructed at toy scale (brief ``semcom/speech_semantic_transmission``):

* :func:`log_mel` — 40-dim log-mel frames, 25 ms Hann window, 10 ms hop (``[n_frames, n_mels]``);
* :class:`CharAlphabet` — characters <-> CTC labels (label 0 is the blank);
* :class:`TinyCTC` — 2 conv + 1 BiGRU semantic encoder giving frame features ``f_t`` and a CTC head;
  :func:`train_ctc` trains it (stage 1);
* :func:`ctc_greedy` (collapse repeats, drop blanks) and :func:`token_frames` (redundancy removal: the frames
  whose argmax is a non-blank label that differs from the previous frame's label, one per emitted token);
* :class:`FeatureCodec` — dense channel encoder (``k`` complex symbols per feature, unit power per symbol) and
  decoder; :func:`train_codec` trains it on frozen features (stage 2, distilled from the frozen head);
* :func:`edit_distance`, :func:`cer`, :func:`wer` — error rates in edits per reference character / word.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from commlab._checks import check_int
from commlab.channels import PowerNorm, complex_to_real, real_to_complex
from commlab.semcom.metrics import cer, edit_distance, wer  # noqa: F401 (re-exported: the speech metrics)

# ---------------------------------------------------------------------------------------------- frontend


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, fmin: float = 0.0, fmax: float | None = None
                   ) -> torch.Tensor:
    """Triangular HTK mel filters, ``[n_mels, n_fft // 2 + 1]``; ``mel(f) = 2595·log10(1 + f/700)``."""
    n_mels = check_int("n_mels", n_mels, low=1)
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={fmin}, fmax={fmax}")
    mel = np.linspace(2595 * np.log10(1 + fmin / 700), 2595 * np.log10(1 + fmax / 700), n_mels + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    fb = np.maximum(0.0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))
    return torch.tensor(fb, dtype=torch.float32)


def log_mel(wave, sample_rate: int = 16000, n_mels: int = 40, win_ms: float = 25.0, hop_ms: float = 10.0,
            n_fft: int = 512, eps: float = 1e-6) -> torch.Tensor:
    """``log(mel power + eps)`` frames of a mono waveform: ``[n_samples]`` -> ``[1 + n_samples // hop, n_mels]``."""
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    if x.ndim != 1 or x.numel() == 0:
        raise ValueError(f"wave must be a non-empty 1-D signal, got shape {tuple(x.shape)}")
    win, hop = round(sample_rate * win_ms / 1000), round(sample_rate * hop_ms / 1000)
    if win > n_fft:
        raise ValueError(f"window ({win} samples) longer than n_fft={n_fft}")
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=win, window=torch.hann_window(win), center=True,
                      return_complex=True)
    power = spec.abs().square()  # [n_fft//2+1, frames]
    return torch.log(mel_filterbank(n_mels, n_fft, sample_rate) @ power + eps).T.contiguous()


# ---------------------------------------------------------------------------------------------- labels


class CharAlphabet:
    """Characters to CTC labels ``1..len(chars)``; label 0 is the CTC blank."""

    def __init__(self, chars: str):
        if not chars or len(set(chars)) != len(chars):
            raise ValueError(f"chars must be non-empty and distinct, got {chars!r}")
        self.chars = chars
        self._index = {c: i + 1 for i, c in enumerate(chars)}

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> CharAlphabet:
        return cls("".join(sorted(set("".join(texts)))))

    @property
    def n_labels(self) -> int:
        """Number of CTC classes, blank included."""
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        unknown = set(text) - set(self.chars)
        if unknown:
            raise ValueError(f"characters {sorted(unknown)} are not in the alphabet {self.chars!r}")
        return [self._index[c] for c in text]

    def decode(self, labels: Sequence[int]) -> str:
        return "".join(self.chars[int(i) - 1] for i in labels if int(i) != 0)


def ctc_greedy(frame_labels: Sequence[int] | torch.Tensor) -> list[int]:
    """Greedy CTC decoding of per-frame argmax labels: collapse repeats, then drop blanks (label 0)."""
    frame_labels = [int(v) for v in frame_labels]
    return [frame_labels[t] for t in token_frames(frame_labels)]


def token_frames(frame_labels: Sequence[int] | torch.Tensor) -> list[int]:
    """Redundancy removal: indices of frames whose label is non-blank and differs from the previous frame's.

    One frame per emitted token, so ``[frame_labels[t] for t in token_frames(l)] == ctc_greedy(l)``.
    """
    frame_labels = [int(v) for v in frame_labels]
    return [t for t, v in enumerate(frame_labels) if v != 0 and (t == 0 or v != frame_labels[t - 1])]


# ---------------------------------------------------------------------------------------------- model


class TinyCTC(nn.Module):
    """Semantic encoder (2 conv1d + 1 BiGRU, or with ``recurrent=False`` dilated convs in place of the BiGRU)
    producing frame features, and a linear CTC head.

    ``features(mels, lengths)``: ``[B, T, n_mels]`` -> ``[B, T, 2·hidden]`` (the frame features ``f_t``);
    ``head(f)``: ``[..., 2·hidden]`` -> ``[..., n_labels]`` logits; ``forward`` = ``head(features(...))``.
    Inputs are normalised by ``mean`` / ``std`` buffers (set them from training data); frames past each
    utterance's length are masked, so an utterance's output does not depend on the padding of its batch.
    """

    def __init__(self, n_labels: int, n_mels: int = 40, channels: int = 64, hidden: int = 64, kernel: int = 5,
                 recurrent: bool = True, dilations: Sequence[int] = (2, 4, 8)):
        super().__init__()
        self.n_labels, self.n_mels = check_int("n_labels", n_labels, low=2), check_int("n_mels", n_mels, low=1)
        self.conv = nn.ModuleList([nn.Conv1d(n_mels, channels, kernel, padding=kernel // 2),
                                   nn.Conv1d(channels, channels, kernel, padding=kernel // 2)])
        self.recurrent = bool(recurrent)
        if self.recurrent:
            self.gru = nn.GRU(channels, hidden, batch_first=True, bidirectional=True)
        else:  # a cheaper context model: dilated convs (kernel 3) widening the receptive field, then 2·hidden outputs
            if not dilations:
                raise ValueError("a non-recurrent TinyCTC needs at least one dilation")
            widths = [channels] * len(dilations) + [2 * hidden]
            self.context = nn.ModuleList([nn.Conv1d(widths[i], widths[i + 1], 3, padding=d, dilation=d)
                                          for i, d in enumerate(dilations)])
        self.head = nn.Linear(2 * hidden, n_labels)
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def features(self, mels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if mels.ndim != 3 or mels.shape[-1] != self.n_mels:
            raise ValueError(f"mels must be [batch, frames, {self.n_mels}], got {tuple(mels.shape)}")
        valid = (torch.arange(mels.shape[1], device=mels.device)[None, :] < lengths.to(mels.device)[:, None])
        valid = valid[:, None, :].to(mels.dtype)  # [B, 1, T]: padding is zeroed before and after each conv
        h = ((mels - self.mean) / self.std).transpose(1, 2) * valid
        for conv in self.conv:
            h = torch.relu(conv(h)) * valid
        if not self.recurrent:
            for conv in self.context:
                h = torch.relu(conv(h)) * valid
            return h.transpose(1, 2)
        h = h.transpose(1, 2)
        packed = nn.utils.rnn.pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=mels.shape[1])[0]

    def forward(self, mels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(mels, lengths))


def pad_batch(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad ``[T_i, D]`` tensors into ``[B, max T, D]`` and return it with the lengths ``[B]`` (int64)."""
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.int64)
    return nn.utils.rnn.pad_sequence(list(seqs), batch_first=True), lengths


def train_ctc(model: TinyCTC, mels: Sequence[torch.Tensor], targets: Sequence[Sequence[int]], *, steps: int,
              batch_size: int, lr: float, generator: torch.Generator, spec_noise: float = 0.0) -> list[float]:
    """Stage 1: Adam on the CTC loss (blank 0, mean over the batch of per-utterance loss / target length).

    ``spec_noise`` adds Gaussian noise of that standard deviation to the normalised log-mels during training.
    Sets ``model.mean`` / ``model.std`` from ``mels`` first. Returns the loss of each step.
    """
    steps, batch_size = check_int("steps", steps, low=1), check_int("batch_size", batch_size, low=1)
    if len(mels) != len(targets) or not mels:
        raise ValueError("mels and targets must be non-empty and of equal length")
    allf = torch.cat(list(mels))
    model.mean.copy_(allf.mean(0))
    model.std.copy_(allf.std(0).clamp_min(1e-3))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(mels), (min(batch_size, len(mels)),), generator=generator).tolist()
        x, lengths = pad_batch([mels[i] for i in idx])
        if spec_noise > 0:
            x = x + spec_noise * model.std * torch.randn(x.shape, generator=generator)
        tgt = [torch.tensor(targets[i], dtype=torch.int64) for i in idx]
        logp = F.log_softmax(model(x, lengths), dim=-1).transpose(0, 1)  # [T, B, C]
        loss = F.ctc_loss(logp, torch.cat(tgt), lengths, torch.tensor([len(t) for t in tgt]), blank=0,
                          zero_infinity=True)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def frame_features(model: TinyCTC, mels: Sequence[torch.Tensor], batch_size: int = 64) -> list[torch.Tensor]:
    """Frame features ``[T_i, feature_dim]`` of each utterance (eval mode, no gradients)."""
    model.eval()
    out = []
    for s in range(0, len(mels), batch_size):
        chunk = list(mels[s:s + batch_size])
        x, lengths = pad_batch(chunk)
        f = model.features(x, lengths)
        out += [f[i, :n] for i, n in enumerate(lengths.tolist())]
    return out


# ---------------------------------------------------------------------------------------------- channel codec


class FeatureCodec(nn.Module):
    """Per-feature analog channel code: ``feature_dim`` reals -> ``k`` complex symbols of unit mean power
    (``(1/k)·Σ|z_i|² = 1`` per feature, :class:`~commlab.channels.PowerNorm`) -> channel -> feature estimate.

    ``encode``: ``[N, feature_dim]`` -> complex ``[N, k]``; ``decode``: complex ``[N, k]`` -> ``[N, feature_dim]``.
    """

    def __init__(self, feature_dim: int, k: int, hidden: int = 128):
        super().__init__()
        self.k = check_int("k", k, low=1)
        self.enc = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * k))
        self.dec = nn.Sequential(nn.Linear(2 * k, hidden), nn.ReLU(), nn.Linear(hidden, feature_dim))
        self.norm = PowerNorm()

    def encode(self, f: torch.Tensor) -> torch.Tensor:
        return self.norm(real_to_complex(self.enc(f)))

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        return self.dec(complex_to_real(y))

    def forward(self, f: torch.Tensor, channel: Callable, *, generator: torch.Generator, snr_db) -> torch.Tensor:
        return self.decode(channel(self.encode(f), generator=generator, snr_db=snr_db))


def train_codec(codec: FeatureCodec, head: nn.Module, features: torch.Tensor, channel: Callable, *,
                snr_range: tuple[float, float], steps: int, batch_size: int, lr: float,
                generator: torch.Generator, exclude_blank: bool = False) -> list[float]:
    """Stage 2: train the codec through ``channel`` at SNRs uniform in ``snr_range`` (dB, one per feature) so
    that the frozen ``head`` classifies the received features as it does the clean ones (cross-entropy to
    the clean argmax; ``exclude_blank``: the blank logit is removed, for token-level features).

    ``features``: ``[N, feature_dim]`` (frozen). Returns the loss of each step.
    """
    steps, batch_size = check_int("steps", steps, low=1), check_int("batch_size", batch_size, low=1)
    for p in head.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        logits = head(features)
        if exclude_blank:
            logits = logits[:, 1:]
        labels = logits.argmax(-1)
    opt = torch.optim.Adam(codec.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        idx = torch.randint(features.shape[0], (batch_size,), generator=generator)
        snr = snr_range[0] + (snr_range[1] - snr_range[0]) * torch.rand(batch_size, generator=generator)
        out = head(codec(features[idx], channel, generator=generator, snr_db=snr))
        if exclude_blank:
            out = out[:, 1:]
        loss = F.cross_entropy(out, labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
