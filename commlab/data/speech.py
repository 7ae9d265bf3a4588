"""Synthetic speech from espeak-ng, resampled to 16 kHz and cached (conventions §3.5).

espeak-ng is called as a subprocess, ``espeak-ng -w out.wav -s <wpm> -p <pitch> -a <amplitude> -v <voice> <text>``;
its output is checked to be 16-bit mono PCM at 22.05 kHz and resampled with
``scipy.signal.resample_poly(x, 320, 441)`` to 16 kHz. Synthesis is deterministic for fixed arguments and
version, so each waveform is cached as a ``.npy`` file under ``$XDG_CACHE_HOME/commlab/espeak/`` (or
``~/.cache/commlab/espeak/``), named by the SHA-256 of (text, arguments, output rate, ``espeak-ng --version``).
A missing program raises :class:`~commlab.data.provision.DataUnavailable` naming ``make data``.

* :class:`Utterance` — one sentence and its synthesis arguments;
* :func:`synthesize` — one waveform (float32 in [-1, 1], ``[n_samples]`` at ``sample_rate`` Hz);
* :func:`espeak_corpus` — a list of utterances as a :class:`SpeechCorpus`;
* :func:`command_utterances` — seeded random 1–4-word commands with random speed, pitch and voice.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from commlab._checks import check_int
from commlab._files import atomic_write_bytes

from .provision import DataUnavailable

ESPEAK_RATE = 22050
"""Sample rate (Hz) of espeak-ng's WAV output."""

COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
            "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
"""A 20-word command vocabulary (the Speech Commands words)."""

VOICES = ("en-us", "en-us+m3", "en-us+f2", "en-us+f4", "en", "en+m5")
"""espeak-ng voices and variants used for speaker variety."""


@dataclass(frozen=True)
class Utterance:
    """One sentence and its espeak-ng arguments: ``speed`` (words per minute, ``-s``), ``pitch`` (0–99, ``-p``),
    ``amplitude`` (0–200, ``-a``) and ``voice`` (``-v``, ``name[+variant]``)."""

    text: str
    speed: int = 160
    pitch: int = 50
    amplitude: int = 100
    voice: str = "en-us"

    def __post_init__(self):
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"text must be a non-empty string, got {self.text!r}")
        if self.text.lstrip().startswith("-") or not self.text.isprintable():
            raise ValueError(f"text must be printable and must not start with '-', got {self.text!r}")
        check_int("speed", self.speed, low=80, high=450)
        check_int("pitch", self.pitch, low=0, high=99)
        check_int("amplitude", self.amplitude, low=0, high=200)
        if not isinstance(self.voice, str) or not self.voice or self.voice.startswith("-") or " " in self.voice:
            raise ValueError(f"voice must be an espeak-ng voice name such as 'en-us+m3', got {self.voice!r}")

    def argv(self, binary: str, wav_path: str) -> list[str]:
        """The command line that synthesises this utterance into ``wav_path``."""
        return [binary, "-w", wav_path, "-s", str(self.speed), "-p", str(self.pitch), "-a", str(self.amplitude),
                "-v", self.voice, self.text]


@dataclass
class SpeechCorpus:
    """Synthesised utterances: ``waves[i]`` (float32 ``[n_samples_i]``) is ``utterances[i]`` at ``sample_rate`` Hz."""

    utterances: list[Utterance]
    waves: list[np.ndarray]
    sample_rate: int
    version: str

    @property
    def texts(self) -> list[str]:
        return [u.text for u in self.utterances]

    def __len__(self) -> int:
        return len(self.utterances)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/commlab/espeak`` or ``~/.cache/commlab/espeak``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "commlab" / "espeak"


def find_espeak(binary: str = "espeak-ng") -> str:
    """The full path of the espeak-ng program; :class:`DataUnavailable` naming ``make data`` if it is missing."""
    path = shutil.which(binary)
    if path is None:
        raise DataUnavailable(f"the speech synthesiser {binary!r} is not on the PATH; run `make data` "
                              "(`commlab data fetch`, which installs the Debian package espeak-ng when root) "
                              "or `sudo apt-get install -y espeak-ng`")
    return path


@functools.lru_cache(maxsize=8)
def _version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip()


def espeak_version(binary: str = "espeak-ng") -> str:
    """The output of ``espeak-ng --version`` (part of every cache key)."""
    return _version(find_espeak(binary))


def read_wav(data: bytes, expect_rate: int = ESPEAK_RATE) -> np.ndarray:
    """Decode espeak-ng's WAV bytes into float32 samples in [-1, 1], checking 16-bit mono PCM at ``expect_rate``."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            frames = w.readframes(n)
    except (wave.Error, EOFError) as err:
        raise ValueError(f"espeak-ng wrote no valid WAV file: {err}") from err
    if (channels, width, rate) != (1, 2, expect_rate):
        raise ValueError(f"expected 16-bit mono WAV at {expect_rate} Hz, got {channels} channel(s), "
                         f"{8 * width}-bit, {rate} Hz")
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling; 22,050 -> 16,000 Hz is ``resample_poly(x, 320, 441)``. float32 out."""
    from scipy.signal import resample_poly

    ratio = Fraction(rate_out, rate_in)
    if ratio == 1:
        return np.asarray(x, dtype=np.float32)
    return resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)


def cache_key(utterance: Utterance, sample_rate: int, version: str) -> str:
    """SHA-256 (hex) of the text, every synthesis argument, the output rate and the espeak-ng version."""
    blob = json.dumps({**asdict(utterance), "sample_rate": sample_rate, "version": version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def synthesize(utterance: Utterance, *, sample_rate: int = 16000, cache_dir: str | os.PathLike | None = None,
               binary: str = "espeak-ng", timeout: float = 30.0, use_cache: bool = True) -> np.ndarray:
    """One utterance as float32 samples in [-1, 1], ``[n_samples]`` at ``sample_rate`` Hz (cached; module docstring).

    Raises:
        DataUnavailable: espeak-ng is not on the PATH.
        RuntimeError: espeak-ng failed or ran past ``timeout`` seconds.
        ValueError: its output is not 16-bit mono WAV at 22.05 kHz.
    """
    if not isinstance(utterance, Utterance):
        raise TypeError(f"utterance must be an Utterance, got {type(utterance).__name__}")
    sample_rate = check_int("sample_rate", sample_rate, low=1000)
    path = find_espeak(binary)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = cache / f"{cache_key(utterance, sample_rate, _version(path))}.npy"
    if use_cache and cached.exists():
        return np.load(cached)
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = os.path.join(tmp, "out.wav")
        try:
            run = subprocess.run(utterance.argv(path, wav_path), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"espeak-ng ran past {timeout} s on {utterance}") from err
        if run.returncode != 0 or not os.path.exists(wav_path):
            raise RuntimeError(f"espeak-ng failed (exit {run.returncode}) on {utterance}: {run.stderr.strip()}")
        with open(wav_path, "rb") as f:
            x = read_wav(f.read())
    y = resample(x, ESPEAK_RATE, sample_rate)
    if use_cache:
        buf = io.BytesIO()
        np.save(buf, y)
        atomic_write_bytes(cached, buf.getvalue())
    return y


def espeak_corpus(utterances: Sequence[Utterance], *, sample_rate: int = 16000,
                  cache_dir: str | os.PathLike | None = None, binary: str = "espeak-ng",
                  timeout: float = 30.0) -> SpeechCorpus:
    """Synthesise (or read from the cache) every utterance; see :func:`synthesize`."""
    utterances = list(utterances)
    if not utterances:
        raise ValueError("utterances must not be empty")
    waves = [synthesize(u, sample_rate=sample_rate, cache_dir=cache_dir, binary=binary, timeout=timeout)
             for u in utterances]
    return SpeechCorpus(utterances, waves, sample_rate, espeak_version(binary))


def command_utterances(n: int, rng: np.random.Generator, *, vocabulary: Sequence[str] = COMMANDS,
                       words: tuple[int, int] = (1, 4), speed: tuple[int, int] = (120, 200),
                       pitch: tuple[int, int] = (30, 70), voices: Sequence[str] = VOICES) -> list[Utterance]:
    """``n`` random commands: ``words`` (inclusive range) words drawn uniformly from ``vocabulary``, speed and
    pitch uniform integers in their inclusive ranges, a uniform voice. Texts may repeat."""
    n = check_int("n", n, low=1)
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy Generator")
    lo, hi = words
    if not 1 <= lo <= hi:
        raise ValueError(f"words must be an inclusive range (low, high) with 1 <= low <= high, got {words!r}")
    out = []
    for _ in range(n):
        k = int(rng.integers(lo, hi + 1))
        text = " ".join(vocabulary[int(i)] for i in rng.integers(0, len(vocabulary), size=k))
        out.append(Utterance(text, speed=int(rng.integers(speed[0], speed[1] + 1)),
                             pitch=int(rng.integers(pitch[0], pitch[1] + 1)),
                             voice=voices[int(rng.integers(0, len(voices)))]))
    return out
