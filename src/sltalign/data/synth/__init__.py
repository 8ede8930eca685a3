"""The TTS corpus builder: English sentences -> synthetic speech clips + manifests with translations.

No speech-translation corpus can be downloaded here, so training data is made: real English sentences
(by default the English side of Debian's trans-de-en dictionary, 18.5k sentences) are spoken by eSpeak NG,
Flite, Festival or the neural voices of the ``voices`` extra (hibari, Piper, Kokoro blends) with many voices,
rates and pitches, optionally through a channel (noise, babble, rooms, telephone, codecs, speed, pitch,
level, silences with breaths). Targets come from a line-parallel human translation file ("human") or from
the frozen MT through ``translate_fn`` ("mt:<spec>", distillation targets).

One concern per module: ``sentences`` (the English text), ``config`` (SynthConfig), ``plan`` (every clip's
random choices, drawn before rendering), ``backends/`` (one module per synthesiser), ``augment`` (the
channel), ``corpus`` (rendering in workers, resuming, manifests; its docstring lists the files written).

Guarantees:

* Deterministic: the same config (seed) gives the same ids, texts, voice settings and the same audio bytes,
  whatever ``workers`` is. Every clip draws from its own generators seeded by (seed, split, index), and
  every sentence is synthesised from a freshly initialised synthesiser: eSpeak NG and Piper in a server
  that forks per request (libespeak-ng keeps a pitch-flutter phase between utterances; Piper's ONNX noise
  generator advances with every run), Flite and Festival in a process per sentence, hibari with the clip's
  seed for its noise, Kokoro's session having no randomness.
* Resumable: a clip is finished when its ``.json`` exists (written after its ``.flac``, both atomically);
  finished clips are kept, everything else is rendered again. Settings added later (the neural voices'
  speed, the channel's steps) stay out of ``synth_config.json`` while off, so older corpora still resume.
* Splits never share a sentence. Long clips (``long_fraction``) join several sentences of their split into
  20-40 s of speech with short pauses; their transcript (and translation) is the sentences' joined with spaces.
* Workers are spawned processes: a script calling synthesize_corpus needs `if __name__ == "__main__":`.
"""

from __future__ import annotations

from .augment import apply_channel, draw_channel
from .backends import (
    BACKENDS,
    DEFAULT_VOICES,
    ENGLISH_VOICES,
    ESPEAK_VARIANTS,
    FLITE_VOICES,
    HIBARI_VOICES,
    KOKORO_VOICES,
    PIPER_VOICES,
    EspeakCommand,
    EspeakLibrary,
    FestivalCommand,
    FliteCommand,
    HibariBackend,
    KokoroBackend,
    PiperBackend,
    default_voices,
    make_backend,
)
from .config import CHANNEL_PROBS, SPLITS, SynthConfig
from .corpus import render_clip, synthesize_corpus
from .plan import ClipPlan, plan_clips
from .sentences import _ANNOTATION, DEFAULT_SENTENCES, _clean, ding_sentences, load_sentences

__all__ = [
    "SynthConfig",
    "synthesize_corpus",
    "load_sentences",
    "ding_sentences",
    "ENGLISH_VOICES",
    "ESPEAK_VARIANTS",
    "DEFAULT_VOICES",
    "make_backend",
    # also importable, as before the split into modules
    "BACKENDS",
    "SPLITS",
    "CHANNEL_PROBS",
    "DEFAULT_SENTENCES",
    "FLITE_VOICES",
    "HIBARI_VOICES",
    "PIPER_VOICES",
    "KOKORO_VOICES",
    "ClipPlan",
    "plan_clips",
    "render_clip",
    "apply_channel",
    "draw_channel",
    "default_voices",
    "EspeakLibrary",
    "EspeakCommand",
    "FliteCommand",
    "FestivalCommand",
    "HibariBackend",
    "PiperBackend",
    "KokoroBackend",
    "_ANNOTATION",
    "_clean",
]
