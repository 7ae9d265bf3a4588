"""commlab.semcom.speech: log-mel frontend, CTC greedy decoding and token selection, the alphabet, the tiny CTC
model and its two training stages, the per-feature channel codec and the error-rate metrics."""

import numpy as np
import pytest
import torch

from commlab.channels import AWGN
from commlab.semcom import speech as sp


def test_mel_filterbank_shape_and_triangles():
    fb = sp.mel_filterbank(40, 512, 16000)
    assert fb.shape == (40, 257) and float(fb.min()) >= 0 and float(fb.max()) <= 1 + 1e-6
    peaks = fb.argmax(dim=1)
    assert bool((peaks[1:] > peaks[:-1]).all())  # centres increase with the filter index
    with pytest.raises(ValueError):
        sp.mel_filterbank(40, 512, 16000, fmin=9000.0)


def test_log_mel_frames_and_tone_energy_lands_in_the_right_band():
    sr = 16000
    t = np.arange(sr) / sr
    low, high = np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 4000 * t)
    m_low, m_high = sp.log_mel(low), sp.log_mel(high)
    assert m_low.shape == (1 + sr // 160, 40)
    assert int(m_low[50].argmax()) < int(m_high[50].argmax())
    fb = sp.mel_filterbank(40, 512, sr)
    assert int(m_high[50].argmax()) == int(fb[:, round(4000 / (sr / 512))].argmax())
    with pytest.raises(ValueError):
        sp.log_mel(np.zeros((2, 10)))


def test_ctc_greedy_and_token_frames():
    frames = [0, 3, 3, 0, 3, 1, 1, 0, 0, 2, 2]
    assert sp.ctc_greedy(frames) == [3, 3, 1, 2]
    assert sp.token_frames(frames) == [1, 4, 5, 9]
    assert [frames[t] for t in sp.token_frames(frames)] == sp.ctc_greedy(frames)
    assert sp.ctc_greedy(torch.tensor([0, 0, 0])) == [] and sp.token_frames([5]) == [0]


def test_alphabet_round_trip_and_unknown_characters():
    a = sp.CharAlphabet.from_texts(["go up", "no"])
    assert a.chars == " gnopu" and a.n_labels == 7
    assert a.decode(a.encode("up go")) == "up go" and min(a.encode("up go")) == 1
    assert a.decode([0, a.encode("g")[0], 0]) == "g"
    with pytest.raises(ValueError):
        a.encode("yes")
    with pytest.raises(ValueError):
        sp.CharAlphabet("aa")


def test_edit_distance_cer_wer():
    assert sp.edit_distance("kitten", "sitting") == 3
    assert sp.edit_distance("", "abc") == 3 and sp.edit_distance("abc", "abc") == 0
    assert sp.cer(["ab", "cd"], ["ab", "c"]) == pytest.approx(1 / 4)
    assert sp.wer(["go up now"], ["go down now"]) == pytest.approx(1 / 3)
    assert sp.wer(["go up"], [""]) == 1.0
    with pytest.raises(ValueError):
        sp.cer(["a"], ["a", "b"])


@pytest.mark.parametrize("recurrent", [True, False])
def test_tiny_ctc_shapes_padding_and_parameter_count(recurrent):
    torch.manual_seed(0)
    model = sp.TinyCTC(n_labels=12, recurrent=recurrent).eval()
    assert 50_000 < sum(p.numel() for p in model.parameters()) < 150_000
    x = torch.randn(2, 30, 40)
    lengths = torch.tensor([30, 20])
    out = model(x, lengths)
    assert out.shape == (2, 30, 12) and model.features(x, lengths).shape == (2, 30, 128)
    alone = model(x[1:, :20], torch.tensor([20]))  # padding does not change the shorter utterance's output
    torch.testing.assert_close(out[1, :20], alone[0], atol=1e-5, rtol=1e-5)
    feats = sp.frame_features(model, [x[0], x[1, :20]])
    assert [f.shape for f in feats] == [(30, 128), (20, 128)]
    with pytest.raises(ValueError):
        model(torch.randn(2, 30, 39), lengths)
    with pytest.raises(ValueError):
        sp.TinyCTC(n_labels=12, recurrent=False, dilations=())


def _toy_task(n=16, seed=0):
    """Frames whose spectrum encodes a label sequence: label c lights mel bin 3c for 4 frames, gaps are silent."""
    rng = np.random.default_rng(seed)
    mels, targets = [], []
    for _ in range(n):
        seq = list(rng.integers(1, 5, size=rng.integers(1, 4)))
        frames = [np.zeros(40)] * 2
        for c in seq:
            on = np.zeros(40)
            on[3 * c] = 5.0
            frames += [on] * 4 + [np.zeros(40)] * 2
        mels.append(torch.tensor(np.stack(frames) + 0.05 * rng.standard_normal((len(frames), 40)),
                                 dtype=torch.float32))
        targets.append([int(c) for c in seq])
    return mels, targets


def test_train_ctc_learns_a_toy_task_and_is_seeded():
    mels, targets = _toy_task()
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = sp.TinyCTC(n_labels=5, channels=16, hidden=16, recurrent=False)
        losses = sp.train_ctc(model, mels, targets, steps=300, batch_size=8, lr=1e-2,
                              generator=torch.Generator().manual_seed(1))
        runs.append(losses)
    assert runs[0] == runs[1]
    assert np.mean(runs[0][-10:]) < 0.5 < np.mean(runs[0][:5])
    feats = sp.frame_features(model, mels)
    decoded = [sp.ctc_greedy(model.head(f).argmax(-1)) for f in feats]
    assert np.mean([d == t for d, t in zip(decoded, targets, strict=True)]) >= 0.8


def test_feature_codec_unit_power_and_training_reduces_loss():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 5)
    codec = sp.FeatureCodec(8, k=4, hidden=32)
    f = torch.randn(256, 8)
    z = codec.encode(f)
    assert z.shape == (256, 4) and z.is_complex()
    torch.testing.assert_close(z.abs().square().mean(dim=1), torch.ones(256))
    channel = AWGN(10.0)
    g = torch.Generator().manual_seed(0)
    losses = sp.train_codec(codec, head, f, channel, snr_range=(10.0, 20.0), steps=300, batch_size=64, lr=3e-3,
                            generator=g)
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:5])
    assert not any(p.requires_grad for p in head.parameters())
    with torch.no_grad():
        y = head(codec(f, channel, generator=torch.Generator().manual_seed(5), snr_db=20.0)).argmax(-1)
    assert float((y == head(f).argmax(-1)).float().mean()) > 0.8
    blankless = sp.train_codec(sp.FeatureCodec(8, k=4), head, f, channel, snr_range=(10.0, 20.0), steps=5,
                               batch_size=16, lr=1e-3, generator=g, exclude_blank=True)
    assert len(blankless) == 5
