"""train.lm: sequence windows are next-character pairs, train_lm's schedule and that it learns a periodic
text, bits_per_char_at against the direct definition, and argument checks."""

import math

import pytest
import torch

from commlab.data.text import TextCorpus
from commlab.models.transformer import TinyTransformer
from commlab.train.lm import bits_per_char_at, sequence_batch, sequence_windows, train_lm


def corpus(text="abcdefgh" * 40):
    ids = torch.tensor([ord(c) - 96 for c in text], dtype=torch.uint8)
    return TextCorpus(ids=ids, files=(), sha256="", python_version="")


def model():
    return TinyTransformer(vocab=11, d_model=16, n_layers=1, n_heads=2, context=8,
                           generator=torch.Generator().manual_seed(0))


def test_windows_are_inputs_and_the_next_characters():
    c = corpus()
    x, y = sequence_windows(c, torch.tensor([0, 3]), 5)
    assert x.tolist() == [[1, 2, 3, 4, 5], [4, 5, 6, 7, 8]] and y.tolist() == [[2, 3, 4, 5, 6], [5, 6, 7, 8, 1]]
    x, y = sequence_batch(c, (2, 3), 4, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (2, 3, 4) and torch.equal(x[..., 1:], y[..., :-1])
    assert torch.equal(((x % 8) + 1), y)  # the period-8 text's next character


def test_train_lm_learns_a_periodic_text_and_follows_its_schedule():
    c, m = corpus(), model()
    starts = torch.arange(0, 200, 7)
    before = bits_per_char_at(m, c, starts, 8)
    seen = []

    def batches(t):
        seen.append(t)
        return sequence_batch(c, 16, 8, torch.Generator().manual_seed(t))

    losses = train_lm(m, batches, steps=60, lr=1e-2, warmup=5)
    after = bits_per_char_at(m, c, starts, 8)
    assert seen == list(range(60)) and len(losses) == 60
    assert before > 3.0 and after < 0.6 * before and losses[-1] < losses[0]


def test_the_learning_rate_warms_up_then_decays_to_the_final_fraction():
    m = model()
    lrs = []
    real = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return real(self, *args, **kwargs)

    torch.optim.AdamW.step = spy
    try:
        train_lm(m, lambda t: sequence_batch(corpus(), 2, 8, torch.Generator().manual_seed(t)), steps=12, lr=1.0,
                 warmup=2, final_fraction=0.25)
    finally:
        torch.optim.AdamW.step = real
    assert lrs[:3] == [0.5, 1.0, 1.0]
    assert lrs[-1] == pytest.approx(0.25) and all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    assert lrs[7] == pytest.approx(0.25 + 0.75 * 0.5 * (1 + math.cos(math.pi * 5 / 9)))


def test_bits_per_char_is_the_mean_cross_entropy_over_ln_two():
    c, m = corpus(), model()
    starts = torch.tensor([0, 5, 11, 40])
    x, y = sequence_windows(c, starts, 8)
    direct = float(-m.token_log_probs(x, y).detach().double().mean()) / math.log(2)
    assert bits_per_char_at(m, c, starts, 8, chunk=3) == pytest.approx(direct, rel=1e-6)


def test_bad_arguments_are_refused():
    m = model()
    with pytest.raises(ValueError, match="steps"):
        train_lm(m, lambda t: None, steps=0, lr=1.0)
    with pytest.raises(ValueError, match="warmup"):
        train_lm(m, lambda t: None, steps=3, lr=1.0, warmup=3)
    with pytest.raises(TypeError, match="batches"):
        train_lm(m, None, steps=3, lr=1.0)
    with pytest.raises(ValueError, match="final_fraction"):
        train_lm(m, lambda t: None, steps=3, lr=1.0, final_fraction=1.5)
    with pytest.raises(ValueError, match="empty"):
        bits_per_char_at(m, corpus(), torch.tensor([], dtype=torch.int64), 8)
    for p in m.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        train_lm(m, lambda t: None, steps=3, lr=1.0)
