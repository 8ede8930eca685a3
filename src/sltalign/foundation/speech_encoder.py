"""Frozen speech encoders behind the ``SpeechEncoder`` interface: Whisper (two modes) and other HF encoders.

``load_speech_encoder(spec)`` is the one entry point:
    "packaged:whisper-tiny.en" / "packaged:whisper-base"   CTranslate2 dirs installed by pip (converted here)
    "/some/dir"                                             save_pretrained dir, or a CTranslate2 dir (model.bin)
    "hf:openai/whisper-small" or "openai/whisper-small"     a hub id, through the same from_pretrained path

Whisper frame rule (both modes). The log-mel has hop 160 and a centred 400-sample window, so mel frame t is
centred on sample 160 t and covers real audio when 160 t < n: T_mel = ceil(n / 160). conv1 (kernel 3,
stride 1, padding 1) keeps T_mel frames; conv2 (kernel 3, stride 2, padding 1) gives
floor((T_mel - 1) / 2) + 1 = ceil(T_mel / 2) frames, frame j centred on mel frame 2 j. Hence

    T_s = ceil(ceil(n / 160) / 2) = ceil(n / 320)        (50 frames a second, one per 320 samples begun)

(openai/whisper counts n // 160 content mel frames, i.e. it drops a last partial hop; we keep the frame whose
centre lies inside the audio, at most one frame more.)

Modes:
    pad30  the paper's way: pad to 30 s, run the full encoder (1500 frames) and return the T_s frames that
           cover real audio. Exactly what Whisper saw in training; cost independent of length.
    trim   run the encoder on the T_mel real mel frames only, with the position embeddings sliced to T_s.
           Much faster on short clips; the last frames differ most from pad30 (they no longer see padding).
           Batches of different lengths use a key-padding mask and zero the conv1 output past each utterance
           (which is what conv2's own zero padding gives a lone utterance), so batched == one by one.
The mel of an utterance never depends on its batch: each is computed alone. In trim mode the waveform is
zero-padded by >= 400 samples before the STFT (not to 30 s): every frame touching real audio, and the
per-utterance maximum used by Whisper's log-mel normalisation, are then the same as in the 30 s version
(to float rounding, ~1e-7; tests check it), at 1/10 of the STFT cost.
Inputs longer than 30 s raise ValueError: split long audio into utterances first (silero-vad; the
``translate`` command does it). Chunking silently would hand the connector discontinuous states.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from sltalign.foundation import packaged
from sltalign.audio import SAMPLE_RATE
from sltalign.foundation.base import ENCODER_PRECISIONS, SpeechEncoder
from sltalign.foundation.ctranslate2 import is_ctranslate2_dir, load_ctranslate2_whisper_encoder

if TYPE_CHECKING:
    from transformers import SequenceFeatureExtractor, WhisperFeatureExtractor

WHISPER_MODES = ("trim", "pad30")


def whisper_mel_frames_for(num_samples: int) -> int:
    """Mel frames whose centre lies inside ``num_samples`` samples: ceil(n / 160)."""
    return -(-num_samples // 160)


def whisper_frames_for(num_samples: int) -> int:
    """Whisper encoder frames covering ``num_samples`` samples: ceil(n / 320) (see the module docstring)."""
    return -(-num_samples // 320)


def _waveforms_to_numpy(
    waveforms: Sequence[np.ndarray | torch.Tensor], *, min_samples: int, max_samples: int | None, who: str
) -> list[np.ndarray]:
    """Validate a batch of 1-D float waveforms and return them as float32 numpy arrays."""
    if isinstance(waveforms, (np.ndarray, torch.Tensor)) and waveforms.ndim == 1:
        raise ValueError(f"{who}.encode takes a sequence of waveforms; wrap a single one in a list")
    if len(waveforms) == 0:
        raise ValueError(f"{who}.encode got an empty batch")
    out: list[np.ndarray] = []
    for i, w in enumerate(waveforms):
        if isinstance(w, torch.Tensor):
            if w.is_floating_point():
                w = w.detach().to("cpu", torch.float32).numpy()
            else:
                w = w.detach().cpu().numpy()
        w = np.asarray(w)
        if w.ndim != 1:
            raise ValueError(f"waveform {i} has shape {w.shape}; expected 1-D mono audio (mix channels down first)")
        if not np.issubdtype(w.dtype, np.floating):
            raise ValueError(f"waveform {i} has dtype {w.dtype}; expected float samples in [-1, 1] (int16 PCM: divide by 32768)")
        n = w.shape[0]
        if n == 0:
            raise ValueError(f"waveform {i} is empty (0 samples)")
        if n < min_samples:
            raise ValueError(
                f"waveform {i} is too short: {n} samples ({1000 * n / SAMPLE_RATE:.1f} ms); {who} needs at least "
                f"{min_samples} samples ({1000 * min_samples / SAMPLE_RATE:.0f} ms at 16 kHz)"
            )
        if max_samples is not None and n > max_samples:
            raise ValueError(
                f"waveform {i} is {n / SAMPLE_RATE:.2f} s long; {who} encodes at most "
                f"{max_samples / SAMPLE_RATE:.0f} s at a time. Split long audio into utterances first, e.g. with "
                "silero-vad (`sltalign translate` does this for long files)."
            )
        w = w.astype(np.float32, copy=False)
        if not np.isfinite(w).all():
            raise ValueError(f"waveform {i} contains NaN or infinite samples")
        out.append(w)
    return out


def _lengths_to_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    # (B,) -> (B, width) bool, True on the first lengths[b] positions
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


class WhisperSpeechEncoder(SpeechEncoder):
    """Whisper's encoder (a transformers ``WhisperEncoder``) as a frozen ``SpeechEncoder``.

    ``mode``: "trim" (encoder on the real frames only) or "pad30" (the paper's 30 s padding); see the
    module docstring. Output: states (B, T_s, D_s) float32 with T_s = max over the batch of ceil(n / 320),
    mask (B, T_s) bool; padded positions hold zeros.
    """

    #: one encoder frame's worth of audio (20 ms); shorter clips are refused
    min_samples: int = 320

    def __init__(
        self,
        *,
        whisper_encoder_module: nn.Module,
        feature_extractor: WhisperFeatureExtractor,
        mode: str = "trim",
        spec: str = "",
    ):
        super().__init__()
        if mode not in WHISPER_MODES:
            raise ValueError(f"unknown Whisper encoder mode {mode!r}; expected one of {WHISPER_MODES}")
        config = whisper_encoder_module.config
        if feature_extractor.feature_size != config.num_mel_bins:
            raise ValueError(
                f"feature extractor gives {feature_extractor.feature_size} mel bins but the encoder expects "
                f"{config.num_mel_bins} (num_mel_bins)"
            )
        if feature_extractor.sampling_rate != SAMPLE_RATE or feature_extractor.hop_length != 160:
            raise ValueError("Whisper features must be 16 kHz with hop 160 (10 ms mel frames)")
        if getattr(config, "_attn_implementation", "sdpa") not in ("eager", "sdpa"):
            # the batched trim forward passes an additive (B, 1, 1, T) mask, which eager and sdpa take
            whisper_encoder_module.set_attn_implementation("sdpa")
        self.encoder = whisper_encoder_module
        self.feature_extractor = feature_extractor
        self.mode = mode
        self.spec = spec
        self.dim = config.d_model
        self.num_mel_bins = config.num_mel_bins
        # the encoder's window: 1500 positions x 2 mel frames x 160 samples = 30 s
        self.max_samples = config.max_source_positions * 2 * 160
        self.max_seconds = self.max_samples / SAMPLE_RATE
        self.freeze()

    # --- sizes -----------------------------------------------------------------------------------------
    def frames_for(self, num_samples: int) -> int:
        """ceil(num_samples / 320) in both modes; ValueError beyond the 30 s window."""
        if num_samples > self.max_samples:
            raise ValueError(f"{num_samples} samples exceed Whisper's {self.max_seconds:.0f} s window")
        return whisper_frames_for(num_samples)

    @property
    def device(self) -> torch.device:
        return self.encoder.conv1.weight.device

    # --- features --------------------------------------------------------------------------------------
    def _log_mel(self, wave: np.ndarray) -> np.ndarray:
        # (n,) -> (n_mels, M // 160): the extractor pads nothing more (we pad ourselves)
        feats = self.feature_extractor(
            wave, sampling_rate=SAMPLE_RATE, padding="longest", return_tensors="np", return_attention_mask=False
        ).input_features
        return feats[0]

    def features(self, waveforms: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms -> (mel (B, n_mels, T_mel), mel_lengths (B,)); each utterance's mel computed alone.

        pad30: T_mel = 3000 (30 s of zero padding, exactly the reference features).
        trim:  T_mel = max ceil(n / 160); frames past an utterance's length are zero.
        """
        waves = _waveforms_to_numpy(
            waveforms, min_samples=self.min_samples, max_samples=self.max_samples, who="WhisperSpeechEncoder"
        )
        lengths = [whisper_mel_frames_for(len(w)) for w in waves]
        full = self.max_samples // 160
        width = full if self.mode == "pad30" else max(lengths)
        mel = torch.zeros(len(waves), self.num_mel_bins, width)
        for b, w in enumerate(waves):
            if self.mode == "pad30":
                padded_len = self.max_samples
            else:
                # >= 400 zeros after the audio: frames touching it (and the normalising max) are as at 30 s
                padded_len = min(self.max_samples, 160 * math.ceil((len(w) + 400) / 160))
            padded = np.zeros(padded_len, dtype=np.float32)
            padded[: len(w)] = w
            m = torch.from_numpy(self._log_mel(padded))
            if self.mode == "pad30":
                mel[b] = m[:, :full]
            else:
                mel[b, :, : lengths[b]] = m[:, : lengths[b]]
        return mel, torch.tensor(lengths, dtype=torch.long)

    # --- encoder ---------------------------------------------------------------------------------------
    def encode(self, waveforms: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms (16 kHz, 1-D float, 20 ms to 30 s each) -> states (B, T_s, D_s), mask (B, T_s)."""
        mel, mel_lengths = self.features(waveforms)
        return self.encode_features(mel, mel_lengths)

    @torch.no_grad()
    def encode_features(self, mel: torch.Tensor, mel_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mel (B, n_mels, T_mel), mel_lengths (B,) -> states (B, T_s, D_s) float32, mask (B, T_s) bool.

        pad30 expects T_mel = 3000; trim takes any T_mel <= 3000 (values past mel_lengths are ignored).
        """
        if mel.dim() != 3 or mel.shape[1] != self.num_mel_bins:
            raise ValueError(f"mel must be (B, {self.num_mel_bins}, T_mel); got {tuple(mel.shape)}")
        bad_len = (mel_lengths < 1) | (mel_lengths > mel.shape[-1])
        if mel_lengths.shape != (mel.shape[0],) or bool(bad_len.any()):
            raise ValueError(f"mel_lengths must be (B,) in 1..{mel.shape[-1]}; got {mel_lengths.tolist()}")
        param = self.encoder.conv1.weight
        mel = mel.to(param.device, param.dtype)
        mel_lengths = mel_lengths.to(param.device)
        frame_lengths = (mel_lengths + 1) // 2  # conv2, stride 2: ceil(T_mel / 2)
        with self.autocast(mel.device):
            if self.mode == "pad30":
                if mel.shape[-1] != self.max_samples // 160:
                    raise ValueError(f"pad30 mode needs {self.max_samples // 160} mel frames; got {mel.shape[-1]}")
                states = self.encoder(mel).last_hidden_state  # (B, 1500, D_s): transformers' own forward
                width = int(frame_lengths.max())
                states = states[:, :width]
            else:
                states = self._trimmed_forward(mel, mel_lengths)
                width = states.shape[1]
        mask = _lengths_to_mask(frame_lengths, width)
        states = states.float() * mask[..., None]  # padded frames: exact zeros, not whatever attention gave
        return states, mask

    def _trimmed_forward(self, mel: torch.Tensor, mel_lengths: torch.Tensor) -> torch.Tensor:
        """Whisper's encoder forward on T_mel <= 3000 frames: (B, n_mels, T_mel) -> (B, ceil(T_mel/2), D_s)."""
        enc = self.encoder
        t_mel = mel.shape[-1]
        if t_mel > self.max_samples // 160:
            raise ValueError(f"at most {self.max_samples // 160} mel frames; got {t_mel}")
        mel_mask = _lengths_to_mask(mel_lengths, t_mel)  # (B, T_mel)
        ragged = bool((mel_lengths != t_mel).any())
        x = mel * mel_mask[:, None, :] if ragged else mel
        x = nn.functional.gelu(enc.conv1(x))  # (B, D_s, T_mel)
        if ragged:
            # a lone utterance's conv2 sees zero padding after its last frame: give batched ones the same
            x = x * mel_mask[:, None, :].to(x.dtype)
        x = nn.functional.gelu(enc.conv2(x))  # (B, D_s, T_s)
        x = x.permute(0, 2, 1)  # (B, D_s, T_s) -> (B, T_s, D_s)
        t_s = x.shape[1]
        x = x + enc.embed_positions.weight[:t_s]
        attn_mask = None
        if ragged:
            keep = _lengths_to_mask((mel_lengths + 1) // 2, t_s)  # (B, T_s)
            # additive key-padding mask (B, 1, 1, T_s): padded keys get the dtype's minimum, i.e. weight 0
            attn_mask = torch.zeros(keep.shape, dtype=x.dtype, device=x.device)
            attn_mask.masked_fill_(~keep, torch.finfo(x.dtype).min)
            attn_mask = attn_mask[:, None, None, :]
        for layer in enc.layers:
            x = layer(x, attn_mask)
        return enc.layer_norm(x)


class HFSpeechEncoder(SpeechEncoder):
    """Any transformers speech encoder: Speech2Text's encoder, wav2vec2, HuBERT, WavLM, ...

    ``encoder_module`` takes the feature extractor's first model input (``input_values`` or
    ``input_features``) and returns ``last_hidden_state``; ``output_lengths`` maps input lengths (samples
    or feature frames, as the extractor produces them) to output frames, e.g. the model's own
    ``_get_feat_extract_output_lengths``.

    Batch independence: several of these models are not padding-exact (wav2vec2-base's group norm over
    time, Speech2Text's stride-2 convolutions reading padded frames), so utterances are run in groups of
    equal length, with no padding at all, and the outputs padded afterwards. This is exact for every model
    and as fast as padding when lengths repeat (length-bucketed data).
    """

    #: one 25 ms analysis window, the shortest input these front ends turn into a frame
    min_samples: int = 400
    mode: str = "full"

    def __init__(
        self,
        *,
        encoder_module: nn.Module,
        feature_extractor: SequenceFeatureExtractor,
        output_lengths: Callable[[torch.Tensor], torch.Tensor],
        dim: int,
        spec: str = "",
        max_seconds: float | None = None,
    ):
        super().__init__()
        if getattr(feature_extractor, "sampling_rate", SAMPLE_RATE) != SAMPLE_RATE:
            raise ValueError(f"feature extractor expects {feature_extractor.sampling_rate} Hz audio; sltalign uses 16 kHz")
        self.encoder = encoder_module
        self.feature_extractor = feature_extractor
        self.input_name = feature_extractor.model_input_names[0]
        self._output_lengths = output_lengths
        self.dim = dim
        self.spec = spec
        self.max_seconds = max_seconds
        self._input_length_cache: dict[int, int] = {}
        self.freeze()

    def _features(self, wave: np.ndarray) -> torch.Tensor:
        # (n,) -> (1, n) input values or (1, T, F) input features, normalised per utterance
        with np.errstate(divide="ignore", invalid="ignore"):
            feats = self.feature_extractor(wave, sampling_rate=SAMPLE_RATE, return_tensors="pt")[self.input_name]
        # per-utterance mean/variance normalisation of a constant (silent) channel divides by a zero std in
        # some extractors (Speech2Text): only those values are non-finite, and a constant normalises to 0
        return torch.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)

    def _input_length(self, num_samples: int) -> int:
        """Length of the model input (samples or feature frames) for ``num_samples`` samples."""
        if num_samples not in self._input_length_cache:
            if self.input_name == "input_values":
                length = num_samples
            else:
                length = int(self._features(np.zeros(num_samples, dtype=np.float32)).shape[1])
            self._input_length_cache[num_samples] = length
        return self._input_length_cache[num_samples]

    def frames_for(self, num_samples: int) -> int:
        if num_samples < self.min_samples:
            return 0
        return int(self._output_lengths(torch.tensor([self._input_length(num_samples)]))[0])

    @torch.no_grad()
    def encode(self, waveforms: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms (16 kHz, 1-D float) -> states (B, T_s, D_s) float32, mask (B, T_s) bool."""
        max_samples = None if self.max_seconds is None else int(self.max_seconds * SAMPLE_RATE)
        waves = _waveforms_to_numpy(waveforms, min_samples=self.min_samples, max_samples=max_samples, who="HFSpeechEncoder")
        param = next(self.encoder.parameters())
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(waves):
            groups.setdefault(len(w), []).append(i)
        outputs: list[torch.Tensor | None] = [None] * len(waves)
        for idx in groups.values():
            feats = torch.cat([self._features(waves[i]) for i in idx]).to(param.device)
            if feats.is_floating_point():
                feats = feats.to(param.dtype)
            with self.autocast(feats.device):
                states = self.encoder(**{self.input_name: feats}).last_hidden_state  # (G, T_s, D_s)
            for j, i in enumerate(idx):
                outputs[i] = states[j].float()
        lengths = torch.tensor([o.shape[0] for o in outputs], dtype=torch.long)
        expected = [self.frames_for(len(w)) for w in waves]
        if lengths.tolist() != expected:  # the length rule and the model disagree: masks would lie
            raise RuntimeError(f"encoder returned {lengths.tolist()} frames; output_lengths predicts {expected}")
        width = int(lengths.max())
        states = torch.zeros(len(waves), width, self.dim, device=outputs[0].device)
        for i, o in enumerate(outputs):
            states[i, : o.shape[0]] = o
        mask = _lengths_to_mask(lengths.to(states.device), width)
        return states, mask


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


def _looks_like_path(spec: str) -> bool:
    # hub ids are "name" or "org/name"; anything else with a slash, or starting like a path, is a path
    return spec.startswith(("/", ".", "~")) or "\\" in spec or spec.count("/") > 1 or spec.endswith("/")


def _whisper_from_ctranslate2(dirs: list[Path], *, mode: str, spec: str) -> WhisperSpeechEncoder:
    from transformers import WhisperFeatureExtractor

    encoder = load_ctranslate2_whisper_encoder(dirs)  # the decoder is never even converted
    fe = WhisperFeatureExtractor(feature_size=encoder.config.num_mel_bins)
    return WhisperSpeechEncoder(whisper_encoder_module=encoder, feature_extractor=fe, mode=mode, spec=spec)


def _from_pretrained(source: str, *, mode: str, spec: str) -> SpeechEncoder:
    """The transformers path, the same for a local save_pretrained dir and a hub id."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, WhisperFeatureExtractor

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise OSError(
            f"cannot load speech encoder {spec!r}: {source} is neither a local model directory (config.json, "
            f"or a CTranslate2 model.bin) nor a reachable hub model ({e})"
        ) from e
    try:
        fe = AutoFeatureExtractor.from_pretrained(source)
    except (OSError, ValueError, KeyError) as e:
        if config.model_type != "whisper":
            raise OSError(f"cannot load the feature extractor of {spec!r} (preprocessor_config.json): {e}") from e
        fe = WhisperFeatureExtractor(feature_size=config.num_mel_bins)  # Whisper's is fully set by the mel bins
    model = AutoModel.from_pretrained(source)
    model.eval()
    if config.model_type == "whisper":
        encoder = model.get_encoder()
        del model  # keep the encoder half only
        return WhisperSpeechEncoder(whisper_encoder_module=encoder, feature_extractor=fe, mode=mode, spec=spec)
    encoder = model.get_encoder() if getattr(config, "is_encoder_decoder", False) else model
    lengths_fn = getattr(encoder, "_get_feat_extract_output_lengths", None) or getattr(
        model, "_get_feat_extract_output_lengths", None
    )
    input_name = getattr(fe, "model_input_names", [None])[0]
    if lengths_fn is None or input_name not in ("input_values", "input_features"):
        raise ValueError(
            f"{spec!r} is a {config.model_type} model, not a supported speech encoder (expected Whisper, Speech2Text, "
            "wav2vec2, HuBERT, WavLM or another model with _get_feat_extract_output_lengths)"
        )
    dim = getattr(config, "hidden_size", None) or config.d_model
    del model
    return HFSpeechEncoder(encoder_module=encoder, feature_extractor=fe, output_lengths=lengths_fn, dim=dim, spec=spec)


def load_speech_encoder(spec: str, *, mode: str = "trim", precision: str = "fp32", engine: str = "torch") -> SpeechEncoder:
    """A frozen speech encoder from a model name (see the module docstring for the accepted forms).

    ``mode`` ("trim" | "pad30") applies to Whisper; other encoders always see the whole utterance and
    report mode "full". ``precision``: "fp32" or "bf16" (see ``SpeechEncoder.set_precision``).
    ``engine`` (Whisper only; foundation/ctranslate2_encoder.py): "torch" (default), "ctranslate2" (trim mode;
    precision "int8", "fp32", or "auto" = int8) or "auto" (the fastest engine and precision whose states stay
    within a mean frame cosine of 0.99 of torch fp32 on this machine, measured once and remembered; the
    ``precision`` argument is then ignored). Where CTranslate2 cannot run (package missing, no CTranslate2
    directory for the model) "ctranslate2" warns and falls back to torch fp32.
    Raises PackagedModelError for an unknown packaged name, FileNotFoundError for a missing directory,
    OSError when neither a local directory nor the hub has the model.
    """
    if mode == "decoder":
        from sltalign.foundation.whisper_decoder import load_whisper_decoder_source

        if precision != "fp32":
            raise ValueError(f"the decoder source computes in int8 (CTranslate2) or fp32, not {precision!r}")
        return load_whisper_decoder_source(spec)
    if mode not in WHISPER_MODES:
        raise ValueError(f"unknown speech encoder mode {mode!r}; expected one of {(*WHISPER_MODES, 'decoder')}")
    from sltalign.foundation.ctranslate2_encoder import CT2_PRECISIONS, ENCODER_ENGINES

    if engine not in ENCODER_ENGINES:
        raise ValueError(f"unknown speech encoder engine {engine!r}; expected one of {ENCODER_ENGINES}")
    if engine == "ctranslate2" and mode != "trim":
        raise ValueError(
            f"the ctranslate2 engine encodes trimmed input only (mode 'trim'), not mode {mode!r}; use engine 'torch'"
        )
    allowed = ENCODER_PRECISIONS if engine == "torch" else (*CT2_PRECISIONS, "auto") if engine == "ctranslate2" else None
    if allowed is not None and precision not in allowed:
        raise ValueError(f"unknown speech encoder precision {precision!r} for engine {engine!r}; expected one of {allowed}")
    if engine == "torch":
        return _load(spec, mode=mode).set_precision(precision)
    return _load_with_engine(spec, mode=mode, precision=precision, engine=engine)


def _ct2_dir_for(spec: str) -> str | None:
    """The CTranslate2 Whisper directory of a model name (packaged: its model.bin parts assembled once), or None
    where the model has none (a transformers directory or hub id)."""
    if packaged.is_packaged(spec):
        from sltalign.cascade import whisper_ct2_dir

        return whisper_ct2_dir(spec)
    path = Path(spec).expanduser()
    return str(path) if path.is_dir() and is_ctranslate2_dir(path) else None


def _load_with_engine(spec: str, *, mode: str, precision: str, engine: str) -> SpeechEncoder:
    """engine "ctranslate2" or "auto" (see ``load_speech_encoder``)."""
    import warnings

    from sltalign.foundation import ctranslate2_encoder as ct2e

    enc = _load(spec, mode=mode)  # the torch encoder: features, fingerprint, and the fallback
    if not isinstance(enc, WhisperSpeechEncoder):
        if engine == "ctranslate2":
            warnings.warn(
                f"speech encoder {spec!r} is not Whisper: the ctranslate2 engine does not apply; encoding with torch fp32",
                stacklevel=3,
            )
        return enc.set_precision("fp32")
    ct2_dir = _ct2_dir_for(spec)
    if engine == "auto":
        decision = ct2e.choose_engine(enc, ct2_dir)
        engine, precision = decision["engine"], decision["precision"]
        if engine == "torch":
            return enc.set_precision(precision)
    precision = "int8" if precision == "auto" else precision
    why = None if ct2e.ctranslate2_available() else "the ctranslate2 package is not installed (pip install ctranslate2)"
    if why is None and ct2_dir is None:
        why = f"{spec!r} has no CTranslate2 directory (model.bin); convert it with ct2-transformers-converter"
    if why is not None:
        warnings.warn(
            f"speech encoder engine ctranslate2 ({precision}) cannot run: {why}; encoding with torch fp32 instead "
            "(CTranslate2 fp32 states equal torch fp32's; int8 ones differ by a mean frame cosine of ~0.997)",
            stacklevel=3,
        )
        return enc.set_precision("fp32")
    return ct2e.CT2WhisperSpeechEncoder(
        whisper_encoder_module=enc.encoder,
        feature_extractor=enc.feature_extractor,
        ct2_dir=ct2_dir,
        precision=precision,
        spec=enc.spec,
    )


def _load(spec: str, *, mode: str) -> SpeechEncoder:
    if packaged.is_packaged(spec):
        entry, dirs = packaged.resolve(spec)
        if entry.kind != "ctranslate2-whisper":
            raise ValueError(f"{spec!r} is a {entry.kind} model, not a speech encoder")
        return _whisper_from_ctranslate2(dirs, mode=mode, spec=spec)
    if spec.startswith("hf:"):
        return _from_pretrained(spec[3:], mode=mode, spec=spec)
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"speech encoder {spec!r} is a file; expected a model directory")
        if is_ctranslate2_dir(path):
            return _whisper_from_ctranslate2([path], mode=mode, spec=str(path.resolve()))
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} has neither config.json (a transformers save_pretrained directory) nor model.bin "
                "(a CTranslate2 Whisper directory)"
            )
        return _from_pretrained(str(path), mode=mode, spec=str(path.resolve()))
    if _looks_like_path(spec):
        raise FileNotFoundError(f"speech encoder directory {spec!r} does not exist")
    return _from_pretrained(spec, mode=mode, spec=spec)
