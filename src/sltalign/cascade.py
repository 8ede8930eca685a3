"""The cascade baseline: Whisper ASR (CTranslate2 / faster-whisper) -> text MT.

This is the system a user would pick today without any alignment training, and the number every
aligned model is compared against. ASR runs through faster-whisper (int8 on CPU, greedy by default, no
VAD filter, no conditioning on previous text, no timestamps), MT through any object with
``translate_text(texts, beam=..., max_len=...)`` (the Translator interface in foundation/base.py).

Audio longer than Whisper's 30 s window is cut at pauses with ``segment.split_long_audio``; each piece
is transcribed and translated on its own and the pieces' texts are joined with spaces.
    wavs: list of (N_i,) float32 16 kHz mono -> list of str (one per clip)

ASR names: ``packaged:whisper-tiny.en`` / ``packaged:whisper-base`` (pip-installed, no hub), a local
CTranslate2 Whisper directory (holding model.bin), or anything else faster-whisper accepts (a size name
like "small" or a hub id like "Systran/faster-whisper-small"; ``hf:`` prefix allowed), which needs network.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .audio import SAMPLE_RATE, mono_float32
from .foundation import packaged

#: Whisper's window; longer clips are split at pauses before recognition
WHISPER_WINDOW_SECONDS = 30.0
_PART_RE = re.compile(r"^model\.bin\.part(\d+)$")


class TextTranslator(Protocol):
    """What the cascade needs from an MT model (``foundation.base.Translator`` provides it)."""

    def translate_text(self, texts: Sequence[str], *, beam: int = ..., max_len: int = ...) -> list[str]: ...


def default_cache_dir() -> Path:
    """$SLTALIGN_CACHE, or ~/.cache/sltalign."""
    env = os.environ.get("SLTALIGN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sltalign"


def _is_complete(target: Path, model_size: int, others: dict[str, Path]) -> bool:
    model = target / "model.bin"
    if not model.is_file() or model.stat().st_size != model_size:
        return False
    return all((target / n).is_file() and (target / n).stat().st_size == p.stat().st_size for n, p in others.items())


def assemble_split_model(
    part_dirs: Sequence[str | os.PathLike[str]], *, name: str, cache_root: str | os.PathLike[str] | None = None
) -> Path:
    """Join ``model.bin.part1``, ``model.bin.part2``, ... found in ``part_dirs`` into one CTranslate2 directory.

    The other files of those directories (config.json, tokenizer.json, vocabulary.*) are copied beside
    it. The result lives in ``cache_root`` (default: default_cache_dir()) under
    ``{name}-{size of part 1}-{size of part 2}...``, so a different release of the parts gets its own
    directory. It is built once, in a temporary directory renamed into place, so a crash or a second
    process never leaves a half-written model behind; later calls return the existing directory.
    """
    dirs = [Path(d) for d in part_dirs]
    parts: list[tuple[int, Path]] = []
    others: dict[str, Path] = {}
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"model part directory not found: {d}")
        for p in sorted(d.iterdir()):
            m = _PART_RE.match(p.name)
            if m:
                parts.append((int(m.group(1)), p))
            elif p.is_file() and not p.name.startswith(("model.bin", "__init__", ".")) and p.suffix != ".py":
                others.setdefault(p.name, p)
    if not parts:
        raise FileNotFoundError(f"no model.bin.part<N> files in {', '.join(map(str, dirs))}")
    parts.sort()
    numbers = [n for n, _ in parts]
    if numbers != list(range(1, len(parts) + 1)):
        raise FileNotFoundError(f"model.bin parts must be numbered 1..{len(parts)} without gaps, found {numbers} in {dirs}")
    sizes = [p.stat().st_size for _, p in parts]
    root = Path(cache_root) if cache_root is not None else default_cache_dir()
    target = root / f"{name}-{'-'.join(map(str, sizes))}"
    if _is_complete(target, sum(sizes), others):
        return target

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}.tmp-"))
    try:
        with open(tmp / "model.bin", "wb") as out:
            for _, p in parts:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out, 16 << 20)
        for n, p in others.items():
            shutil.copyfile(p, tmp / n)
        if target.exists() and not _is_complete(target, sum(sizes), others):
            shutil.rmtree(target)  # a leftover from an older layout; never a half-written one (rename is atomic)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_complete(target, sum(sizes), others):  # another process did not win the race: real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def whisper_ct2_dir(asr: str, *, cache_root: str | os.PathLike[str] | None = None) -> str:
    """Resolve an ASR name to what ``faster_whisper.WhisperModel`` loads.

    ``packaged:NAME`` -> its installed directory (whisper-base's split model.bin is assembled once into
    the cache); an existing local directory -> itself (it must hold model.bin); anything else is passed
    through unchanged (``hf:`` stripped) for faster-whisper to fetch.
    """
    if packaged.is_packaged(asr):
        entry, dirs = packaged.resolve(asr)
        if entry.kind != "ctranslate2-whisper":
            raise ValueError(f"asr: {asr!r} is a {entry.kind} model, not a CTranslate2 Whisper model")
        if len(dirs) == 1:
            return str(dirs[0])
        return str(assemble_split_model(dirs, name=f"{entry.name}-ct2", cache_root=cache_root))
    path = Path(asr).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise FileNotFoundError(
                f"asr: {path} has no model.bin, so it is not a CTranslate2 Whisper directory; convert a transformers "
                "checkpoint with `ct2-transformers-converter --model DIR --output_dir OUT --copy_files tokenizer.json`"
            )
        return str(path)
    if asr.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(f"asr: directory not found: {path}")
    return asr.removeprefix("hf:")


def whisper_segments(whisper: Any, wav: np.ndarray, *, beam: int = 1, language: str = "en") -> list[Any]:
    """How the cascade runs faster-whisper on one clip (no VAD, no conditioning on earlier text, no
    timestamps): its segments, each with its text and confidence (avg_logprob, no_speech_prob,
    compression_ratio). Also what labels training clips (``data.acted``), so labels are what the cascade hears."""
    segments, _ = whisper.transcribe(
        wav, beam_size=beam, language=language, vad_filter=False, condition_on_previous_text=False, without_timestamps=True
    )
    return list(segments)  # lazy: this runs the model


class Cascade:
    """Whisper ASR -> text MT, with the time each stage takes.

    Args:
        asr: an ASR name (see module docstring), e.g. "packaged:whisper-base".
        mt: the MT model; anything with ``translate_text(list[str], beam=, max_len=) -> list[str]``.
        beam, max_len: MT decoding.
        asr_beam: Whisper beam size (1 = greedy, the fast setting the project's anchors use).
        language: the spoken language passed to Whisper (English-only models ignore it).
        compute_type, cpu_threads, device: faster-whisper / CTranslate2 settings.
        max_seconds: longest piece handed to Whisper when a clip exceeds its 30 s window.
        max_gap_seconds: speech regions of a long clip separated by at most this much silence share a
            piece. Whisper pads every piece to 30 s, so fewer, fuller pieces cost less; a generous gap
            (more than segment's default) is cheap here, while very long silences invite invented text.

    Attributes ``asr_seconds``, ``mt_seconds`` and ``audio_seconds`` accumulate over calls (see
    ``timings``); ``load_seconds`` is the ASR loading time.
    """

    def __init__(
        self,
        asr: str,
        mt: TextTranslator,
        *,
        beam: int = 4,
        max_len: int = 150,
        asr_beam: int = 1,
        language: str = "en",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        device: str = "cpu",
        max_seconds: float = 28.0,
        max_gap_seconds: float = 4.0,
        cache_root: str | os.PathLike[str] | None = None,
    ) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("the cascade needs faster-whisper: `pip install faster-whisper`") from err
        if not hasattr(mt, "translate_text"):
            raise TypeError(f"mt: expected an object with translate_text(texts, beam=, max_len=), got {type(mt).__name__}")
        self.asr = asr
        self.mt = mt
        self.beam = beam
        self.max_len = max_len
        self.asr_beam = asr_beam
        self.language = language
        self.max_seconds = max_seconds
        self.max_gap_seconds = max_gap_seconds
        t0 = time.perf_counter()
        self.asr_path = whisper_ct2_dir(asr, cache_root=cache_root)
        self.whisper = WhisperModel(self.asr_path, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        self.load_seconds = time.perf_counter() - t0
        self.reset_timings()

    def reset_timings(self) -> None:
        self.asr_seconds = 0.0
        self.mt_seconds = 0.0
        self.audio_seconds = 0.0

    @property
    def timings(self) -> dict[str, float]:
        """Seconds spent so far: load, ASR, MT, the audio processed, and the real-time factor
        ((ASR + MT) / audio, lower is faster)."""
        compute = self.asr_seconds + self.mt_seconds
        return {
            "load_seconds": self.load_seconds,
            "asr_seconds": self.asr_seconds,
            "mt_seconds": self.mt_seconds,
            "audio_seconds": self.audio_seconds,
            "rtf": compute / self.audio_seconds if self.audio_seconds else float("nan"),
        }

    # --- ASR -----------------------------------------------------------------------------------
    def _recognise(self, wav: np.ndarray) -> str:
        segments = whisper_segments(self.whisper, wav, beam=self.asr_beam, language=self.language)
        return " ".join(s.text.strip() for s in segments).strip()

    def _pieces(self, wav: np.ndarray) -> list[np.ndarray]:
        if wav.size == 0:
            return []
        if wav.size <= WHISPER_WINDOW_SECONDS * SAMPLE_RATE:
            return [wav]
        from .segment import split_long_audio

        spans = split_long_audio(wav, sample_rate=SAMPLE_RATE, max_seconds=self.max_seconds, max_gap_seconds=self.max_gap_seconds)
        return [wav[a:b] for a, b in spans]

    def transcribe_pieces(self, wavs: Sequence[np.ndarray | torch.Tensor]) -> list[list[str]]:
        """Transcripts of each clip's pieces (one piece unless the clip is longer than 30 s; none when
        the clip is empty or a long clip holds no speech)."""
        clips = [mono_float32(w, f"wavs[{i}]") for i, w in enumerate(wavs)]
        t0 = time.perf_counter()
        out = [[self._recognise(p) for p in self._pieces(w)] for w in clips]
        self.asr_seconds += time.perf_counter() - t0
        self.audio_seconds += sum(w.size for w in clips) / SAMPLE_RATE
        return out

    def transcribe(self, wavs: Sequence[np.ndarray | torch.Tensor]) -> list[str]:
        """English transcripts, one per clip (16 kHz mono float waveforms); "" when no speech."""
        return [" ".join(t for t in pieces if t) for pieces in self.transcribe_pieces(wavs)]

    # --- MT ------------------------------------------------------------------------------------
    def translate_transcripts(self, texts: Sequence[str]) -> list[str]:
        """MT of transcripts; empty ones stay empty (an MT model given "" tends to invent a sentence)."""
        todo = [i for i, t in enumerate(texts) if t.strip()]
        out = [""] * len(texts)
        t0 = time.perf_counter()
        if todo:
            hyps = self.mt.translate_text([texts[i] for i in todo], beam=self.beam, max_len=self.max_len)
            if len(hyps) != len(todo):
                raise RuntimeError(f"mt.translate_text returned {len(hyps)} translations for {len(todo)} inputs")
            for i, h in zip(todo, hyps):
                out[i] = h
        self.mt_seconds += time.perf_counter() - t0
        return out

    def translate(self, wavs: Sequence[np.ndarray | torch.Tensor]) -> list[str]:
        """Speech -> translation, one line per clip. Long clips are translated piece by piece and joined."""
        return self.translate_and_transcribe(wavs)[0]

    def translate_and_transcribe(self, wavs: Sequence[np.ndarray | torch.Tensor]) -> tuple[list[str], list[str]]:
        """``translate`` and the transcripts it translated (for WER), one line per clip each: the one cascade
        the API, ``sltalign evaluate --cascade`` and the demo run. Each piece of a long clip is translated on
        its own (a 10-minute transcript in one MT call would hit ``max_len``); empty ones stay empty."""
        pieces = self.transcribe_pieces(wavs)
        flat = [t for clip in pieces for t in clip]
        translated = iter(self.translate_transcripts(flat))
        hyps = [" ".join(t for t in (next(translated) for _ in clip) if t) for clip in pieces]
        return hyps, [" ".join(t for t in clip if t) for clip in pieces]
