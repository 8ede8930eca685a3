"""SynthConfig: every setting that determines a synthetic corpus (its fingerprint keeps a corpus resumable)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .backends import BACKENDS

__all__ = ["SynthConfig", "SPLITS", "CHANNEL_PROBS", "NEW_DEFAULTS", "cli_fields"]

SPLITS = ("train", "dev", "test")
#: the channel's probabilities beyond the original noise and room (all 0 by default)
CHANNEL_PROBS = (
    "speed_perturb_prob",
    "pitch_shift_prob",
    "rir_prob",
    "babble_prob",
    "telephone_prob",
    "codec_prob",
    "level_prob",
    "silence_prob",
)
_RANGES = (
    "speed_range",
    "speed_perturb_range",
    "pitch_shift_range",
    "babble_snr_db",
    "babble_talkers",
    "level_db_range",
    "silence_range",
)


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    """Everything that determines the synthetic corpus. ``workers`` and batch sizes only change speed.

    Fields with ``metadata["cli"]`` (their help line) are the options of ``sltalign data synth``: the command
    line is built from this class (``cli_fields``), so an option and its field cannot drift apart."""

    #: English sentences, one per line, or a Ding dictionary file; None: Debian trans-de-en
    sentences: str | None = field(default=None, metadata={"cli": "English sentences, one per line (default: Debian trans-de-en)"})
    #: human translations line-parallel to ``sentences`` (translation_source "human")
    translations: str | None = field(default=None, metadata={"cli": "human translations, line-parallel to --sentences"})
    n_train: int = field(default=2000, metadata={"cli": "training clips"})
    n_dev: int = field(default=100, metadata={"cli": "dev clips"})
    n_test: int = field(default=100, metadata={"cli": "test clips"})
    #: share of each split's clips made of several sentences, ``long_range`` seconds long
    long_fraction: float = field(default=0.1, metadata={"cli": "share of clips made of several sentences (20-40 s)"})
    #: the train split's own share of long clips (None: ``long_fraction``); long clips cost the most to
    #: encode and train on, while dev/test need them to measure long-input quality
    train_long_fraction: float | None = field(
        default=None, metadata={"cli": "the train split's own share of long clips (default: --long_fraction)"}
    )
    long_range: tuple[float, float] = (20.0, 40.0)
    #: sentences outside this many words are dropped
    min_words: int = 3
    max_words: int = 40
    seed: int = field(
        default=0, metadata={"cli": "seed of every draw (sentences, voices, channel): the same seed gives the same corpus"}
    )
    backend: str = field(
        default="espeak",
        metadata={"cli": "TTS: espeak, espeak-cli, flite, festival, or the voices extra's hibari, piper, kokoro"},
    )
    #: voice names for the backend; None: DEFAULT_VOICES for eSpeak (96), FLITE_VOICES for flite
    voices: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "cli": "the backend's voice names (default: all its English voices; piper: joe or a .onnx path; kokoro: style names or a .npz)"
        },
    )
    #: training clips only: each clip's TTS backend drawn with these weights, e.g. {"espeak": 0.5,
    #: "flite": 0.5} (each backend with its default voices; ``voices`` applies to ``backend``); dev and test
    #: keep ``backend``. A model trained on one synthesiser hears people poorly; more voices help.
    #: None: every clip uses ``backend``
    train_backends: dict[str, float] | None = field(
        default=None,
        metadata={
            "cli": "training clips' backends drawn with these weights, e.g. '{espeak: 0.5, flite: 0.5}' (dev/test: --backend)"
        },
    )
    #: speaking rate in words per minute (eSpeak ``-s``; flite/festival get the equivalent duration stretch)
    rate_range: tuple[int, int] = (130, 200)
    #: eSpeak base pitch 0-99 (ignored by flite/festival)
    pitch_range: tuple[int, int] = (30, 70)
    #: additive noise: SNR drawn from this range (dB) for a ``noise_prob`` share of clips; None: no noise
    noise_snr_db: tuple[float, float] | None = field(
        default=None,
        metadata={"cli": "add noise at an SNR drawn from this range (dB), e.g. [10,30], to --noise_prob of the clips"},
    )
    noise_prob: float = field(default=0.5, metadata={"cli": "share of clips that get the noise of --noise_snr_db"})
    #: a synthetic room (exponentially decaying noise impulse response) for a ``reverb_prob`` share of clips
    reverb_prob: float = field(default=0.0, metadata={"cli": "share of clips put in a synthetic room (RT60 0.2-0.7 s)"})
    rt60_range: tuple[float, float] = (0.2, 0.7)
    #: splits that get the noise, the room and the rest of the channel; the others are rendered exactly as
    #: with none of them (same voices, rates and audio), e.g. ("train",) to train on degraded audio and test
    #: on the clean set
    augment_splits: tuple[str, ...] = field(
        default=SPLITS,
        metadata={
            "cli": "splits that get the noise, the room and the rest of the channel (e.g. [train]: degrade training audio, keep dev/test clean)"
        },
    )
    sample_rate: int = 16000
    #: processes rendering clips (0: in this process)
    workers: int = field(default=2, metadata={"cli": "processes rendering clips"})
    #: manifest translation_source; None: "human" with ``translations``, else "mt:<translate_fn.spec>"
    translation_source: str | None = None
    translate_batch_size: int = 64
    #: splits that get targets from ``translate_fn`` (the others: transcripts only). A recipe trained by CTC
    #: alone needs no translations in its training split, and the MT pass over it is most of the time
    #: synthesis takes (80 of 129 s for the demo's 4,000 clips); dev and test always need them.
    mt_splits: tuple[str, ...] = field(
        default=("train", "dev", "test"), metadata={"cli": "splits that get MT targets (a CTC-only recipe needs none in train)"}
    )
    # --- neural voices (the ``voices`` extra: hibari, piper, kokoro)
    #: speaking speed factor of the neural backends, drawn per clip (their ``rate`` is not used)
    speed_range: tuple[float, float] = field(
        default=(0.85, 1.15), metadata={"cli": "speaking speed of the neural voices (hibari, piper, kokoro), drawn per clip"}
    )
    #: voices of ``train_backends``' backends other than ``backend``, e.g. {"piper": ["/v/en_GB-alan.onnx"],
    #: "kokoro": ["jm_kumo", "my_voices.npz"]}; a backend not named keeps its default voices
    train_voices: dict[str, tuple[str, ...]] | None = field(
        default=None,
        metadata={
            "cli": "voices of --train_backends' backends, e.g. '{piper: [/v/en_GB-alan.onnx], kokoro: [jm_kumo, jf_nezumi]}'"
        },
    )
    # --- the channel: per clip, each with its probability (0: off), in the splits of ``augment_splits``.
    # Applied in this order after the speech: speed, pitch, silence (with breaths and clicks), room
    # (``reverb_prob`` / ``rir_prob``), noise (``noise_snr_db``), babble, room tone, telephone, codec, level.
    #: speed perturbation: resampled by a factor from ``speed_perturb_range`` (tempo and pitch together;
    #: it changes a clip's length after the long clips were fitted to ``long_range``, by the factor)
    speed_perturb_prob: float = field(default=0.0, metadata={"cli": "share of clips sped up / slowed down (tempo and pitch)"})
    speed_perturb_range: tuple[float, float] = field(default=(0.9, 1.1), metadata={"cli": "factors of the speed perturbation"})
    #: pitch shift by semitones from ``pitch_shift_range``, tempo kept (resampling + WSOLA)
    pitch_shift_prob: float = field(default=0.0, metadata={"cli": "share of clips pitch-shifted, tempo kept"})
    pitch_shift_range: tuple[float, float] = field(default=(-3.0, 3.0), metadata={"cli": "semitones of the pitch shift"})
    #: a simulated shoebox room: image-source early reflections + a decaying tail of ``rt60_range``
    #: (a clip drawing both rooms gets this one)
    rir_prob: float = field(
        default=0.0,
        metadata={"cli": "share of clips in a simulated shoebox room (image-source reflections + tail, RT60 0.2-0.7 s)"},
    )
    #: babble: ``babble_talkers`` other synthetic speakers (the corpus's fast backends) at ``babble_snr_db``
    babble_prob: float = field(default=0.0, metadata={"cli": "share of clips with babble of other synthetic talkers"})
    babble_snr_db: tuple[float, float] = field(default=(5.0, 20.0), metadata={"cli": "SNR of the babble (dB)"})
    babble_talkers: tuple[int, int] = field(default=(3, 6), metadata={"cli": "how many talkers babble (low, high)"})
    #: telephone: 8 kHz, band-pass 300-3400 Hz, G.711 mu-law or GSM 06.10 round trip
    telephone_prob: float = field(
        default=0.0,
        metadata={"cli": "share of clips through a telephone channel (8 kHz, 300-3400 Hz, G.711 mu-law or GSM 06.10)"},
    )
    #: lossy codec round trip: MP3 or Opus at a low bitrate
    codec_prob: float = field(default=0.0, metadata={"cli": "share of clips through an MP3 or Opus round trip"})
    #: level change of ``level_db_range`` dB after the peak normalisation
    level_prob: float = field(default=0.0, metadata={"cli": "share of clips made quieter"})
    level_db_range: tuple[float, float] = field(default=(-30.0, 0.0), metadata={"cli": "level change (dB)"})
    #: leading and trailing silence of ``silence_range`` seconds each, with room tone, breaths and clicks
    silence_prob: float = field(
        default=0.0, metadata={"cli": "share of clips with leading/trailing silence holding room tone, breaths and clicks"}
    )
    silence_range: tuple[float, float] = field(default=(0.1, 1.0), metadata={"cli": "seconds of silence at each end"})

    def __post_init__(self) -> None:
        for name in (
            "long_range",
            "rate_range",
            "pitch_range",
            "noise_snr_db",
            "rt60_range",
            "voices",
            "mt_splits",
            "augment_splits",
            *_RANGES,
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))  # lists from YAML / CLI
        if self.train_voices is not None and isinstance(self.train_voices, dict):
            object.__setattr__(
                self, "train_voices", {k: tuple([v] if isinstance(v, str) else v) for k, v in self.train_voices.items()}
            )
        checks = [
            (
                min(self.n_train, self.n_dev, self.n_test) >= 0 and self.n_train + self.n_dev + self.n_test > 0,
                "n_train, n_dev, n_test must be >= 0 and not all 0",
            ),
            (self.backend in BACKENDS, f"backend must be one of {BACKENDS}, got {self.backend!r}"),
            (1 <= self.min_words <= self.max_words, f"need 1 <= min_words <= max_words, got {self.min_words}, {self.max_words}"),
            (len(self.long_range) == 2 and self.long_range[0] > 0, f"long_range must be positive seconds, got {self.long_range}"),
            (self.voices is None or len(self.voices) > 0, "voices must not be empty (None picks the backend's defaults)"),
            (self.workers >= 0 and self.translate_batch_size >= 1, "workers must be >= 0 and translate_batch_size >= 1"),
            (not self.translations or bool(self.sentences), "translations needs sentences (the line-parallel English file)"),
            (set(self.mt_splits) <= set(SPLITS), f"mt_splits must name splits among {SPLITS}, got {self.mt_splits}"),
            (
                set(self.augment_splits) <= set(SPLITS),
                f"augment_splits must name splits among {SPLITS}, got {self.augment_splits}",
            ),
        ]
        tb = self.train_backends
        checks += [
            (
                tb is None
                or (
                    isinstance(tb, dict)
                    and tb
                    and set(tb) <= set(BACKENDS)
                    and all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in tb.values())
                    and sum(tb.values()) > 0
                ),
                f"train_backends must map backends among {BACKENDS} to weights >= 0 (not all 0), got {tb!r}",
            )
        ]
        checks += [
            (0.0 <= getattr(self, k) <= 1.0, f"{k} must be in [0, 1], got {getattr(self, k)}")
            for k in ("long_fraction", "noise_prob", "reverb_prob")
        ]
        checks += [
            (
                self.train_long_fraction is None or 0.0 <= self.train_long_fraction <= 1.0,
                f"train_long_fraction must be None or in [0, 1], got {self.train_long_fraction}",
            )
        ]
        checks += [
            (v is None or (len(v) == 2 and v[0] <= v[1]), f"{k} must be (low, high) with low <= high, got {v}")
            for k in ("long_range", "rate_range", "pitch_range", "noise_snr_db", "rt60_range")
            for v in [getattr(self, k)]
        ]
        checks += [(0.0 <= getattr(self, k) <= 1.0, f"{k} must be in [0, 1], got {getattr(self, k)}") for k in CHANNEL_PROBS]
        checks += [
            (len(v) == 2 and v[0] <= v[1], f"{k} must be (low, high) with low <= high, got {v}")
            for k in _RANGES
            for v in [getattr(self, k)]
        ]
        checks += [
            (
                self.speed_range[0] > 0 and self.speed_perturb_range[0] > 0,
                f"speed_range and speed_perturb_range must be positive factors, got {self.speed_range}, {self.speed_perturb_range}",
            ),
            (self.silence_range[0] >= 0, f"silence_range must be seconds >= 0, got {self.silence_range}"),
            (
                self.babble_talkers[0] >= 1 and all(float(x).is_integer() for x in self.babble_talkers),
                f"babble_talkers must be whole numbers of talkers >= 1, got {self.babble_talkers}",
            ),
        ]
        tv = self.train_voices
        checks += [
            (
                tv is None or (isinstance(tv, dict) and set(tv) <= set(self.train_backends or {}) and all(tv.values())),
                f"train_voices must map backends of train_backends to non-empty voice lists, got {tv!r}",
            )
        ]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise ValueError("SynthConfig: " + "; ".join(problems))

    def counts(self) -> dict[str, int]:
        return {"train": self.n_train, "dev": self.n_dev, "test": self.n_test}

    def long_fraction_for(self, split: str) -> float:
        if split == "train" and self.train_long_fraction is not None:
            return self.train_long_fraction
        return self.long_fraction


#: settings added with the neural voices and the channel, with their defaults: a fingerprint leaves out
#: those at their default, so a corpus made before they existed resumes
NEW_DEFAULTS = {f: SynthConfig.__dataclass_fields__[f].default for f in ("speed_range", "train_voices", *CHANNEL_PROBS, *_RANGES)}


def cli_fields() -> list:
    """The fields of ``SynthConfig`` that ``sltalign data synth`` takes as options (``--name``), in order."""
    import dataclasses

    return [f for f in dataclasses.fields(SynthConfig) if "cli" in f.metadata]
