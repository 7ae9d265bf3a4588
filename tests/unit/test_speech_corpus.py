"""commlab.data.speech: espeak-ng synthesis (deterministic, resampled to 16 kHz, cached by text, arguments and
version), the WAV-header check, the timeout and the missing-program error — real espeak-ng where installed,
a fake program on a temporary PATH otherwise."""

import shutil
import stat
import sys
import textwrap

import numpy as np
import pytest

from commlab.data import speech
from commlab.data.provision import DataUnavailable

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def fake_espeak(folder, *, rate=22050, channels=1, seconds=0.5, version="fake 1.0", sleep=0.0):
    """An ``espeak-ng`` stand-in: writes a WAV of a sine whose frequency depends on the text."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "espeak-ng"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys, time, wave, math, struct
        if sys.argv[1:] == ["--version"]:
            print({version!r}); sys.exit(0)
        time.sleep({sleep})
        out = sys.argv[sys.argv.index("-w") + 1]; text = sys.argv[-1]
        f = 200 + 10 * len(text); n = int({rate} * {seconds})
        with wave.open(out, "wb") as w:
            w.setnchannels({channels}); w.setsampwidth(2); w.setframerate({rate})
            w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * f * i / {rate})))
                                   for i in range(n)) * {channels})
        """))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.fixture
def fake_path(tmp_path, monkeypatch):
    def install(**kw):
        fake_espeak(tmp_path / "bin", **kw)
        monkeypatch.setenv("PATH", str(tmp_path / "bin"))
        speech._version.cache_clear()
    yield install
    speech._version.cache_clear()


@needs_espeak
def test_real_synthesis_is_deterministic_16khz_and_cached(tmp_path):
    u = speech.Utterance("left right", speed=150, pitch=40, voice="en-us+m3")
    a = speech.synthesize(u, cache_dir=tmp_path / "a")
    b = speech.synthesize(u, cache_dir=tmp_path / "b")  # a fresh synthesis, not the cache
    assert a.dtype == np.float32 and a.ndim == 1
    np.testing.assert_array_equal(a, b)
    assert 0.3 < len(a) / 16000 < 3.0 and 0 < np.abs(a).max() <= 1.0
    hit = speech.synthesize(u, cache_dir=tmp_path / "a")
    np.testing.assert_array_equal(hit, a)
    assert len(list((tmp_path / "a").glob("*.npy"))) == 1
    other = speech.synthesize(speech.Utterance("left right", speed=190, pitch=40, voice="en-us+m3"),
                              cache_dir=tmp_path / "a")
    assert len(other) < len(a)  # faster speech is shorter, and a separate cache entry
    assert len(list((tmp_path / "a").glob("*.npy"))) == 2


def test_resampled_rate_and_length_match_resample_poly(fake_path, tmp_path):
    from scipy.signal import resample_poly

    fake_path(seconds=0.5)
    y = speech.synthesize(speech.Utterance("go"), cache_dir=tmp_path / "c")
    assert len(y) == 8000  # 11,025 samples at 22.05 kHz -> 0.5 s at 16 kHz
    x = np.array([int(8000 * np.sin(2 * np.pi * 220 * i / 22050)) for i in range(11025)]) / 32768.0
    np.testing.assert_allclose(y, resample_poly(x, 320, 441).astype(np.float32), atol=1e-6)


def test_cache_hit_returns_identical_arrays_without_running_the_program(fake_path, tmp_path):
    fake_path()
    u = speech.Utterance("stop")
    first = speech.synthesize(u, cache_dir=tmp_path / "c")
    (tmp_path / "bin" / "espeak-ng").write_text("#!/bin/sh\nexit 3\n")  # would fail if it were run again
    np.testing.assert_array_equal(speech.synthesize(u, cache_dir=tmp_path / "c"), first)
    with pytest.raises(RuntimeError, match="exit 3"):
        speech.synthesize(u, cache_dir=tmp_path / "c", use_cache=False)


def test_cache_key_covers_text_arguments_rate_and_version():
    u = speech.Utterance("yes", speed=150)
    base = speech.cache_key(u, 16000, "1.51")
    assert base == speech.cache_key(speech.Utterance("yes", speed=150), 16000, "1.51")
    for other in (speech.cache_key(speech.Utterance("no", speed=150), 16000, "1.51"),
                  speech.cache_key(speech.Utterance("yes", speed=151), 16000, "1.51"),
                  speech.cache_key(speech.Utterance("yes", speed=150, voice="en+m5"), 16000, "1.51"),
                  speech.cache_key(u, 8000, "1.51"), speech.cache_key(u, 16000, "1.52")):
        assert other != base


def test_a_new_version_is_a_cache_miss(fake_path, tmp_path):
    fake_path(version="fake 1.0")
    speech.synthesize(speech.Utterance("up"), cache_dir=tmp_path / "c")
    fake_path(version="fake 2.0")
    speech.synthesize(speech.Utterance("up"), cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("*.npy"))) == 2


def test_wrong_wav_header_is_refused(fake_path, tmp_path):
    fake_path(rate=16000)
    with pytest.raises(ValueError, match="22050 Hz"):
        speech.synthesize(speech.Utterance("up"), cache_dir=tmp_path / "c")
    fake_path(channels=2)
    with pytest.raises(ValueError, match="2 channel"):
        speech.synthesize(speech.Utterance("up"), cache_dir=tmp_path / "c")


def test_timeout_is_a_clear_error(fake_path, tmp_path):
    fake_path(sleep=5.0)
    with pytest.raises(RuntimeError, match="ran past"):
        speech.synthesize(speech.Utterance("up"), cache_dir=tmp_path / "c", timeout=0.5)


def test_missing_program_names_make_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DataUnavailable, match="make data"):
        speech.synthesize(speech.Utterance("up"), cache_dir=tmp_path / "c")
    with pytest.raises(DataUnavailable, match="make data"):
        speech.espeak_corpus([speech.Utterance("up")], cache_dir=tmp_path / "c")


def test_corpus_and_command_utterances(fake_path, tmp_path):
    fake_path(seconds=0.1)
    us = speech.command_utterances(12, np.random.default_rng(3))
    assert us == speech.command_utterances(12, np.random.default_rng(3))
    for u in us:
        assert 1 <= len(u.text.split()) <= 4 and set(u.text.split()) <= set(speech.COMMANDS)
        assert 120 <= u.speed <= 200 and 30 <= u.pitch <= 70 and u.voice in speech.VOICES
    corpus = speech.espeak_corpus(us, cache_dir=tmp_path / "c")
    assert len(corpus) == 12 and corpus.texts == [u.text for u in us] and corpus.sample_rate == 16000
    assert corpus.version == "fake 1.0" and all(len(w) == 1600 for w in corpus.waves)


@pytest.mark.parametrize("kw", [{"text": ""}, {"text": "-v evil"}, {"text": "a\nb"}, {"text": "x", "pitch": 120},
                                {"text": "x", "speed": 10}, {"text": "x", "voice": "en us"}])
def test_bad_utterances_raise(kw):
    with pytest.raises((ValueError, TypeError)):
        speech.Utterance(**kw)
