"""The frozen Whisper *decoder* as a speech source: the soft cascade's input.

The paper aligns the ASR encoder, so its connector has to learn to recognise speech; trained on synthetic
voices, that is where it fails on people. Whisper's own decoder already recognises people. A cascade hands
the MT only its 1-best text; this source hands the connector the decoder's hidden states along the
hypothesis, which carry what the recogniser was unsure of (tight integration: Bahar et al. 2021, Dalmia et al.
2021). Everything here is frozen, so like encoder states the output is computed once per clip and cached.

    waveform (<= 30 s) -> log-mel padded to 30 s (as Whisper was trained; see below)
      -> Whisper encoder -> greedy hypothesis h_1..h_n (+ end of text)
      -> decoder teacher-forced on [prompt, h_1..h_n]: the last layer's states at the n + 1 positions that
         predict h_1..h_n and the end of text
    states (B, L, D_s + 2), mask (B, L): channels [:D_s] the decoder states, [D_s:] the token each position
    predicts (h_k, then end of text), written as (id // 256, id % 256) so that float16 caches hold it exactly.

``dim`` is D_s: connectors see the states only; ``hypothesis_ids`` reads the token channels back (the
hypothesis fusion in ``connectors/hypothesis.py`` needs the 1-best text itself).

Why 30-s padding and not the trimmed input the encoder cache uses elsewhere: teacher forcing needs a
hypothesis, and on trimmed input Whisper's decoder rarely predicts the end of text. Measured on the project's
96 real recordings (whisper-base, int8, greedy): 30-s padding 3.5% WER; trimmed input 552% (the hypothesis
repeats itself until the length cap), 22% with 1 s of silence appended, 14% with 3 s.

Engines: a CTranslate2 Whisper directory (``packaged:`` names, faster-whisper dirs) encodes and decodes with
CTranslate2 in int8 (the cascade's own engine and settings), then one teacher-forced pass of the converted
PyTorch decoder over the CTranslate2 encoder output gives the states. Any other Whisper (a transformers
directory or hub id) runs in PyTorch: the same pad-to-30-s encoder and a plain greedy loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sltalign.audio import SAMPLE_RATE
from sltalign.foundation.base import SpeechEncoder

#: two float channels hold a token id exactly in float16 (integers up to 2048 are exact; 256 * 256 > 51,865)
TOKEN_BASE = 256
TOKEN_CHANNELS = 2
#: longest hypothesis the recogniser may write for a 30-s window (Whisper's own cap is 448 positions)
MAX_TOKENS = 224


def pack_token_ids(ids: torch.Tensor) -> torch.Tensor:
    """(B, L) int token ids -> (B, L, 2) float channels (id // 256, id % 256)."""
    return torch.stack([ids // TOKEN_BASE, ids % TOKEN_BASE], dim=-1).float()


def unpack_token_ids(channels: torch.Tensor) -> torch.Tensor:
    """(B, L, 2) float channels -> (B, L) long token ids (rounded: the channels may come back as float16)."""
    c = channels.float().round().long()
    return c[..., 0] * TOKEN_BASE + c[..., 1]


class WhisperDecoderSource(SpeechEncoder):
    """Frozen Whisper (encoder + decoder) whose output is the decoder's states along its own hypothesis.

    ``mode`` is "decoder" (the cache and checkpoints key on it, so decoder states never mix with encoder
    states). Output: states (B, L, D_s + 2) float32, mask (B, L) with L = max(n_b) + 1; padded positions
    are zeros. A clip's output does not depend on the rest of its batch: every clip is padded to the same
    30-s window, and the decoder is causal, so right padding never reaches real positions.
    """

    mode = "decoder"
    min_samples: int = 320

    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        prompt: Sequence[int],
        eot_id: int,
        ct2_model: Any = None,
        spec: str = "",
        max_tokens: int = MAX_TOKENS,
    ) -> None:
        super().__init__()
        from transformers import WhisperFeatureExtractor

        # keep only the decoder and the output projection: the encoder runs in CTranslate2 when one is given
        self.decoder = model.model.decoder
        self.proj_out = model.proj_out
        self.encoder = None if ct2_model is not None else model.model.encoder
        self.ct2 = ct2_model
        self.tokenizer = tokenizer
        self.prompt = [int(t) for t in prompt]
        self.eot_id = int(eot_id)
        self.spec = spec
        config = model.config
        # the prompt, the hypothesis and the end of text must fit the decoder's positions
        self.max_tokens = min(int(max_tokens), config.max_target_positions - len(self.prompt) - 1)
        self.dim = config.d_model
        self.num_mel_bins = config.num_mel_bins
        self.max_samples = config.max_source_positions * 2 * 160
        self.max_seconds = self.max_samples / SAMPLE_RATE
        self.feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        self.freeze()

    @property
    def engine(self) -> str:
        return "ctranslate2-int8" if self.ct2 is not None else "torch-fp32"

    @property
    def cache_mode(self) -> str:
        # the recognition engine decides the hypothesis, hence the states: part of every cache key
        return f"{self.mode}+{self.engine}"

    @property
    def device(self) -> torch.device:
        return self.decoder.embed_tokens.weight.device

    def frames_for(self, num_samples: int) -> int:
        raise NotImplementedError("the decoder source's length is the hypothesis length, known only after decoding")

    # --- recognition -------------------------------------------------------------------------------
    def features(self, waveforms: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray:
        """Waveforms -> log-mel (B, n_mels, 3000) float32, each padded to Whisper's 30-s window."""
        from sltalign.foundation.speech_encoder import _waveforms_to_numpy

        waves = _waveforms_to_numpy(
            waveforms, min_samples=self.min_samples, max_samples=self.max_samples, who="WhisperDecoderSource"
        )
        mel = np.zeros((len(waves), self.num_mel_bins, self.max_samples // 160), dtype=np.float32)
        for b, w in enumerate(waves):
            padded = np.zeros(self.max_samples, dtype=np.float32)
            padded[: len(w)] = w
            feats = self.feature_extractor(padded, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
            mel[b] = feats[:, : mel.shape[-1]]
        return mel

    def _recognise_ct2(self, mel: np.ndarray) -> tuple[torch.Tensor, list[list[int]]]:
        import ctranslate2

        enc = self.ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel)), to_cpu=True)
        results = self.ct2.generate(
            enc, [self.prompt] * mel.shape[0], beam_size=1, max_length=self.max_tokens, suppress_blank=True
        )
        memory = torch.from_numpy(np.array(enc)).float()  # (B, 1500, D_s)
        return memory, [list(r.sequences_ids[0]) for r in results]

    @torch.no_grad()
    def _recognise_torch(self, mel: np.ndarray) -> tuple[torch.Tensor, list[list[int]]]:
        memory = self.encoder(torch.from_numpy(mel).to(self.device)).last_hidden_state  # (B, 1500, D_s)
        b = mel.shape[0]
        ids = torch.tensor([self.prompt] * b, dtype=torch.long, device=self.device)
        done = torch.zeros(b, dtype=torch.bool, device=self.device)
        hyps: list[list[int]] = [[] for _ in range(b)]
        for _ in range(self.max_tokens):
            # no KV cache: this path serves transformers models (tests, hub ids); CTranslate2 is the fast one
            h = self.decoder(input_ids=ids, encoder_hidden_states=memory).last_hidden_state[:, -1]
            nxt = self.proj_out(h).argmax(-1)  # (B,)
            for i in range(b):
                if not done[i]:
                    if int(nxt[i]) == self.eot_id:
                        done[i] = True
                    else:
                        hyps[i].append(int(nxt[i]))
            if bool(done.all()):
                break
            ids = torch.cat([ids, nxt[:, None]], dim=1)
        return memory, hyps

    def recognise(self, waveforms: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, list[list[int]]]:
        """Waveforms -> (encoder output (B, 1500, D_s), greedy hypothesis ids without prompt or end of text)."""
        mel = self.features(waveforms)
        if self.ct2 is not None:
            return self._recognise_ct2(mel)
        return self._recognise_torch(mel)

    # --- states ------------------------------------------------------------------------------------
    @torch.no_grad()
    def states_along(self, memory: torch.Tensor, hyps: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced decoder states: memory (B, 1500, D_s), hypotheses -> (B, L, D_s + 2), mask (B, L)."""
        p = len(self.prompt)
        width = max(len(h) for h in hyps) + 1
        b = len(hyps)
        inputs = torch.full((b, p + width - 1), self.eot_id, dtype=torch.long)
        predicted = torch.zeros((b, width), dtype=torch.long)
        mask = torch.zeros((b, width), dtype=torch.bool)
        for i, h in enumerate(hyps):
            inputs[i, :p] = torch.tensor(self.prompt)
            inputs[i, p : p + len(h)] = torch.tensor(list(h), dtype=torch.long)
            predicted[i, : len(h) + 1] = torch.tensor(list(h) + [self.eot_id], dtype=torch.long)
            mask[i, : len(h) + 1] = True
        out = self.decoder(input_ids=inputs.to(self.device), encoder_hidden_states=memory.to(self.device)).last_hidden_state
        states = out[:, p - 1 :].float().cpu()  # (B, width, D_s): position p-1+k predicts token k
        states = torch.cat([states, pack_token_ids(predicted)], dim=-1) * mask[..., None]
        return states, mask

    def encode(self, waveforms: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms (16 kHz, 20 ms to 30 s) -> states (B, L, D_s + 2), mask (B, L); see the module docstring."""
        memory, hyps = self.recognise(waveforms)
        return self.states_along(memory, hyps)

    def hypothesis_ids(self, states: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """The 1-best hypothesis of each clip, read back from the token channels (end of text dropped)."""
        return hypothesis_ids(states, mask, self.eot_id)

    def text_reader(self) -> "WhisperText":
        """What AlignedST needs to read hypotheses back from states (see ``WhisperText``)."""
        return WhisperText(self.tokenizer, self.eot_id)

    def decode_text(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return self.text_reader().decode(ids)


def hypothesis_ids(states: torch.Tensor, mask: torch.Tensor, eot_id: int) -> list[list[int]]:
    """(B, L, D_s + 2) states with token channels, mask (B, L) -> hypothesis ids per clip, end of text dropped."""
    ids = unpack_token_ids(states[..., -TOKEN_CHANNELS:])
    return [[t for t in ids[i, : int(mask[i].sum())].tolist() if t != eot_id] for i in range(ids.shape[0])]


class WhisperText:
    """What reading a hypothesis back needs (the tokenizer and the end-of-text id), without the model.

    Training on cached states never loads the recogniser; the hypothesis fusion still needs its text.
    """

    def __init__(self, tokenizer: Any, eot_id: int) -> None:
        self.tokenizer = tokenizer
        self.eot_id = int(eot_id)

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Hypothesis token ids -> text, special tokens dropped."""
        return [self.tokenizer.decode(list(r), skip_special_tokens=True).strip() for r in ids]

    def texts(self, states: torch.Tensor, mask: torch.Tensor) -> list[str]:
        """(B, L, D_s + 2), (B, L) -> the 1-best text of each clip."""
        return self.decode(hypothesis_ids(states, mask, self.eot_id))


def _prompt_for(tokenizer: Any, multilingual: bool) -> tuple[list[int], int]:
    """Whisper's transcription prompt and end-of-text id: English, no timestamps (as the cascade decodes)."""
    names = ["<|startoftranscript|>"] + (["<|en|>", "<|transcribe|>"] if multilingual else []) + ["<|notimestamps|>"]
    ids = [tokenizer.convert_tokens_to_ids(n) for n in names]
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if any(i is None or (tokenizer.unk_token_id is not None and i == tokenizer.unk_token_id) for i in ids + [eot]):
        raise ValueError(f"the Whisper tokenizer lacks the special tokens {names + ['<|endoftext|>']}")
    return ids, eot


def load_whisper_text(spec: str) -> WhisperText:
    """The tokenizer half of ``load_whisper_decoder_source``: enough to read cached hypotheses."""
    tokenizer, multilingual = _tokenizer_for(spec)
    _, eot = _prompt_for(tokenizer, multilingual)
    return WhisperText(tokenizer, eot)


def _ct2_dirs(spec: str) -> list[Path] | None:
    from sltalign.foundation import packaged
    from sltalign.foundation.ctranslate2 import is_ctranslate2_dir

    if packaged.is_packaged(spec):
        entry, dirs = packaged.resolve(spec)
        if entry.kind != "ctranslate2-whisper":
            raise ValueError(f"{spec!r} is a {entry.kind} model, not a Whisper model")
        return list(dirs)
    path = Path(spec).expanduser()
    if path.is_dir() and is_ctranslate2_dir(path):
        return [path]
    return None


def _tokenizer_for(spec: str) -> tuple[Any, bool]:
    dirs = _ct2_dirs(spec)
    if dirs is not None:
        from transformers import PreTrainedTokenizerFast

        path = next((d / "tokenizer.json" for d in dirs if (d / "tokenizer.json").is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{spec}: no tokenizer.json beside model.bin; the decoder source needs it")
        tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(spec[3:] if spec.startswith("hf:") else spec)
    # English-only models (tiny.en) go straight from <|startoftranscript|> to the task, although their vocabulary
    # holds the language tokens too; they are told apart by size (51,864 tokens against 51,865 and up), as
    # openai-whisper does
    multilingual = len(tok) >= 51865
    return tok, multilingual


def load_whisper_decoder_source(spec: str) -> WhisperDecoderSource:
    """``mode="decoder"`` of ``load_speech_encoder``: a packaged name, a CTranslate2 or transformers Whisper
    directory, or a hub id."""
    dirs = _ct2_dirs(spec)
    tokenizer, multilingual = _tokenizer_for(spec)
    prompt, eot = _prompt_for(tokenizer, multilingual)
    if dirs is not None:
        import ctranslate2

        from sltalign.cascade import whisper_ct2_dir
        from sltalign.foundation.ctranslate2 import load_ctranslate2_whisper

        model = load_ctranslate2_whisper(dirs)
        ct2 = ctranslate2.models.Whisper(
            whisper_ct2_dir(spec), device="cpu", compute_type="int8", intra_threads=torch.get_num_threads()
        )
        resolved = spec if spec.startswith("packaged:") else str(Path(spec).expanduser().resolve())
        return WhisperDecoderSource(model=model, tokenizer=tokenizer, prompt=prompt, eot_id=eot, ct2_model=ct2, spec=resolved)
    from transformers import WhisperForConditionalGeneration

    source = spec[3:] if spec.startswith("hf:") else spec
    model = WhisperForConditionalGeneration.from_pretrained(source).eval()
    if Path(source).expanduser().is_dir():
        spec = str(Path(source).expanduser().resolve())
    return WhisperDecoderSource(model=model, tokenizer=tokenizer, prompt=prompt, eot_id=eot, spec=spec)
