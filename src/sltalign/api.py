"""SpeechTranslator: the stable, user-facing entry point.

    from sltalign import SpeechTranslator
    st = SpeechTranslator.from_pretrained("runs/demo/connector")
    st.translate(["a.wav", "b.flac"])      # -> ["...", "..."]
    st.translate("talk.mp3")               # -> "..."  (one input, one string)

    st.translate_segments("talk.mp3")      # -> Translation(text, segments=[Segment(start, end, text, source)])

Inputs are paths (any format ``sltalign.audio`` reads) or 1-D float arrays (16 kHz, or any rate given as
``sampling_rate=``). Audio longer than
``max_piece_seconds`` (by default the speech encoder's window; a trained checkpoint stores the longest duration
its connector was trained on) is split at pauses with Silero VAD and the pieces are translated in order.
Empty input (0 samples, a 0-byte file) and silent input (peak below ``SILENT_PEAK``, -60 dBFS) give the empty
string with a warning, without running the model; input the model makes nothing of (noise) gives the empty
string with a warning too. A bad input (unreadable, missing) raises by default (``errors="raise"``); with
``errors="skip"`` every good input is translated and each bad one gives None and a warning naming it
(``last_errors`` maps its index to the message), which is what ``sltalign translate`` uses.
"""

from __future__ import annotations

import logging
import math
import re
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .audio import SAMPLE_RATE, AudioError, as_waveform, duration_of, load_audio
from .segment import MIN_PIECE_SECONDS, piece_seconds_for  # noqa: F401  (piece_seconds_for: public here too)
from .checkpoint import load_connector
from .model import AlignedST
from .outputs import Segment, Translation
from .progress import progress_bar

log = logging.getLogger(__name__)

AudioInput = str | Path | np.ndarray | torch.Tensor
#: shorter than this (in samples) a clip carries no speech worth translating
MIN_SAMPLES = SAMPLE_RATE // 10
#: default ``sentence_pause_seconds``: in synthetic long clips, pauses at sentence ends measured 0.18 s or longer
#: and pauses inside sentences mostly shorter (docs/RESULTS.md, "Long audio cut at sentence pauses")
SENTENCE_PAUSE_SECONDS = 0.2
#: decoding options a checkpoint may store (``decoding`` in its config) and ``from_pretrained`` applies
DECODING_KEYS = ("beam", "max_len", "length_penalty", "tokens_per_second", "max_piece_seconds", "sentence_pause_seconds")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "cpu" (also None), "cuda", "cuda:N", "mps" or "auto" (a GPU where there is one) -> torch.device;
    a device this machine does not have is a clear ValueError, not a failure deep inside the first forward pass."""
    if device is None:
        return torch.device("cpu")
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device: expected cpu, cuda, cuda:N, mps or auto, got {device!r}") from e
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ValueError(
            f"device {device!r}: this machine has {torch.cuda.device_count() if torch.cuda.is_available() else 'no'} CUDA device(s)"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available here")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device: expected cpu, cuda, cuda:N, mps or auto, got {device!r}")
    return dev


def target_language(cfg: dict) -> str | None:
    """The target language code of a checkpoint's translator, where its config says it: the translator's
    ``target_lang`` option ("pt_XX" -> "pt"), else a trailing ``src-tgt`` pair in its name
    ("packaged:bergamot-en-pt", "hf:Helsinki-NLP/opus-mt-en-de"); None when neither does."""
    tr = cfg.get("translator") or {}
    lang = (tr.get("kwargs") or {}).get("target_lang")
    if lang:
        return str(lang).strip("<>").split("_")[0].lower() or None
    name = str(tr.get("spec") or "").rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1].lower()
    m = re.search(r"(?:^|[-_])([a-z]{2,3})-([a-z]{2,3})$", name)
    return m.group(2) if m else None


#: a clip whose samples never reach this (-60 dBFS) is silence: no speech can be told from it
SILENT_PEAK = 1e-3
ERRORS = ("raise", "skip")


def _input_name(i: int, x: object) -> str:
    return f"input {i} ({x if isinstance(x, (str, Path)) else 'array'})"


def _is_empty_file(path: str | Path) -> bool:
    try:
        return duration_of(path) == 0
    except (AudioError, OSError):
        return False


class SpeechTranslator:
    """A trained connector with its frozen foundations, ready to translate audio."""

    def __init__(
        self,
        model: AlignedST,
        *,
        beam: int = 4,
        max_len: int = 150,
        length_penalty: float = 1.0,
        batch_size: int = 8,
        tokens_per_second: float = 8.0,
        max_piece_seconds: float | None = None,
        sentence_pause_seconds: float | None = SENTENCE_PAUSE_SECONDS,
    ) -> None:
        """``max_piece_seconds``: audio longer than this is split at pauses (Silero VAD) into pieces no longer
        than it, translated in order and joined. ``None`` splits only what the speech encoder cannot take in one
        window (Whisper: 30 s). A connector trained on short clips has never seen long inputs and tends to
        translate the first sentence or two of them and stop; checkpoints therefore store the duration they were
        trained up to (``decoding.max_piece_seconds``), and ``from_pretrained`` applies it.

        ``sentence_pause_seconds``: where audio is split, a pause at least this long always ends a piece and
        longer pauses are cut before shorter ones (``segment.split_long_audio(packing="pauses")``), so that
        pieces are sentences, which is what the translator was trained on; ``None`` packs each piece up to
        the limit instead (cuts fall wherever a piece fills up, often mid-sentence).

        ``max_len`` is the output limit in tokens for clips up to 10 s; longer audio gets
        ``tokens_per_second`` per second of it, counted in whole 10-s steps (a 28-s piece: 240 at the default),
        so that long speech is not cut off at a limit sized for a sentence. The limit depends only on a clip's
        own duration (batches never mix limits), so batching still never changes a translation in fp32. With the
        speech encoder in bf16 (``encoder_precision`` bf16, or auto on a CPU with AMX) a clip's states in a padded
        batch differ from its states alone by rounding, which now and then flips a near-tie: 2 of 40 short test
        clips changed a few words between batch sizes 1, 5 and 8 (docs/RESULTS.md, "The larger recipe")."""
        if model.speech_encoder is None:
            raise ValueError("SpeechTranslator needs an AlignedST with a speech encoder")
        if max_len < 1 or tokens_per_second < 0:
            raise ValueError(f"max_len must be >= 1 and tokens_per_second >= 0; got {max_len} and {tokens_per_second}")
        if max_piece_seconds is not None and not max_piece_seconds >= MIN_PIECE_SECONDS:
            raise ValueError(f"max_piece_seconds must be >= {MIN_PIECE_SECONDS} (or None); got {max_piece_seconds}")
        if sentence_pause_seconds is not None and not sentence_pause_seconds >= 0:
            raise ValueError(f"sentence_pause_seconds must be >= 0 (or None); got {sentence_pause_seconds}")
        self.max_piece_seconds = max_piece_seconds
        self.sentence_pause_seconds = sentence_pause_seconds
        self.model = model.eval()
        self.beam = beam
        self.max_len = max_len
        self.tokens_per_second = tokens_per_second
        self.length_penalty = length_penalty
        self.batch_size = batch_size
        self.last_timings: dict[str, float] = {}
        self.last_errors: dict[int, str] = {}  # input index -> why it was skipped (translate(errors="skip"))
        #: target language code where known (``from_pretrained`` reads it off the checkpoint), else None
        self.language: str | None = None
        #: the checkpoint directory and config this translator was loaded from (``from_pretrained``)
        self.checkpoint: Path | None = None
        self.checkpoint_config: dict = {}

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, speech_encoder=None, translator=None, device: str | torch.device | None = None, **decoding
    ) -> "SpeechTranslator":
        """Load a connector checkpoint directory and the foundations it names (checked by fingerprint).

        Decoding defaults (``DECODING_KEYS``: beam, max_len, length_penalty, tokens_per_second,
        max_piece_seconds) come from the checkpoint; keyword arguments override (``max_piece_seconds=None``
        restores splitting at the encoder's window only). ``device`` ("cpu", "cuda", "cuda:1", ...; default
        CPU) is where the whole model runs.
        """
        dev = resolve_device(device)
        t0 = time.perf_counter()
        model, cfg = load_connector(path, speech_encoder=speech_encoder, translator=translator)
        if dev.type != "cpu":
            model.to(dev)
        opts = {k: v for k, v in cfg.get("decoding", {}).items() if k in DECODING_KEYS}
        opts.update(decoding)
        st = cls(model, **opts)
        st.language, st.checkpoint, st.checkpoint_config = target_language(cfg), Path(path), cfg
        log.info(
            "loaded %s (%s -> %s) on %s in %.1f s",
            path,
            (cfg.get("speech_encoder") or {}).get("spec"),
            cfg["translator"].get("spec"),
            dev,
            time.perf_counter() - t0,
        )
        return st

    def describe(self) -> dict:
        """The model and decoding behind this translator's outputs (recorded in JSON outputs)."""
        cfg = self.checkpoint_config
        return {
            "model": {
                "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "speech_encoder": (cfg.get("speech_encoder") or {}).get("spec")
                or getattr(self.model.speech_encoder, "spec", None),
                "translator": (cfg.get("translator") or {}).get("spec") or getattr(self.model.translator, "spec", None),
                "connector": (cfg.get("connector") or {}).get("name"),
                "sltalign_version": cfg.get("sltalign_version"),
            },
            "decoding": {
                "beam": self.beam,
                "max_len": self.max_len,
                "length_penalty": self.length_penalty,
                "tokens_per_second": self.tokens_per_second,
                "max_piece_seconds": self.max_piece_seconds,
                "sentence_pause_seconds": self.sentence_pause_seconds,
            },
        }

    # ------------------------------------------------------------------------------------------
    def _load(self, x: AudioInput, sampling_rate: int | None = None) -> np.ndarray:
        """-> (N,) float32 at 16 kHz; an empty clip (array or file) gives 0 samples, other problems raise.

        ``sampling_rate``: the rate of array inputs (resampled with soxr); files carry their own rate."""
        if isinstance(x, (str, Path)):
            try:
                return load_audio(x, sample_rate=SAMPLE_RATE)
            except AudioError:
                if Path(x).is_file() and _is_empty_file(x):
                    return np.zeros(0, dtype=np.float32)
                raise
        if getattr(x, "size", None) == 0 or (hasattr(x, "numel") and x.numel() == 0):
            return np.zeros(0, dtype=np.float32)
        return as_waveform(x, sampling_rate or SAMPLE_RATE)

    def _pieces(self, wav: np.ndarray) -> list[np.ndarray]:
        """The pieces of ``_piece_spans`` as arrays."""
        return [wav[a:b] for a, b in self._piece_spans(wav)]

    def _piece_spans(self, wav: np.ndarray) -> list[tuple[int, int]]:
        """Split audio longer than the piece limit at pauses (Silero VAD); shorter audio is one piece.
        -> half-open sample spans (16 kHz) in order; [] when there is nothing to translate.

        The limit is ``max_piece_seconds`` or the encoder's window, whichever is shorter. Pieces cut to fit
        the window keep a margin (at most 28 s of Whisper's 30) so the cut has room to land on a pause."""
        window = self.model.speech_encoder.max_seconds
        limit = self.max_piece_seconds
        if window is not None and (limit is None or limit >= window):
            limit, target = window, min(28.0, window - 1.0)
        else:
            target = limit
        if limit is None or len(wav) <= limit * SAMPLE_RATE:
            return [(0, len(wav))] if len(wav) >= MIN_SAMPLES else []
        from .segment import split_long_audio

        pause = self.sentence_pause_seconds
        spans = split_long_audio(
            wav,
            sample_rate=SAMPLE_RATE,
            max_seconds=target,
            packing="greedy" if pause is None else "pauses",
            sentence_pause_seconds=pause,
        )
        return [(a, b) for a, b in spans if b - a >= MIN_SAMPLES]

    def max_len_for(self, num_samples: int) -> int:
        """Output token limit for a piece of ``num_samples`` samples at 16 kHz (see ``__init__``)."""
        steps_of_10s = math.ceil(num_samples / SAMPLE_RATE / 10.0)
        if steps_of_10s <= 1:
            return self.max_len
        return max(self.max_len, math.ceil(steps_of_10s * 10.0 * self.tokens_per_second))

    def translate(
        self,
        inputs: AudioInput | Sequence[AudioInput],
        *,
        beam: int | None = None,
        batch_size: int | None = None,
        progress: bool = False,
        sampling_rate: int | None = None,
        return_segments: bool = False,
        errors: str = "raise",
    ) -> str | list[str] | Translation | list[Translation]:
        """Translate one input (-> str) or a list of inputs (-> list[str], same order).

        ``sampling_rate``: the rate of array inputs when it is not 16 kHz (they are resampled).
        ``return_segments=True`` returns ``Translation`` objects instead (``translate_segments``).
        ``errors``: "raise" (an unreadable or missing input raises, nothing is translated) or "skip" (every good
        input is translated; each bad one gives None, a warning naming it, and an entry in ``last_errors``)."""
        if return_segments:
            return self.translate_segments(
                inputs, beam=beam, batch_size=batch_size, progress=progress, sampling_rate=sampling_rate, errors=errors
            )
        single = isinstance(inputs, (str, Path, np.ndarray, torch.Tensor))
        out = self._run(
            [inputs] if single else list(inputs),
            beam=beam,
            batch_size=batch_size,
            progress=progress,
            sampling_rate=sampling_rate,
            sources=False,
            errors=errors,
        )
        joined = [None if t is None else t.text for t in out]
        return joined[0] if single else joined

    def translate_segments(
        self,
        inputs: AudioInput | Sequence[AudioInput],
        *,
        beam: int | None = None,
        batch_size: int | None = None,
        progress: bool = False,
        sampling_rate: int | None = None,
        sources: bool | None = None,
        errors: str = "raise",
    ) -> Translation | list[Translation]:
        """Translate with timestamps: one ``Translation`` per input (one input -> one, a list -> a list).

        Each segment is a piece the audio was cut into (at pauses, see ``max_piece_seconds``) with its start
        and end in seconds and its translation; ``Translation.text`` is exactly what ``translate`` returns.
        ``sources`` (default: where the model has a CTC head) adds what the connector heard to each segment
        (``Segment.source``, the transcript its CTC head reads), from the same connector pass as the translation.
        ``errors``: as for ``translate`` ("skip": a bad input gives None)."""
        single = isinstance(inputs, (str, Path, np.ndarray, torch.Tensor))
        if sources is None:
            sources = self.model.ctc_head is not None
        elif sources and self.model.ctc_head is None:
            raise ValueError("sources=True needs a model with a CTC head (this connector has none)")
        out = self._run(
            [inputs] if single else list(inputs),
            beam=beam,
            batch_size=batch_size,
            progress=progress,
            sampling_rate=sampling_rate,
            sources=sources,
            errors=errors,
        )
        return out[0] if single else out

    def _run(
        self,
        items: list[AudioInput],
        *,
        beam: int | None,
        batch_size: int | None,
        progress: bool,
        sampling_rate: int | None,
        sources: bool,
        errors: str = "raise",
    ) -> list[Translation | None]:
        """Load, cut into pieces, translate in length-sorted batches, and put each input's pieces back in order.
        With ``errors="skip"`` an input that cannot be read is None in the result (see ``translate``)."""
        if errors not in ERRORS:
            raise ValueError(f"errors: expected one of {ERRORS}, got {errors!r}")
        t0 = time.perf_counter()
        self.last_errors = {}
        pieces: list[tuple[int, np.ndarray]] = []  # (input index, piece)
        spans: list[tuple[int, int]] = []  # the pieces' sample spans in their inputs
        durations: list[float] = []
        for i, x in enumerate(items):
            try:
                wav = self._load(x, sampling_rate)
            except (AudioError, OSError) as e:  # AudioError: undecodable, missing, bad array; OSError: permissions
                if errors == "raise":
                    raise
                self.last_errors[i] = str(e)
                warnings.warn(f"{_input_name(i, x)} skipped: {e}", stacklevel=3)
                durations.append(0.0)
                continue
            durations.append(len(wav) / SAMPLE_RATE)
            if wav.size and float(np.max(np.abs(wav))) < SILENT_PEAK:
                peak = float(np.max(np.abs(wav)))
                level = f"{20 * math.log10(peak):.0f} dBFS" if peak > 0 else "all zeros"
                warnings.warn(
                    f"{_input_name(i, x)} has no audio to translate: it is silent (peak {level}); returning ''", stacklevel=3
                )
                continue
            parts = self._piece_spans(wav)
            if not parts:
                warnings.warn(f"{_input_name(i, x)} has no audio to translate; returning ''", stacklevel=3)
            pieces.extend((i, wav[a:b]) for a, b in parts)
            spans.extend(parts)
        t_load = time.perf_counter()
        bs = batch_size or self.batch_size
        # Longest first in batches of similar length: least padding, and the slowest batch shows up first.
        # A batch never mixes output limits (they follow each piece's own duration).
        order = sorted(range(len(pieces)), key=lambda j: -len(pieces[j][1]))
        limit = [self.max_len_for(len(p)) for _, p in pieces]
        batches: list[list[int]] = []
        for j in order:
            if batches and len(batches[-1]) < bs and limit[batches[-1][0]] == limit[j]:
                batches[-1].append(j)
            else:
                batches.append([j])
        texts: dict[int, str] = {}
        heard: dict[int, str] = {}
        with torch.inference_mode():
            for idx in progress_bar(batches, enabled=progress, desc="translate", unit="batch"):
                states, mask = self.model.encode_audio([pieces[j][1] for j in idx])
                kw = {"beam": beam or self.beam, "max_len": limit[idx[0]], "length_penalty": self.length_penalty}
                if sources:  # one connector pass (and one search of its posteriors) gives both
                    out, said = self.model.translate_and_transcribe(states, mask, **kw)
                    heard.update(zip(idx, said))
                else:
                    out = self.model.translate_states(states, mask, **kw)
                texts.update(zip(idx, out))
        results = [Translation(text="", duration=d, language=self.language) for d in durations]
        for j, (i, _) in enumerate(pieces):
            a, b = spans[j]
            results[i].segments.append(Segment(a / SAMPLE_RATE, b / SAMPLE_RATE, texts[j], heard.get(j)))
        with_pieces = {i for i, _ in pieces}
        for i, r in enumerate(results):
            r.text = " ".join(s.text for s in r.segments if s.text).strip()
            if i in with_pieces and not r.text:  # the docstring's promise: nothing translated is never silent
                warnings.warn(f"{_input_name(i, items[i])}: no speech was recognised (noise?); returning ''", stacklevel=3)
        t_end = time.perf_counter()
        audio_seconds = float(sum(durations))
        self.last_timings = {"load_seconds": t_load - t0, "model_seconds": t_end - t_load, "audio_seconds": audio_seconds}
        log.info(
            "translated %d input(s), %.1f s of audio in %d piece(s): load %.2f s, model %.2f s",
            len(items),
            audio_seconds,
            len(pieces),
            t_load - t0,
            t_end - t_load,
        )
        return [None if i in self.last_errors else r for i, r in enumerate(results)]
