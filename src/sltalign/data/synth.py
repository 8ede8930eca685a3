"""The TTS corpus builder: English sentences -> synthetic speech clips + manifests with translations.

No speech-translation corpus can be downloaded here, so training data is made: real English sentences
(by default the English side of Debian's trans-de-en dictionary, 18.5k sentences) are spoken by eSpeak NG
with many voices, rates and pitches, optionally with noise and a synthetic room. Targets come from a
line-parallel human translation file ("human") or from the frozen MT through ``translate_fn``
("mt:<spec>", distillation targets).

Output of ``synthesize_corpus(config, DIR)``::

    DIR/synth_config.json                 the settings that fix the audio (a rerun must match them)
    DIR/audio/<split>/<id>.flac           16 kHz mono, 16-bit
    DIR/audio/<split>/<id>.json           what the clip holds (sentences, voice, rate, pitch, noise, ...)
    DIR/<split>.jsonl                     manifests: id, audio, duration, transcript, translation, translation_source

Guarantees:

* Deterministic: the same config (seed) gives the same ids, texts, voice settings and the same audio bytes,
  whatever ``workers`` is. Every clip draws from its own generator seeded by (seed, split, index), and
  every sentence is synthesised by a process forked from a freshly initialised eSpeak (see
  ``EspeakLibrary``): libespeak-ng keeps state between utterances (a pitch-flutter phase that is never
  reset), so two identical requests in one process would differ.
* Resumable: a clip is finished when its ``.json`` exists (written after its ``.flac``, both atomically);
  finished clips are kept, everything else is rendered again.
* Splits never share a sentence. Long clips (``long_fraction``) join several sentences of their split into
  20-40 s of speech with short pauses; their transcript (and translation) is the sentences' joined with spaces.
* Workers are spawned processes: a script calling synthesize_corpus needs `if __name__ == "__main__":`.

TTS backends: ``espeak`` (libespeak-ng from the ``espeakng-loader`` wheel through ctypes; the ``espeak-ng``
program when the wheel is missing), ``espeak-cli``, and ``flite`` / ``festival`` when their programs are
installed (Debian packages ``flite``, ``festival``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
import os
import re
import shutil
import subprocess
import tempfile
import time
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ..audio import resample, write_audio
from .manifest import Utterance, write_manifest

__all__ = [
    "SynthConfig",
    "synthesize_corpus",
    "load_sentences",
    "ding_sentences",
    "ENGLISH_VOICES",
    "ESPEAK_VARIANTS",
    "DEFAULT_VOICES",
    "make_backend",
]

log = logging.getLogger(__name__)

#: English sentences: the Ding dictionary of Debian's trans-de-en ("german :: english" per line)
DEFAULT_SENTENCES = Path("/usr/share/trans/de-en")
SPLITS = ("train", "dev", "test")
#: English voices of eSpeak NG 1.51/1.52 (language/accent); all are combined with the variants below
ENGLISH_VOICES = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
#: eSpeak NG voice variants: male m1-m7, female f1-f5 (they change formants, breathiness and pitch range)
ESPEAK_VARIANTS = tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 6))
DEFAULT_VOICES = tuple(f"{v}+{x}" for v in ENGLISH_VOICES for x in ESPEAK_VARIANTS)
FLITE_VOICES = ("slt", "kal", "awb", "rms")
_DEFAULT_VOICES = {"flite": FLITE_VOICES, "festival": ("default",)}
BACKENDS = ("espeak", "espeak-cli", "flite", "festival")
_PEAK = 0.9  # clips are scaled to this peak after noise and reverb
_GAP_SECONDS = (0.2, 0.6)  # pause between the sentences of a long clip
_LONG_CANDIDATES = 32  # sentences drawn for a long clip; it uses as many as fit its target length
_SENTENCES_PER_LONG = 8  # reserved per long clip when sizing the dev / test sentence pools
_FORMAT = 1  # bump when the rendering changes, so that old directories are not silently mixed


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    """Everything that determines the synthetic corpus. ``workers`` and batch sizes only change speed."""

    #: English sentences, one per line, or a Ding dictionary file; None: Debian trans-de-en
    sentences: str | None = None
    #: human translations line-parallel to ``sentences`` (translation_source "human")
    translations: str | None = None
    n_train: int = 2000
    n_dev: int = 100
    n_test: int = 100
    #: share of each split's clips made of several sentences, ``long_range`` seconds long
    long_fraction: float = 0.1
    #: the train split's own share of long clips (None: ``long_fraction``); long clips cost the most to
    #: encode and train on, while dev/test need them to measure long-input quality
    train_long_fraction: float | None = None
    long_range: tuple[float, float] = (20.0, 40.0)
    #: sentences outside this many words are dropped
    min_words: int = 3
    max_words: int = 40
    seed: int = 0
    backend: str = "espeak"
    #: voice names for the backend; None: DEFAULT_VOICES for eSpeak (96), FLITE_VOICES for flite
    voices: tuple[str, ...] | None = None
    #: training clips only: each clip's TTS backend drawn with these weights, e.g. {"espeak": 0.5,
    #: "flite": 0.5} (each backend with its default voices; ``voices`` applies to ``backend``); dev and test
    #: keep ``backend``. A model trained on one synthesiser hears people poorly; more voices help.
    #: None: every clip uses ``backend``
    train_backends: dict[str, float] | None = None
    #: speaking rate in words per minute (eSpeak ``-s``; flite/festival get the equivalent duration stretch)
    rate_range: tuple[int, int] = (130, 200)
    #: eSpeak base pitch 0-99 (ignored by flite/festival)
    pitch_range: tuple[int, int] = (30, 70)
    #: additive noise: SNR drawn from this range (dB) for a ``noise_prob`` share of clips; None: no noise
    noise_snr_db: tuple[float, float] | None = None
    noise_prob: float = 0.5
    #: a synthetic room (exponentially decaying noise impulse response) for a ``reverb_prob`` share of clips
    reverb_prob: float = 0.0
    rt60_range: tuple[float, float] = (0.2, 0.7)
    #: splits that get the noise and the room; the others are rendered exactly as with neither (same
    #: voices, rates and audio), e.g. ("train",) to train on degraded audio and test on the clean set
    augment_splits: tuple[str, ...] = SPLITS
    sample_rate: int = 16000
    #: processes rendering clips (0: in this process)
    workers: int = 2
    #: manifest translation_source; None: "human" with ``translations``, else "mt:<translate_fn.spec>"
    translation_source: str | None = None
    translate_batch_size: int = 64
    #: splits that get targets from ``translate_fn`` (the others: transcripts only). A recipe trained by CTC
    #: alone needs no translations in its training split, and the MT pass over it is most of the time
    #: synthesis takes (80 of 129 s for the demo's 4,000 clips); dev and test always need them.
    mt_splits: tuple[str, ...] = ("train", "dev", "test")

    def __post_init__(self) -> None:
        for name in ("long_range", "rate_range", "pitch_range", "noise_snr_db", "rt60_range", "voices", "mt_splits", "augment_splits"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))  # lists from YAML / CLI
        checks = [
            (min(self.n_train, self.n_dev, self.n_test) >= 0 and self.n_train + self.n_dev + self.n_test > 0,
             "n_train, n_dev, n_test must be >= 0 and not all 0"),
            (self.backend in BACKENDS, f"backend must be one of {BACKENDS}, got {self.backend!r}"),
            (1 <= self.min_words <= self.max_words, f"need 1 <= min_words <= max_words, got {self.min_words}, {self.max_words}"),
            (len(self.long_range) == 2 and self.long_range[0] > 0, f"long_range must be positive seconds, got {self.long_range}"),
            (self.voices is None or len(self.voices) > 0, "voices must not be empty (None picks the backend's defaults)"),
            (self.workers >= 0 and self.translate_batch_size >= 1, "workers must be >= 0 and translate_batch_size >= 1"),
            (not self.translations or bool(self.sentences), "translations needs sentences (the line-parallel English file)"),
            (set(self.mt_splits) <= set(SPLITS), f"mt_splits must name splits among {SPLITS}, got {self.mt_splits}"),
            (set(self.augment_splits) <= set(SPLITS), f"augment_splits must name splits among {SPLITS}, got {self.augment_splits}"),
        ]
        tb = self.train_backends
        checks += [(tb is None or (isinstance(tb, dict) and tb and set(tb) <= set(BACKENDS) and all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in tb.values()) and sum(tb.values()) > 0),
            f"train_backends must map backends among {BACKENDS} to weights >= 0 (not all 0), got {tb!r}")]
        checks += [(0.0 <= getattr(self, k) <= 1.0, f"{k} must be in [0, 1], got {getattr(self, k)}")
                   for k in ("long_fraction", "noise_prob", "reverb_prob")]
        checks += [(self.train_long_fraction is None or 0.0 <= self.train_long_fraction <= 1.0,
                    f"train_long_fraction must be None or in [0, 1], got {self.train_long_fraction}")]
        checks += [(v is None or (len(v) == 2 and v[0] <= v[1]), f"{k} must be (low, high) with low <= high, got {v}")
                   for k in ("long_range", "rate_range", "pitch_range", "noise_snr_db", "rt60_range") for v in [getattr(self, k)]]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise ValueError("SynthConfig: " + "; ".join(problems))

    def counts(self) -> dict[str, int]:
        return {"train": self.n_train, "dev": self.n_dev, "test": self.n_test}

    def long_fraction_for(self, split: str) -> float:
        if split == "train" and self.train_long_fraction is not None:
            return self.train_long_fraction
        return self.long_fraction


# ---------------------------------------------------------------------------------------------------
# sentences

_ANNOTATION = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "})


def _clean(text: str) -> str:
    return " ".join(_ANNOTATION.sub(" ", text).translate(_QUOTES).split())


def ding_sentences(path: str | os.PathLike) -> list[str]:
    """English sentences of a Ding dictionary file (Debian trans-de-en): ``german :: english`` per line.

    The English side holds ``|``-separated entries of ``;``-separated alternatives; ``{...}`` and ``[...]``
    annotations are removed. Only whole sentences are kept (a capital first letter, a final ``.``, ``!`` or
    ``?``, no ``/`` alternatives or parenthesised glosses); dictionary phrases are not sentences.
    """
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or "::" not in line:
                continue
            english = line.split("::", 1)[1]
            if "." not in english and "!" not in english and "?" not in english:
                continue
            for entry in english.split("|"):
                for alt in entry.split(";"):
                    # cheap tests first: 200k lines hold ~550k alternatives, few of them sentences
                    if "{" in alt or "[" in alt:
                        alt = _ANNOTATION.sub(" ", alt)
                    s = alt.strip()
                    if s[:1].isupper() and s[-1:] in ".!?" and "/" not in s and "(" not in s and ")" not in s:
                        out.append(_clean(s))
    return out


def load_sentences(
    path: str | os.PathLike | None = None,
    *,
    translations: str | os.PathLike | None = None,
    min_words: int = 3,
    max_words: int = 40,
) -> list[tuple[str, str | None]]:
    """(English sentence, human translation or None) pairs: cleaned, filtered by length, first copy kept.

    ``path`` is a plain file (one sentence per line) or a Ding dictionary (detected by its `` :: `` lines);
    None reads Debian's trans-de-en. ``translations`` must have exactly as many lines as ``path``.
    """
    p = Path(path).expanduser() if path else DEFAULT_SENTENCES
    if not p.is_file():
        if path is None:
            raise FileNotFoundError(
                f"default English sentences not found at {p}: install the Debian package trans-de-en "
                f"(apt-get install trans-de-en) or pass sentences=<file with one English sentence per line>"
            )
        raise FileNotFoundError(f"sentences file not found: {p}")
    with p.open(encoding="utf-8") as f:
        head = [next(f, "") for _ in range(50)]
    is_ding = sum(" :: " in line for line in head) > len([h for h in head if h.strip()]) // 2
    if is_ding:
        if translations:
            raise ValueError(f"{p} is a Ding dictionary; translations must pair with a plain sentence file")
        raw: list[tuple[str, str | None]] = [(s, None) for s in ding_sentences(p)]
    else:
        english = p.read_text(encoding="utf-8").splitlines()
        targets: list[str | None] = [None] * len(english)
        if translations:
            t = Path(translations).expanduser()
            if not t.is_file():
                raise FileNotFoundError(f"translations file not found: {t}")
            targets = list(t.read_text(encoding="utf-8").splitlines())
            if len(targets) != len(english):
                raise ValueError(f"{t} has {len(targets)} lines but {p} has {len(english)}; expected line-parallel files")
        raw = [(_clean(e), _clean(x) if x is not None else None) for e, x in zip(english, targets)]
    seen: set[str] = set()
    pairs = []
    for en, tr in raw:
        n = len(en.split())
        if not (min_words <= n <= max_words) or en in seen or (translations and not tr):
            continue
        seen.add(en)
        pairs.append((en, tr))
    if not pairs:
        raise ValueError(f"{p}: no sentences of {min_words}-{max_words} words")
    return pairs


# ---------------------------------------------------------------------------------------------------
# planning: everything random is drawn here, per clip, from (seed, split, index)


@dataclass(frozen=True)
class ClipPlan:
    id: str
    split: str
    #: candidate sentences; a short clip speaks the one, a long clip as many as fit ``target_seconds``
    sentences: tuple[str, ...]
    long: bool
    #: a long clip stops adding sentences at target_seconds, never exceeds max_seconds, should reach min_seconds
    min_seconds: float
    target_seconds: float
    max_seconds: float
    voice: str
    rate: int
    pitch: int
    snr_db: float | None
    noise_color: float  # spectral slope: 0 white, 1 pink, 2 brown
    rt60: float | None
    seed: int  # for the gaps, noise samples, room response and eSpeak's own random generator
    #: the TTS backend (resolved name) when it is not the corpus's ``backend`` (``train_backends``)
    backend: str | None = None


def _split_pools(cfg: SynthConfig, n_sentences: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Disjoint sentence indices per split: test and dev take what they need, train the rest."""
    order = rng.permutation(n_sentences)
    pools: dict[str, np.ndarray] = {}
    start = 0
    for split in ("test", "dev"):
        n = cfg.counts()[split]
        n_long = round(n * cfg.long_fraction_for(split))
        need = (n - n_long) + (max(_LONG_CANDIDATES, n_long * _SENTENCES_PER_LONG) if n_long else 0)
        pools[split] = order[start : start + need]
        start += need
    pools["train"] = order[start:]
    for split, n in cfg.counts().items():
        if n and len(pools[split]) == 0:
            raise ValueError(f"not enough sentences ({n_sentences}) for the dev/test/train splits asked; lower n_dev / n_test")
    if cfg.n_train and len(pools["train"]) < cfg.n_train - round(cfg.n_train * cfg.long_fraction_for("train")):
        log.warning("train: %d sentences for %d clips; sentences repeat (with other voices)", len(pools["train"]), cfg.n_train)
    return pools


def plan_clips(
    cfg: SynthConfig, sentences: Sequence[str], voices: Sequence[str], backends: dict[str, str] | None = None
) -> list[ClipPlan]:
    """Every clip of every split, in manifest order. Depends only on the config, the sentences and, with
    ``cfg.train_backends``, the resolved backend names.

    ``backends``: resolved name of each backend of ``cfg.train_backends`` (default: the names themselves)."""
    pools = _split_pools(cfg, len(sentences), np.random.default_rng([cfg.seed, 0]))
    mix = sorted(cfg.train_backends.items()) if cfg.train_backends else []
    mix_p = np.array([w for _, w in mix], dtype=np.float64) / sum(w for _, w in mix) if mix else None
    plans = []
    for s_idx, split in enumerate(SPLITS, start=1):
        n = cfg.counts()[split]
        pool = pools[split]
        n_long = round(n * cfg.long_fraction_for(split))
        # long clips are spread evenly through the split (not all at its end)
        is_long = np.zeros(n, dtype=bool)
        if n_long:
            is_long[np.linspace(0, n - 1, n_long).round().astype(int)] = True
        k = 0  # next unused sentence of the pool for short clips
        for i in range(n):
            rng = np.random.default_rng([cfg.seed, s_idx, i])
            if is_long[i]:
                m = min(_LONG_CANDIDATES, len(pool))
                texts = tuple(sentences[j] for j in pool[rng.choice(len(pool), size=m, replace=False)])
                lo, hi = cfg.long_range
                target = float(rng.uniform(lo, hi))
            else:
                texts = (sentences[pool[k % len(pool)]],)
                k += 1
                lo, target, hi = 0.0, 0.0, math.inf
            # a split left out of augment_splits draws as a corpus without noise would, so it is that corpus
            augment = split in cfg.augment_splits
            noisy = augment and cfg.noise_snr_db is not None and rng.random() < cfg.noise_prob
            reverb = rng.random() < cfg.reverb_prob and augment
            clip_backend, clip_voices = None, voices
            if split == "train" and mix:
                # its own generator, so a corpus without the mix draws exactly what it drew before
                name = mix[int(np.random.default_rng([cfg.seed, s_idx, i, 1]).choice(len(mix), p=mix_p))][0]
                if name != cfg.backend:
                    clip_backend = (backends or {}).get(name, name)
                    clip_voices = _DEFAULT_VOICES.get(clip_backend, DEFAULT_VOICES)
            plans.append(
                ClipPlan(
                    id=f"{split}-{i:06d}",
                    split=split,
                    sentences=texts,
                    long=bool(is_long[i]),
                    min_seconds=lo,
                    target_seconds=target,
                    max_seconds=hi,
                    voice=str(clip_voices[rng.integers(len(clip_voices))]),
                    rate=int(rng.integers(cfg.rate_range[0], cfg.rate_range[1] + 1)),
                    pitch=int(rng.integers(cfg.pitch_range[0], cfg.pitch_range[1] + 1)),
                    snr_db=float(rng.uniform(*cfg.noise_snr_db)) if noisy and cfg.noise_snr_db else None,
                    noise_color=float(rng.choice([0.0, 1.0, 2.0])),
                    rt60=float(rng.uniform(*cfg.rt60_range)) if reverb else None,
                    seed=int(rng.integers(2**31 - 1)),
                    backend=clip_backend,
                )
            )
    return plans


# ---------------------------------------------------------------------------------------------------
# TTS backends: synth(text, voice, rate, pitch, seed) -> (samples float32, sample rate)


# The eSpeak server: a stdlib-only Python process holding libespeak-ng. It forks once per request, so every
# request is synthesised from the library's freshly initialised state (libespeak-ng keeps state between
# utterances: a pitch-flutter phase that is never reset, so two identical requests in one process differ).
# Kept free of numpy / torch, the server is small and forks in ~1-2 ms.
# Protocol: the server writes its int32 sample rate once; per request (one JSON line on stdin) it answers
# int32 status + int64 byte count + int16 samples. Status: 0 ok, 1000 + code: unknown voice,
# 2000 + code: espeak_Synth failed, 3000: no audio, 4000: the forked child crashed.
_ESPEAK_SERVER = r"""
import ctypes, json, os, struct, sys
lib = ctypes.CDLL(sys.argv[1])
lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                             ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
seed_fn = getattr(lib, "espeak_ng_SetRandSeed", None)  # 1.52+; older builds start from the same seed anyway
if seed_fn is not None:
    seed_fn.argtypes = [ctypes.c_long]
rate = lib.espeak_Initialize(2, 0, sys.argv[2].encode(), 0)  # 2: synchronous, samples via the callback
chunks = []
CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
def collect(wav, n, events):
    if n > 0:
        chunks.append(ctypes.string_at(wav, 2 * n))
    return 0
callback = CB(collect)
lib.espeak_SetSynthCallback(callback)
out = sys.stdout.buffer
def send(status, data=b""):
    out.write(struct.pack("<iq", status, len(data)) + data)
    out.flush()
def synth(req):
    status = lib.espeak_SetVoiceByName(req["voice"].encode())
    if status != 0:
        return send(1000 + status)
    lib.espeak_SetParameter(1, int(req["rate"]), 0)   # espeakRATE, words per minute
    lib.espeak_SetParameter(3, int(req["pitch"]), 0)  # espeakPITCH, 0-99
    if seed_fn is not None:
        seed_fn(int(req["seed"]))
    text = req["text"].encode("utf-8")
    status = lib.espeak_Synth(text, len(text) + 1, 0, 1, 0, 1, None, None)  # POS_CHARACTER, espeakCHARS_UTF8
    lib.espeak_Synchronize()
    data = b"".join(chunks)
    send(2000 + status if status else (0 if data else 3000), data)
out.write(struct.pack("<i", rate))
out.flush()
for line in sys.stdin:
    req = json.loads(line)
    if not hasattr(os, "fork"):
        chunks.clear()
        synth(req)
        continue
    pid = os.fork()
    if pid == 0:
        try:
            synth(req)
        finally:
            os._exit(0)
    _, wait_status = os.waitpid(pid, 0)
    if wait_status != 0:
        send(4000)
"""


class EspeakLibrary:
    """libespeak-ng from the espeakng-loader wheel, through ctypes, in a small forking server process.

    Every ``synth`` call starts from the library's freshly initialised state, so a clip's audio depends
    only on its request, not on what this process synthesised before.
    """

    name = "espeak"

    def __init__(self) -> None:
        import espeakng_loader

        lib_path, data_path = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        if not Path(lib_path).is_file():
            raise OSError(f"espeakng-loader ships no library at {lib_path}")
        # -I -S: isolated, no site-packages: the server needs the standard library only
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _ESPEAK_SERVER, lib_path, data_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        head = self._proc.stdout.read(4)  # type: ignore[union-attr]
        if len(head) != 4:
            raise OSError(f"the eSpeak NG server did not start (library {lib_path}, data {data_path})")
        self.sample_rate = struct.unpack("<i", head)[0]  # 22050
        if self.sample_rate <= 0:
            raise OSError(f"espeak_Initialize failed ({self.sample_rate}) with data at {data_path}")

    def synth(self, text: str, voice: str, rate: int, pitch: int, seed: int) -> tuple[np.ndarray, int]:
        req = json.dumps({"text": text, "voice": voice, "rate": int(rate), "pitch": int(pitch), "seed": int(seed)})
        proc = self._proc
        if proc.poll() is not None:
            raise RuntimeError(f"the eSpeak NG server has exited (code {proc.returncode})")
        proc.stdin.write(req.encode("utf-8") + b"\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        head = proc.stdout.read(12)  # type: ignore[union-attr]
        if len(head) != 12:
            raise RuntimeError("the eSpeak NG server died while synthesising")
        status, nbytes = struct.unpack("<iq", head)
        data = proc.stdout.read(nbytes) if nbytes else b""  # type: ignore[union-attr]
        if 1000 <= status < 2000:
            raise ValueError(f"eSpeak NG has no voice {voice!r} (names look like 'en-us' or 'en-us+f3')")
        if status != 0:
            what = {3000: "produced no audio", 4000: "crashed"}.get(status, f"failed (espeak_Synth {status - 2000})")
            raise RuntimeError(f"eSpeak NG {what} on {text[:60]!r} with voice {voice}")
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, self.sample_rate

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()  # type: ignore[union-attr]  # EOF: the server's loop ends
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class _CommandBackend:
    """A TTS program run once per sentence (a fresh process each time, hence deterministic)."""

    name = program = apt = ""  # backend name, executable, Debian package

    def __init__(self) -> None:
        if shutil.which(self.program) is None:
            raise OSError(f"TTS backend {self.name!r} needs the program {self.program!r} (apt-get install {self.apt})")

    def _run(self, cmd: list[str], text: str, out: Path | None) -> bytes:
        proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-300:]}")
        return out.read_bytes() if out is not None else proc.stdout

    @staticmethod
    def _decode(data: bytes, what: str) -> tuple[np.ndarray, int]:
        if not data:
            raise RuntimeError(f"{what}: no audio produced")
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return wav.mean(axis=1), int(sr)


class EspeakCommand(_CommandBackend):
    """The ``espeak-ng`` program (Debian package espeak-ng): text on stdin, WAV on stdout."""

    name, program, apt = "espeak-cli", "espeak-ng", "espeak-ng"

    def synth(self, text: str, voice: str, rate: int, pitch: int, seed: int) -> tuple[np.ndarray, int]:  # noqa: ARG002
        cmd = [self.program, "-b", "1", "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout"]
        return self._decode(self._run(cmd, text, None), f"espeak-ng -v {voice}")


class FliteCommand(_CommandBackend):
    """CMU flite (Debian package flite); rate becomes a duration stretch relative to 175 words/min."""

    name, program, apt = "flite", "flite", "flite"

    def synth(self, text: str, voice: str, rate: int, pitch: int, seed: int) -> tuple[np.ndarray, int]:  # noqa: ARG002
        with tempfile.TemporaryDirectory() as tmp:
            txt, out = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
            txt.write_text(text, encoding="utf-8")
            cmd = [self.program, "-voice", voice, "-f", str(txt), "-o", str(out), "--setf", f"duration_stretch={175.0 / rate:.3f}"]
            return self._decode(self._run(cmd, "", out), f"flite -voice {voice}")


class FestivalCommand(_CommandBackend):
    """Festival's ``text2wave`` (Debian package festival); ``voice`` is a festival voice name."""

    name, program, apt = "festival", "text2wave", "festival"

    def synth(self, text: str, voice: str, rate: int, pitch: int, seed: int) -> tuple[np.ndarray, int]:  # noqa: ARG002
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.wav"
            cmd = [self.program, "-o", str(out), "-eval", f"(Parameter.set 'Duration_Stretch {175.0 / rate:.3f})"]
            if voice != "default":
                cmd += ["-eval", f"(voice_{voice})"]
            return self._decode(self._run(cmd, text, out), f"text2wave voice {voice}")


def make_backend(name: str) -> Any:
    """A ready backend. ``espeak`` prefers the library and falls back to the ``espeak-ng`` program."""
    if name == "espeak":
        try:
            return EspeakLibrary()
        except (ImportError, OSError, RuntimeError) as err:
            if shutil.which("espeak-ng"):
                log.warning("libespeak-ng unavailable (%s); using the espeak-ng program", err)
                return EspeakCommand()
            raise OSError(
                f"no eSpeak NG: the library failed ({err}) and the espeak-ng program is not installed; "
                f"pip install espeakng-loader, or apt-get install espeak-ng"
            ) from err
    classes = {"espeak-cli": EspeakCommand, "flite": FliteCommand, "festival": FestivalCommand}
    if name not in classes:
        raise ValueError(f"unknown TTS backend {name!r}; known: {BACKENDS}")
    return classes[name]()


# ---------------------------------------------------------------------------------------------------
# rendering one clip


def _colored_noise(n: int, slope: float, rng: np.random.Generator) -> np.ndarray:
    """Noise whose power falls as 1/f**slope (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    noise = np.fft.irfft(spec / f ** (slope / 2), n)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def _room(wav: np.ndarray, sr: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic impulse response: a direct path plus noise decaying 60 dB in ``rt60`` s."""
    n = max(2, int(rt60 * sr))
    tail = rng.standard_normal(n) * np.exp(-6.9078 * np.arange(n) / (sr * rt60))  # ln(1000): -60 dB at rt60
    tail *= math.sqrt(0.3 / float(np.sum(tail[1:] ** 2)))  # reverberant energy 0.3 x direct: about +5 dB DRR
    rir = np.concatenate([[1.0], tail[1:]])
    size = len(wav) + n - 1
    out = np.fft.irfft(np.fft.rfft(wav, size) * np.fft.rfft(rir, size), size)[: len(wav)]
    return out.astype(np.float32)


def render_clip(plan: ClipPlan, backend: Any, audio_path: Path, sample_rate: int) -> dict[str, Any]:
    """Speak the plan, post-process, write the FLAC; returns the clip's record (written as its .json)."""
    rng = np.random.default_rng(plan.seed)
    pieces: list[np.ndarray] = []
    used: list[str] = []
    total = 0.0
    tts_rate = 0
    for k, text in enumerate(plan.sentences):
        wav, tts_rate = backend.synth(text, plan.voice, plan.rate, plan.pitch, plan.seed + k)
        gap = float(rng.uniform(*_GAP_SECONDS)) if pieces else 0.0
        seconds = len(wav) / tts_rate + gap
        if plan.long and total + seconds > plan.max_seconds:
            continue  # this sentence would overshoot: try a shorter one
        if gap:
            pieces.append(np.zeros(int(round(gap * tts_rate)), dtype=np.float32))
        pieces.append(wav)
        used.append(text)
        total += seconds
        if not plan.long or total >= plan.target_seconds:
            break
    if not used:
        raise RuntimeError(f"clip {plan.id}: no sentence fits {plan.max_seconds} s")
    if total < plan.min_seconds:
        log.warning("clip %s: %.1f s, shorter than %.1f s (its sentences ran out)", plan.id, total, plan.min_seconds)
    wav = resample(np.concatenate(pieces), tts_rate, sample_rate)
    if plan.rt60 is not None:
        wav = _room(wav, sample_rate, plan.rt60, rng)
    if plan.snr_db is not None:
        power = float(np.mean(wav.astype(np.float64) ** 2))
        noise = _colored_noise(len(wav), plan.noise_color, rng)
        wav = wav + noise * np.float32(math.sqrt(power / 10 ** (plan.snr_db / 10)))
    peak = float(np.max(np.abs(wav))) or 1.0
    wav = (wav * (_PEAK / peak)).astype(np.float32)
    write_audio(audio_path, wav, sample_rate)  # atomic: temporary name, then rename
    return {
        "id": plan.id,
        "split": plan.split,
        "sentences": used,
        "duration": round(len(wav) / sample_rate, 6),
        "voice": plan.voice,
        "rate": plan.rate,
        "pitch": plan.pitch,
        "snr_db": plan.snr_db,
        "noise_color": plan.noise_color if plan.snr_db is not None else None,
        "rt60": plan.rt60,
        "backend": backend.name,
    }


def _write_json(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
    os.replace(tmp, path)


class _Renderer:
    """Owns the backends (one of each per process, made when first needed) and renders plans into ``out_dir``."""

    def __init__(self, backend_name: str, out_dir: Path, sample_rate: int) -> None:
        self.backend = make_backend(backend_name)
        self.others: dict[str, Any] = {}
        self.out_dir = out_dir
        self.sample_rate = sample_rate

    def _backend_for(self, plan: ClipPlan) -> Any:
        if plan.backend is None or plan.backend == self.backend.name:
            return self.backend
        if plan.backend not in self.others:
            self.others[plan.backend] = make_backend(plan.backend)
        return self.others[plan.backend]

    def __call__(self, plan: ClipPlan) -> dict[str, Any]:
        audio = self.out_dir / "audio" / plan.split / f"{plan.id}.flac"
        record = render_clip(plan, self._backend_for(plan), audio, self.sample_rate)
        _write_json(audio.with_suffix(".json"), record)  # after the audio: marks the clip finished
        return record


_WORKER: _Renderer | None = None


def _worker_init(backend_name: str, out_dir: str, sample_rate: int) -> None:
    global _WORKER
    _WORKER = _Renderer(backend_name, Path(out_dir), sample_rate)


def _worker_render(plan: ClipPlan) -> dict[str, Any]:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER(plan)


# ---------------------------------------------------------------------------------------------------
# the corpus


def _fingerprint(cfg: SynthConfig, backend: str, pool_sha: str) -> dict[str, Any]:
    d = asdict(cfg)
    for speed_only in ("workers", "translate_batch_size", "translation_source", "translations", "sentences", "mt_splits"):
        d.pop(speed_only)
    if tuple(d["augment_splits"]) == SPLITS:
        del d["augment_splits"]  # the default: corpora made before the setting existed still resume
    if d["train_backends"] is None:
        del d["train_backends"]  # likewise
    d = json.loads(json.dumps(d))  # tuples -> lists, as they come back from the file
    d.update(format=_FORMAT, resolved_backend=backend, sentences_sha256=pool_sha)
    return d


def _check_or_write_state(out_dir: Path, state: dict[str, Any]) -> None:
    path = out_dir / "synth_config.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(old) | set(state) if old.get(k) != state.get(k))
        if diff:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {state.get(k)!r}" for k in diff[:6])
            raise ValueError(
                f"{out_dir} holds a corpus made with other settings ({details}); resuming would mix the two. "
                f"Use another output directory or the same settings."
            )
        return
    _write_json(path, state)


def synthesize_corpus(
    config: SynthConfig,
    out_dir: str | os.PathLike,
    *,
    translate_fn: Callable[[list[str]], list[str]] | None = None,
    mt_spec: str | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Render the corpus into ``out_dir`` (resuming a previous run) and write one manifest per split.

    Targets: ``config.translations`` (human, line-parallel to ``config.sentences``), or ``translate_fn``
    (a frozen MT: list of English sentences -> list of translations, called ``translate_batch_size``
    sentences at a time; each sentence is translated alone, a long clip's translation is its sentences'
    joined), or none (manifests with transcripts only). ``mt_spec`` names the MT in translation_source
    ("mt:<mt_spec>"); by default ``config.translation_source`` or ``translate_fn.spec``.
    Returns {split: manifest path} for the splits with clips.
    """
    cfg = config
    out = Path(out_dir).expanduser().resolve()
    if cfg.translations and translate_fn is not None:
        raise ValueError("synthesize_corpus: give human translations (config.translations) or translate_fn, not both")
    pairs = load_sentences(cfg.sentences, translations=cfg.translations, min_words=cfg.min_words, max_words=cfg.max_words)
    sentences = [en for en, _ in pairs]
    human = {en: tr for en, tr in pairs if tr is not None}
    backend = make_backend(cfg.backend).name  # what the workers will run: the library and the program sound different
    voices = cfg.voices or _DEFAULT_VOICES.get(backend, DEFAULT_VOICES)
    pool_sha = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()
    out.mkdir(parents=True, exist_ok=True)
    # resolved now, in this process: a mix backend whose program is missing fails before any clip is rendered
    mix_names = {name: make_backend(name).name for name in (cfg.train_backends or {}) if (cfg.train_backends or {})[name] > 0}
    state = _fingerprint(cfg, backend, pool_sha)
    if mix_names:  # what renders the mixed clips (e.g. eSpeak's library or its program) decides their sound
        state["resolved_train_backends"] = mix_names
    _check_or_write_state(out, state)
    plans = plan_clips(cfg, sentences, voices, mix_names)
    for split in SPLITS:
        d = out / "audio" / split
        d.mkdir(parents=True, exist_ok=True)
        for stale in d.glob(".*.tmp"):  # half-written files of an interrupted run
            stale.unlink(missing_ok=True)
    records: dict[str, dict[str, Any]] = {}
    todo: list[ClipPlan] = []
    for plan in plans:
        audio = out / "audio" / plan.split / f"{plan.id}.flac"
        meta = audio.with_suffix(".json")
        if audio.is_file() and meta.is_file():
            records[plan.id] = json.loads(meta.read_text(encoding="utf-8"))
        else:
            todo.append(plan)

    if todo:
        records.update(_render_all(todo, backend, out, cfg, progress))

    # targets
    translations: dict[str, str] = dict(human)
    source: str | None = None
    if cfg.translations:
        source = cfg.translation_source or "human"
    elif translate_fn is not None:
        spec = mt_spec or (cfg.translation_source[3:] if (cfg.translation_source or "").startswith("mt:") else None)
        spec = spec or getattr(translate_fn, "spec", None) or getattr(translate_fn, "__name__", "unknown")
        source = cfg.translation_source or f"mt:{spec}"
        needed = list(dict.fromkeys(s for p in plans if p.split in cfg.mt_splits for s in records[p.id]["sentences"]))
        translations.update(_translate(needed, translate_fn, cfg.translate_batch_size, progress))

    paths: dict[str, Path] = {}
    for split in SPLITS:
        split_plans = [p for p in plans if p.split == split]
        if not split_plans:
            continue
        utts = []
        for p in split_plans:
            rec = records[p.id]
            has_target = source is not None and (cfg.translations or split in cfg.mt_splits)
            target = " ".join(translations[s] for s in rec["sentences"]) if has_target else None
            utts.append(
                Utterance(
                    id=p.id,
                    audio=str(out / "audio" / split / f"{p.id}.flac"),
                    duration=float(rec["duration"]),
                    transcript=" ".join(rec["sentences"]),
                    translation=target,
                    translation_source=source if has_target else None,
                )
            )
        paths[split] = write_manifest(out / f"{split}.jsonl", utts)
    return paths


def _render_all(todo: list[ClipPlan], backend: str, out: Path, cfg: SynthConfig, progress: bool) -> dict[str, dict[str, Any]]:
    """Render the clips (``cfg.workers`` processes, or this one for 0); returns their records by id."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    records: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(todo), unit="clip", desc="synthesising", disable=not progress, dynamic_ncols=True)
    if cfg.workers == 0:
        renderer = _Renderer(backend, out, cfg.sample_rate)
        for plan in todo:
            records[plan.id] = renderer(plan)
            bar.update()
    else:
        # spawn: a clean interpreter per worker (the caller may hold torch/OpenMP threads, which fork copies
        # badly); an executor, unlike mp.Pool, fails instead of hanging when a worker cannot start
        ctx, initargs = mp.get_context("spawn"), (backend, str(out), cfg.sample_rate)
        with ProcessPoolExecutor(min(cfg.workers, len(todo)), mp_context=ctx, initializer=_worker_init, initargs=initargs) as pool:
            futures = [pool.submit(_worker_render, plan) for plan in todo]
            try:
                for fut in as_completed(futures):
                    rec = fut.result()
                    records[rec["id"]] = rec
                    bar.update()
            except BrokenProcessPool as err:
                raise RuntimeError(
                    "a synthesis worker process died; when calling synthesize_corpus from a script, put the call "
                    "under `if __name__ == '__main__':` (worker processes are spawned and import the main module)"
                ) from err
            finally:
                for fut in futures:
                    fut.cancel()
    bar.close()
    wall = time.perf_counter() - t0
    audio_s = sum(r["duration"] for r in records.values())
    log.info("synthesised %d clips (%.1f s of audio) in %.1f s: %.1f clips/s, %.0fx real time",
             len(records), audio_s, wall, len(records) / wall, audio_s / wall)
    return records


def _translate(texts: list[str], fn: Callable[[list[str]], list[str]], batch_size: int, progress: bool) -> dict[str, str]:
    from tqdm.auto import tqdm

    out: dict[str, str] = {}
    for i in tqdm(range(0, len(texts), batch_size), desc="translating", unit="batch", disable=not progress):
        batch = texts[i : i + batch_size]
        result = list(fn(batch))
        if len(result) != len(batch) or not all(isinstance(r, str) for r in result):
            raise ValueError(f"translate_fn returned {len(result)} items for a batch of {len(batch)}; expected one string each")
        out.update(zip(batch, result))
    return out
