"""Hugging Face sequence-to-sequence translation models behind the ``Translator`` interface.

Families handled (transformers 5.x):

- Marian / opus-mt (``MarianMTModel``). Multilingual opus-mt models pick the target language with a
  ">>xxx<<" token at the start of the source; it becomes the ``source_prefix`` (">>por<< ").
- T5 / mT5 (``T5ForConditionalGeneration``): a task prefix ("translate English to German: ") on the source,
  given explicitly or taken from ``config.task_specific_params``.
- mBART-50, NLLB-200 (dense, M2M100 architecture), M2M100, NLLB-MoE: the source language is set on the
  tokenizer (``src_lang``), and the target language token is forced as the first generated token
  (``target_lang`` or the checkpoint's own ``forced_bos_token_id``). Legacy mBART (cc25 / en-ro), whose
  targets end in the language code, starts decoding with that code instead; both follow from the model's own
  ``shift_tokens_right``.

Embedding space. Every family multiplies its token embeddings by ``embed_scale`` (sqrt(d_model) when
``scale_embedding``; T5 has none) only when the encoder is given ``input_ids``:
Marian/Pegasus scale in the encoder's forward on the ids path, mBART/M2M100/NLLB(-MoE) scale inside their
``ScaledWordEmbedding`` lookup; neither rescales ``inputs_embeds``. So vectors in ``inputs_embeds`` space are
``embedding_row * scale`` and ``encode_embeddings(embed_source_ids(ids), mask) == encoder(input_ids=ids)``.
The constructor checks this identity on a few tokens, so a family or version that breaks it fails loudly.
(M2M100/NLLB give padded *positions* different position vectors on the two paths; those positions are masked
everywhere downstream, so only real positions are comparable there.)
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import Translator
from .packaged import is_packaged

__all__ = ["HFTranslator", "load_hf_translator"]

#: model types whose tokenizer adds a T5-style task prefix to the source text
_T5_TYPES = frozenset({"t5", "mt5", "umt5", "longt5"})
#: files one of which a saved model directory must hold
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class HFTranslator(Translator):
    """A frozen ``transformers`` encoder-decoder translation model (Marian, T5, mBART-50, NLLB, M2M100).

    Args:
        model: a ``*ForConditionalGeneration`` / ``MarianMTModel`` (``config.is_encoder_decoder``).
        tokenizer: its tokenizer.
        spec: the name that reloads it through ``load_hf_translator`` (a directory or "hf:<id>").
        source_prefix: text put before every source sentence on the text path (T5 task prefix,
            ">>por<< " for multilingual opus-mt). None: inferred (T5: ``config.task_specific_params``;
            multilingual opus-mt: ">>{target_lang}<< "); "" for none.
        target_lang: target language. mBART-50 "pt_XX", NLLB "por_Latn", M2M100 "pt": forced as the first
            decoded token. Multilingual opus-mt "por": picks the ">>por<<" prefix. T5 "pt": picks the
            "translation_*_to_pt" task prefix. None: the checkpoint's own settings.
        src_lang: source language for tokenizers that take one (mBART-50 "en_XX", NLLB "eng_Latn", M2M100 "en").

    The tokenizer is configured in place (its ``src_lang`` / ``tgt_lang``): give each translator its own.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        tokenizer: Any,
        spec: str = "",
        source_prefix: str | None = None,
        target_lang: str | None = None,
        src_lang: str | None = None,
    ) -> None:
        super().__init__()
        config = getattr(model, "config", None)
        if config is None or not getattr(config, "is_encoder_decoder", False) or not hasattr(model, "get_encoder"):
            raise ValueError(
                f"HFTranslator needs a transformers encoder-decoder model (config.is_encoder_decoder=True); "
                f"got {type(model).__name__}"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.model_type: str = str(config.model_type)
        #: the keyword arguments that rebuild this translator with ``load_hf_translator(spec, **load_kwargs)``
        self.load_kwargs: dict[str, str | None] = {
            "source_prefix": source_prefix,
            "target_lang": target_lang,
            "src_lang": src_lang,
        }

        self.embed_dim = int(config.d_model)
        self.pad_id = _require_id(tokenizer.pad_token_id, "pad_token_id", tokenizer)
        self.eos_id = _require_id(tokenizer.eos_token_id, "eos_token_id", tokenizer)
        if config.pad_token_id is not None and int(config.pad_token_id) != self.pad_id:
            raise ValueError(
                f"{spec or type(model).__name__}: tokenizer pad id {self.pad_id} != config.pad_token_id "
                f"{config.pad_token_id}; the model's shift_tokens_right and the padding would disagree"
            )

        if src_lang is not None:
            if not hasattr(tokenizer, "src_lang"):
                raise ValueError(
                    f"src_lang={src_lang!r} given, but {type(tokenizer).__name__} takes no source language "
                    "(only mBART-50 / NLLB / M2M100 tokenizers do)"
                )
            _language_token_id(tokenizer, src_lang, "src_lang")  # validates the code
            tokenizer.src_lang = src_lang
        self.source_prefix = self._resolve_source_prefix(source_prefix, target_lang)
        forced = self._resolve_target_language(target_lang)

        # Decoding must start exactly as teacher forcing does: derive the start token from the model's own
        # shift of a tokenized target, and check where the target language sits.
        probe = self.tokenize_target(["a"])[0]
        shifted = self._shift_right(torch.tensor([probe], dtype=torch.long))[0].tolist()
        self._decoder_start_id: int = int(shifted[0])
        if forced is not None and probe[0] != forced:
            if self._decoder_start_id == forced:
                forced = None  # legacy mBART: the language code is the decoder start (wrapped from the end)
            else:
                raise ValueError(
                    f"{spec or self.model_type}: tokenized targets {probe} do not start with the forced target-"
                    f"language token {forced}; teacher forcing and generate() would disagree (legacy NLLB "
                    "tokenizer mode? load the tokenizer with legacy_behaviour=False)"
                )
        self._forced_bos_id: int | None = forced

        # Token ids the tokenizer puts around a source sentence (language codes, </s>), for the speech path.
        self._source_prefix_specials, self._source_suffix_specials = self._source_specials()

        encoder = model.get_encoder()
        embedding = encoder.get_input_embeddings()
        # ScaledWordEmbedding (mBART, M2M100, NLLB) scales inside the lookup; Marian/Pegasus encoders scale
        # in forward, on the input_ids path only. Either way inputs_embeds must carry the scale.
        self._outer_scale = float(getattr(encoder, "embed_scale", 1.0) or 1.0)
        self._input_scale = float(getattr(embedding, "embed_scale", 1.0) or 1.0) * self._outer_scale
        self._matrix_cache: tuple[tuple[Any, ...], torch.Tensor] | None = None
        self._target_special_ids: frozenset[int] = frozenset(
            [
                *tokenizer.all_special_ids,
                *getattr(tokenizer, "lang_code_to_id", {}).values(),
                *getattr(tokenizer, "id_to_lang_token", {}),
                self._decoder_start_id,
            ]
            + ([forced] if forced is not None else [])
        )
        self.freeze()
        self._verify_embedding_space()

    # --- configuration helpers ------------------------------------------------------------------
    def _resolve_source_prefix(self, source_prefix: str | None, target_lang: str | None) -> str:
        if source_prefix is not None:
            return source_prefix
        codes = list(getattr(self.tokenizer, "supported_language_codes", None) or [])
        if codes:  # multilingual opus-mt: ">>por<<" chooses the output language
            if target_lang is None:
                raise ValueError(
                    f"{self.spec or 'this Marian model'} is multilingual: pass target_lang (one of "
                    f"{_preview(c[2:-2] for c in codes)}) or source_prefix='>>xxx<< '"
                )
            code = target_lang if target_lang.startswith(">>") else f">>{target_lang}<<"
            if code not in codes:
                raise ValueError(f"target_lang {target_lang!r}: {code} is not in the vocabulary; known: {_preview(codes)}")
            return code + " "
        params = getattr(self.model.config, "task_specific_params", None) or {}
        prefixes = {
            k: v["prefix"] for k, v in params.items() if k.startswith("translation") and isinstance(v, dict) and v.get("prefix")
        }
        if prefixes:
            if target_lang is not None:
                chosen = [k for k in prefixes if k.endswith(f"_to_{target_lang}")]
                if len(chosen) != 1:
                    raise ValueError(
                        f"target_lang {target_lang!r} matches {len(chosen)} of the task prefixes in config."
                        f"task_specific_params {sorted(prefixes)}; pass source_prefix explicitly"
                    )
                return prefixes[chosen[0]]
            if len(prefixes) == 1:
                return next(iter(prefixes.values()))
            raise ValueError(
                f"{self.spec or self.model_type}: config.task_specific_params holds several translation prefixes "
                f"{prefixes}; pass target_lang or source_prefix"
            )
        declared = getattr(self.tokenizer, "target_lang", None)  # a bilingual opus-mt names its target
        if target_lang is not None and declared and not hasattr(self.tokenizer, "tgt_lang") and declared != target_lang:
            raise ValueError(f"target_lang {target_lang!r}: {self.spec or 'this model'} translates into {declared!r} only")
        if self.model_type in _T5_TYPES:
            raise ValueError(
                f"{self.spec or self.model_type}: T5 models need a task prefix and config.task_specific_params has "
                "no translation prefix; pass source_prefix (e.g. 'translate English to German: ', or '' for a "
                "model fine-tuned without one)"
            )
        return ""

    def _resolve_target_language(self, target_lang: str | None) -> int | None:
        """The token forced as the first decoded token (None: none), and the tokenizer's ``tgt_lang`` set to match."""
        tok = self.tokenizer
        if not hasattr(tok, "tgt_lang"):
            return None  # Marian / T5: target language lives in the source prefix, already handled
        gen = getattr(self.model, "generation_config", None)
        config_forced = getattr(gen, "forced_bos_token_id", None) if gen is not None else None
        # no target_lang: what model.generate would force by itself, else the tokenizer's saved tgt_lang
        if target_lang is None and config_forced is not None:
            target_lang = _language_code_for_id(tok, int(config_forced))
        if target_lang is None and tok.tgt_lang is not None:
            target_lang = tok.tgt_lang
        if target_lang is None:
            raise ValueError(
                f"{self.spec or self.model_type}: {type(tok).__name__} needs a target language and the checkpoint "
                f"stores none; pass target_lang (e.g. one of {_preview(_language_codes(tok))})"
            )
        forced = _language_token_id(tok, target_lang, "target_lang")
        tok.tgt_lang = target_lang
        return forced

    def _source_specials(self) -> tuple[list[int], list[int]]:
        """(ids before, ids after) the content of a tokenized source, e.g. ([eng_Latn], [</s>])."""
        full = self.tokenize_source(["a"])[0]
        body = self.tokenizer(["a"], add_special_tokens=False)["input_ids"][0]
        for i in range(len(full) - len(body) + 1):
            if full[i : i + len(body)] == body:
                return full[:i], full[i + len(body) :]
        return [], [self.eos_id] if full and full[-1] == self.eos_id else []

    def _verify_embedding_space(self) -> None:
        """encoder(inputs_embeds=embed_source_ids(ids)) must equal encoder(input_ids=ids); checked on 3 tokens."""
        n = self.source_vocab_size
        ids = torch.tensor([[min(5, n - 1), min(7, n - 1), self.eos_id]], device=self.device)
        mask = torch.ones_like(ids)
        with torch.no_grad():
            ref = self.model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
            got = self.encode_embeddings(self.embed_source_ids(ids), mask.bool())
        if not torch.allclose(ref, got, rtol=1e-4, atol=1e-5):
            raise RuntimeError(
                f"{self.spec or self.model_type}: the encoder gives different states for input_ids and for "
                f"inputs_embeds=embedding*{self._input_scale:g} (max diff {(ref - got).abs().max():.3g}); this "
                f"model type ({self.model_type}) scales its embeddings in a way HFTranslator does not know"
            )

    # --- properties -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def source_vocab_size(self) -> int:
        return int(self.model.get_encoder().get_input_embeddings().num_embeddings)

    @property
    def target_vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().out_features)

    @property
    def forced_bos_id(self) -> int | None:
        """The target-language token forced as the first decoded token (mBART-50 / NLLB / M2M100), else None."""
        return self._forced_bos_id

    @property
    def decoder_start_id(self) -> int:
        return self._decoder_start_id

    @property
    def source_special_ids(self) -> tuple[list[int], list[int]]:
        """Ids the tokenizer puts before and after a source sentence: ([], [</s>]) for Marian/T5,
        ([eng_Latn], [</s>]) for NLLB, ([], [</s>, en_XX]) for legacy mBART. ``embed_prompt`` includes the
        first part; a speech model that mimics a tokenized source appends the second after its frames."""
        return list(self._source_prefix_specials), list(self._source_suffix_specials)

    # --- text side ------------------------------------------------------------------------------
    def tokenize_source(self, texts: Sequence[str], *, add_prefix: bool = False) -> list[list[int]]:
        """Source texts -> ids with the tokenizer's specials (language code for NLLB/mBART-50, final </s>).

        The ``source_prefix`` is added only with ``add_prefix=True`` (``translate_text`` adds it itself; the
        speech path uses ``embed_prompt(source_prefix)``; CTC targets take the bare transcript).
        """
        texts = _as_text_list(texts, "tokenize_source")
        if add_prefix:
            texts = [self.source_prefix + t for t in texts]
        return [list(x) for x in self.tokenizer(texts)["input_ids"]] if texts else []

    def tokenize_target(self, texts: Sequence[str]) -> list[list[int]]:
        """Target texts -> ids as the model is trained on them (``text_target``): "[tgt_lang] text </s>" for
        mBART-50 / NLLB / M2M100, "text </s>" for Marian / T5, "text </s> [tgt_lang]" for legacy mBART."""
        texts = _as_text_list(texts, "tokenize_target")
        return [list(x) for x in self.tokenizer(text_target=texts)["input_ids"]] if texts else []

    def detokenize(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Target ids -> text, special tokens (language codes, </s>, pad) removed."""
        # M2M100's language tokens are not among the tokenizer's special ids, so skip_special_tokens alone
        # would print "__pt__": drop every special and language id first.
        drop = self._target_special_ids
        clean = [[int(t) for t in row if int(t) not in drop] for row in ids]
        return list(self.tokenizer.batch_decode(clean, skip_special_tokens=True))

    def detokenize_source(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Source ids -> text with the source-side tokenizer (Marian keeps separate source/target models)."""
        clean = [[int(t) for t in row if int(t) not in self._target_special_ids] for row in ids]
        marian = hasattr(self.tokenizer, "_decode_use_source_tokenizer")  # MarianTokenizer: decode with spm_source
        if marian:
            self.tokenizer._decode_use_source_tokenizer = True
        try:
            return list(self.tokenizer.batch_decode(clean, skip_special_tokens=True))
        finally:
            if marian:
                self.tokenizer._decode_use_source_tokenizer = False

    # --- embeddings -----------------------------------------------------------------------------
    def source_embedding_matrix(self) -> torch.Tensor:
        """(V, D_m) source-embedding rows in ``inputs_embeds`` space (row * embed_scale). Cached while the
        weights, device and dtype stay the same: the CTC head asks for it every step."""
        weight = self.model.get_encoder().get_input_embeddings().weight
        if self._input_scale == 1.0:
            return weight
        key = (weight.data_ptr(), weight.device, weight.dtype, weight._version)
        if self._matrix_cache is None or self._matrix_cache[0] != key:
            self._matrix_cache = (key, weight.detach() * self._input_scale)
        return self._matrix_cache[1]

    def embed_source_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, D_m) in ``inputs_embeds`` space, computed with the encoder's own lookup so it
        matches the ids path bit for bit."""
        ids = ids.to(self.device)
        # ScaledWordEmbedding applies its own scale; the Marian-style encoder scale is applied here.
        x = self.model.get_encoder().get_input_embeddings()(ids)
        return x * self._outer_scale if self._outer_scale != 1.0 else x

    def embed_prompt(self, text: str) -> torch.Tensor:
        """A text prompt -> (L, D_m): the tokenizer's leading specials (NLLB/mBART-50 source language code)
        followed by the text's tokens, no trailing specials (</s>). L may be 0 (Marian/T5, empty text)."""
        body = self.tokenizer([text], add_special_tokens=False)["input_ids"][0] if text else []
        ids = torch.tensor([self._source_prefix_specials + list(body)], dtype=torch.long)
        return self.embed_source_ids(ids)[0]

    # --- encoder / decoder ----------------------------------------------------------------------
    def encode_embeddings(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MT encoder on ``inputs_embeds``: x (B, L, D_m), mask (B, L) bool -> memory (B, L, D_m).
        Gradients flow to ``x`` (ECED trains the connector through the frozen encoder)."""
        _check_memory(x, mask, self.embed_dim, "encode_embeddings", "x")
        x, mask = x.to(self.device), mask.to(self.device)
        return self.model.get_encoder()(inputs_embeds=x, attention_mask=mask.long()).last_hidden_state

    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MT encoder on token ids (the text path): (B, L) -> memory (B, L, D_m)."""
        return self.encode_embeddings(self.embed_source_ids(ids), mask)

    def _shift_right(self, targets: torch.Tensor) -> torch.Tensor:
        """(B, L) targets -> (B, L) decoder inputs, with the model's own shift_tokens_right."""
        model = self.model
        if hasattr(model, "prepare_decoder_input_ids_from_labels"):  # Marian, T5, mBART
            return model.prepare_decoder_input_ids_from_labels(labels=targets)
        shift = getattr(sys.modules.get(type(model).__module__), "shift_tokens_right", None)
        start = model.config.decoder_start_token_id
        if start is None:
            raise ValueError(f"{self.spec or self.model_type}: config.decoder_start_token_id is not set")
        if shift is not None:  # M2M100 / NLLB / NLLB-MoE: (ids, pad, decoder_start)
            return shift(targets, self.pad_id, int(start))
        shifted = targets.new_full(targets.shape, self.pad_id)
        shifted[:, 1:] = targets[:, :-1]
        shifted[:, 0] = int(start)
        return shifted.masked_fill(shifted == -100, self.pad_id)

    def _encoder_outputs(self, memory: torch.Tensor) -> Any:
        """Wrap a memory (B, S, D_m) as the encoder output the model's forward/generate expects."""
        from transformers import modeling_outputs

        # NLLB-MoE reads router_logits from its encoder output; everyone else takes a BaseModelOutput.
        if self.model_type == "nllb-moe":
            return modeling_outputs.MoEModelOutput(last_hidden_state=memory)
        return modeling_outputs.BaseModelOutput(last_hidden_state=memory)

    def decoder_logits(self, memory: torch.Tensor, memory_mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: memory (B, S, D_m), memory_mask (B, S), targets (B, L) padded with ``pad_id``
        (as ``tokenize_target`` makes them) -> logits (B, L, V); logits[:, t] predict targets[:, t].

        The targets are shifted right exactly as ``model(labels=targets)`` shifts them, so the decoder sees
        the same prefix as in ``generate`` (start token, then the forced target language where there is one).
        """
        _check_memory(memory, memory_mask, self.embed_dim, "decoder_logits", "memory")
        if targets.dim() != 2 or targets.shape[0] != memory.shape[0] or targets.dtype not in (torch.long, torch.int):
            raise ValueError(
                f"decoder_logits: targets must be integer ids (B={memory.shape[0]}, L); got {targets.dtype} "
                f"{tuple(targets.shape)}"
            )
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= self.target_vocab_size):
            raise ValueError(
                f"decoder_logits: target ids must lie in [0, {self.target_vocab_size}); got "
                f"[{int(targets.min())}, {int(targets.max())}] (use pad_id={self.pad_id} for padding, not -100)"
            )
        if targets.shape[1] and not bool((targets != self.pad_id).any(1).all()):
            raise ValueError("decoder_logits: a target row holds only padding; every row needs at least </s>")
        memory, memory_mask = memory.to(self.device), memory_mask.to(self.device)
        decoder_input = self._shift_right(targets.long().to(self.device))  # (B, L)
        out = self.model(
            encoder_outputs=self._encoder_outputs(memory),
            attention_mask=memory_mask.long(),
            decoder_input_ids=decoder_input,
            use_cache=False,
            return_dict=True,
        )
        return out.logits  # (B, L, V)

    def _max_target_positions(self) -> int:
        """Longest decoder input the model's learned positions allow (sinusoidal/relative: no limit)."""
        cfg = self.model.config
        limit = getattr(cfg, "max_target_positions", None) or getattr(cfg, "max_position_embeddings", None)
        if cfg.model_type == "t5" or not limit:
            return 1 << 30
        return int(limit)

    def generate(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        *,
        beam: int = 4,
        max_len: int = 150,
        length_penalty: float = 1.0,
    ) -> list[list[int]]:
        """Beam search (beam 1 = greedy) through ``model.generate`` from memory (B, S, D_m) and mask (B, S).

        The decoder starts with the start token and the forced target language (as in teacher forcing) and
        follows the checkpoint's generation config otherwise (e.g. opus-mt's ban on <pad>). ``max_len``
        counts generated tokens including </s>, not the forced language token. Returns B lists of target ids
        without the start token, the language token, </s> and padding.
        """
        _check_memory(memory, memory_mask, self.embed_dim, "generate", "memory")
        if beam < 1 or max_len < 1:
            raise ValueError(f"generate: beam and max_len must be >= 1; got beam={beam}, max_len={max_len}")
        if memory.shape[0] == 0:
            return []
        memory, memory_mask = memory.to(self.device), memory_mask.to(self.device)
        n_forced = 1 if self._forced_bos_id is not None else 0
        kwargs: dict[str, Any] = dict(
            encoder_outputs=self._encoder_outputs(memory),
            attention_mask=memory_mask.long(),
            num_beams=beam,
            max_new_tokens=min(max_len + n_forced, self._max_target_positions() - 1),
            do_sample=False,
            decoder_start_token_id=self._decoder_start_id,
            forced_bos_token_id=self._forced_bos_id,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
        )
        if beam > 1:
            kwargs["length_penalty"] = length_penalty
        with torch.no_grad():
            seqs = self.model.generate(**kwargs)  # (B, 1 + n_forced + generated)
        out: list[list[int]] = []
        for row in seqs[:, 1 + n_forced :].tolist():
            ids: list[int] = []
            for t in row:
                if t == self.eos_id:
                    break
                if t != self.pad_id:
                    ids.append(int(t))
            out.append(ids)
        return out


# --- loading ------------------------------------------------------------------------------------
def load_hf_translator(
    spec: str,
    *,
    source_prefix: str | None = None,
    target_lang: str | None = None,
    src_lang: str | None = None,
) -> HFTranslator:
    """Load a Hugging Face translation model as a frozen ``HFTranslator`` (fp32, eval mode).

    ``spec``: a local directory saved with ``save_pretrained`` (config.json, model.safetensors or
    pytorch_model.bin, tokenizer files), or a hub id as "hf:Helsinki-NLP/opus-mt-en-de" or bare. Both go
    through the same ``from_pretrained`` calls. See ``HFTranslator`` for the other arguments.
    """
    where, canonical = _resolve_spec(spec)
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
    except Exception as e:  # noqa: BLE001 - many backends, many exception types: re-raise with the path
        hint = (
            ""
            if canonical == where or spec.startswith("hf:")
            else (f" ({Path(spec).expanduser().resolve()} is not a directory, so {where!r} was tried as a hub id)")
        )
        raise OSError(f"{spec!r}: could not load a tokenizer from {where}{hint}: {type(e).__name__}: {e}") from e
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(where, dtype=torch.float32)
    except ValueError as e:
        raise ValueError(
            f"{spec!r}: not a sequence-to-sequence translation model that transformers can load with "
            f"AutoModelForSeq2SeqLM (Marian, T5, mBART, M2M100/NLLB) ({e})"
        ) from e
    except Exception as e:  # noqa: BLE001
        raise OSError(f"{spec!r}: could not load the model from {where} ({type(e).__name__}: {e})") from e
    return HFTranslator(
        model=model,
        tokenizer=tokenizer,
        spec=canonical,
        source_prefix=source_prefix,
        target_lang=target_lang,
        src_lang=src_lang,
    )


def _resolve_spec(spec: str) -> tuple[str, str]:
    """spec -> (what from_pretrained gets, the canonical spec stored on the translator)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"translator spec must be a directory or a hub id; got {spec!r}")
    if is_packaged(spec):
        raise ValueError(f"{spec!r} is a packaged model, not a Hugging Face one; load it with its own loader")
    if spec.startswith("hf:"):
        hub = spec[3:]
        if not hub:
            raise ValueError("'hf:' needs a hub id after it, e.g. 'hf:Helsinki-NLP/opus-mt-en-de'")
        return hub, spec
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is a file; expected a model directory saved with save_pretrained")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} has no config.json; expected a Hugging Face model directory (config.json, "
                f"one of {', '.join(_WEIGHT_FILES)}, tokenizer files)"
            )
        if not any((path / f).is_file() for f in _WEIGHT_FILES):
            raise FileNotFoundError(f"{path} has no model weights; expected one of {', '.join(_WEIGHT_FILES)}")
        resolved = str(path.resolve())
        return resolved, resolved
    if not _HUB_ID.match(spec):  # paths start with "/", ".", "~" or hold several "/"; hub ids are "org/name"
        raise FileNotFoundError(f"model directory {path} does not exist (and {spec!r} is not a hub id)")
    return spec, "hf:" + spec


# --- small helpers ------------------------------------------------------------------------------
def _require_id(value: int | None, name: str, tokenizer: Any) -> int:
    if value is None:
        raise ValueError(f"{type(tokenizer).__name__} has no {name}; a translation tokenizer needs one")
    return int(value)


def _as_text_list(texts: Sequence[str], where: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{where} takes a list of strings, not one string (wrap it: [{texts[:30]!r}])")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{where}: item {i} is {type(t).__name__}, expected str")
    return texts


def _check_memory(x: torch.Tensor, mask: torch.Tensor, dim: int, where: str, name: str) -> None:
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ValueError(f"{where}: {name} must be (B, L, D_m={dim}); got {tuple(x.shape)}")
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"{where}: mask must be (B, L)={tuple(x.shape[:2])}; got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"{where}: mask must be a bool tensor (True = real position); got {mask.dtype}")
    if x.shape[0] and x.shape[1] and not bool(mask.any(1).all()):
        raise ValueError(f"{where}: a row of the mask has no True position (empty input)")


def _language_codes(tokenizer: Any) -> list[str]:
    mapping = getattr(tokenizer, "lang_code_to_id", None)
    if mapping:
        return list(mapping)
    special = set(getattr(tokenizer, "all_special_tokens", []))
    known = [getattr(tokenizer, f"{name}_token", None) for name in ("bos", "eos", "unk", "pad", "mask", "sep", "cls")]
    return sorted(special.difference(known))


def _language_token_id(tokenizer: Any, lang: str, what: str) -> int:
    """The id of language ``lang``'s token ("pt_XX", "por_Latn", M2M100 "pt"); ValueError if unknown."""
    if hasattr(tokenizer, "get_lang_id"):  # M2M100 codes map to "__pt__" tokens
        try:
            return int(tokenizer.get_lang_id(lang))
        except KeyError:
            raise ValueError(
                f"{what} {lang!r} is not a language of this tokenizer; known: {_preview(_language_codes(tokenizer))}"
            ) from None
    idx = tokenizer.convert_tokens_to_ids(lang)
    if idx is None or idx == tokenizer.unk_token_id or lang not in tokenizer.get_vocab():
        raise ValueError(
            f"{what} {lang!r} is not a language token of this tokenizer; known: {_preview(_language_codes(tokenizer))}"
        )
    return int(idx)


def _language_code_for_id(tokenizer: Any, idx: int) -> str:
    token = getattr(tokenizer, "id_to_lang_token", {}).get(idx)  # M2M100: "__pt__" -> "pt"
    if token is not None:
        return token[2:-2]
    return str(tokenizer.convert_ids_to_tokens(idx))


def _preview(items: Any, n: int = 8) -> str:
    items = list(items)
    more = f", ... ({len(items)} in all)" if len(items) > n else ""
    return ", ".join(map(str, items[:n])) + more
