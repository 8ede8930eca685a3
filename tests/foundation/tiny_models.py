"""Tiny random Hugging Face translation models, written to disk for tests.

Every builder trains a small SentencePiece model on a few dozen sentences, builds the family's own tokenizer
class from it, makes a seeded random model with a tiny config (d_model 16, 2 + 2 layers) and saves both with
``save_pretrained`` into ``root / <name>``, so tests load them back through the same ``from_pretrained`` path a
real checkpoint takes. The weights are random: outputs are meaningless, shapes and plumbing are real.

    make_tiny_marian(root)           opus-mt style, shared vocab, scaled embeddings, pad = last id
    make_tiny_marian(root, multilingual=True)   + ">>por<<" / ">>deu<<" target tokens
    make_tiny_t5(root)               T5 with one translation task prefix in config.task_specific_params
    make_tiny_mbart50(root)          mBART-50 (MBart50Tokenizer, language codes like "pt_XX")
    make_tiny_nllb(root)             NLLB-200 dense = M2M100 architecture + NllbTokenizer ("por_Latn")
    make_tiny_m2m100(root)           M2M100 (M2M100Tokenizer, language codes like "pt")
    make_tiny_nllb_moe(root)         NLLB-MoE (NllbMoe architecture, 2 experts) + NllbTokenizer

Each call takes well under a second.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import sentencepiece as spm
import torch

# Enough text that every letter of the test sentences is in every vocabulary (no <unk> in tests).
SENTENCES: tuple[str, ...] = (
    "the cat sat on the mat",
    "a dog runs in the park",
    "we like green tea and bread",
    "the house is very old",
    "she reads a book every night",
    "they went to the market today",
    "my brother plays the guitar",
    "the weather is nice today",
    "please open the window",
    "how many apples do you have",
    "just keep quiet and wait for me",
    "six zebras jumped over a fox",
    "o gato está na casa",
    "o cão corre no parque",
    "nós gostamos de chá verde",
    "a casa é muito velha",
    "ela lê um livro todas as noites",
    "der hund läuft im park",
    "wir trinken grünen tee",
    "das haus ist sehr alt",
    "Hello, World! Is this OK? Yes: 1 2 3 4 5 6 7 8 9 0.",
    "Translate English to Portuguese: quick brown fox.",
)

D_MODEL = 16
_COMMON = dict(
    d_model=D_MODEL,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
    max_position_embeddings=128,
    dropout=0.1,
    attention_dropout=0.1,
)  # dropout > 0 so a test can see that eval() holds


def _train_spm(path: Path, *, vocab_size: int = 80, **options: object) -> spm.SentencePieceProcessor:
    """Train a SentencePiece model on SENTENCES (a few ms) and write it to ``path``."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 3),
        model_writer=buf,
        vocab_size=vocab_size,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
        **options,
    )
    path.write_bytes(buf.getvalue())
    return spm.SentencePieceProcessor(model_file=str(path))


def _fresh_dir(root: Path, name: str) -> Path:
    out = Path(root) / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def _save(out: Path, model_factory: Callable[[], torch.nn.Module], tokenizer: object, seed: int) -> Path:
    torch.manual_seed(seed)
    model = model_factory()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_tiny_marian(root: Path, *, multilingual: bool = False, name: str | None = None, seed: int = 0) -> Path:
    """An opus-mt style en->pt Marian model: one shared SentencePiece vocab, pad is the last id (as in
    opus-mt), scale_embedding on, generation config like the hub's (bad_words_ids=[[pad]], forced_eos)."""
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    out = _fresh_dir(root, name or ("tiny-marian-mul" if multilingual else "tiny-marian"))
    sp = _train_spm(out / "source.spm", model_type="unigram")
    shutil.copy(out / "source.spm", out / "target.spm")
    vocab: dict[str, int] = {"</s>": 0, "<unk>": 1}
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if piece not in vocab and piece != "<s>":
            vocab[piece] = len(vocab)
    if multilingual:
        for code in (">>por<<", ">>deu<<"):
            vocab[code] = len(vocab)
    vocab["<pad>"] = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    # like opus-mt's tokenizer_config: a bilingual model names its languages
    tokenizer = MarianTokenizer(
        str(out / "source.spm"),
        str(out / "target.spm"),
        str(out / "vocab.json"),
        source_lang="en",
        target_lang=None if multilingual else "pt",
    )
    pad = vocab["<pad>"]
    config = MarianConfig(
        vocab_size=len(vocab),
        pad_token_id=pad,
        eos_token_id=0,
        decoder_start_token_id=pad,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        **_COMMON,
    )

    def build() -> torch.nn.Module:
        model = MarianMTModel(config)
        gc = model.generation_config
        gc.bad_words_ids, gc.forced_eos_token_id, gc.num_beams, gc.max_length = [[pad]], 0, 4, 512
        return model

    return _save(out, build, tokenizer, seed)


def make_tiny_t5(root: Path, *, name: str = "tiny-t5", seed: int = 0, task_prefixes: dict[str, str] | None = None) -> Path:
    """A T5 model (tied embeddings, relative positions) with its SentencePiece tokenizer. ``task_prefixes``
    maps task_specific_params keys to prefixes; default: one en->pt translation prefix."""
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    out = _fresh_dir(root, name)
    _train_spm(out / "spiece.model", model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    tokenizer = T5Tokenizer.from_pretrained(out, extra_ids=8)
    if task_prefixes is None:
        task_prefixes = {"translation_en_to_pt": "translate English to Portuguese: "}
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=D_MODEL,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        dropout_rate=0.1,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        tie_word_embeddings=True,
        task_specific_params={k: {"prefix": v} for k, v in task_prefixes.items()},
    )
    return _save(out, lambda: T5ForConditionalGeneration(config), tokenizer, seed)


def _fairseq_lang_tokenizer(out: Path, cls_name: str) -> object:
    """mBART-50 / NLLB tokenizers: fairseq id layout (<s> 0, <pad> 1, </s> 2, <unk> 3, pieces + 1, then the
    language codes) built from a BPE SentencePiece model."""
    import transformers

    _train_spm(out / "sentencepiece.bpe.model", model_type="bpe")
    cls = getattr(transformers, cls_name)
    kwargs: dict[str, object] = {}
    if cls_name == "NllbTokenizer":
        # transformers 5.23 leaves the 202 language codes out when converting from SentencePiece alone
        from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

        kwargs["additional_special_tokens"] = list(FAIRSEQ_LANGUAGE_CODES)
    return cls.from_pretrained(out, **kwargs)


def _vocab_size(tokenizer: object) -> int:
    return max(tokenizer.get_vocab().values()) + 1


def make_tiny_mbart50(root: Path, *, name: str = "tiny-mbart50", seed: int = 0) -> Path:
    """mBART-50 many-to-many style: targets are "[tgt_lang] text </s>", decoding starts with </s> and the
    target language is forced as the first generated token. No target language is stored."""
    from transformers import MBartConfig, MBartForConditionalGeneration

    out = _fresh_dir(root, name)
    tokenizer = _fairseq_lang_tokenizer(out, "MBart50Tokenizer")
    tokenizer.src_lang = "en_XX"
    config = MBartConfig(
        vocab_size=_vocab_size(tokenizer),
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        scale_embedding=True,
        **_COMMON,
    )
    return _save(out, lambda: MBartForConditionalGeneration(config), tokenizer, seed)


def _m2m_config(vocab_size: int) -> object:
    from transformers import M2M100Config

    return M2M100Config(
        vocab_size=vocab_size,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        scale_embedding=True,
        **_COMMON,
    )


def make_tiny_nllb(root: Path, *, name: str = "tiny-nllb", seed: int = 0, forced_target: str | None = None) -> Path:
    """NLLB-200 dense style (M2M100 architecture, NllbTokenizer). ``forced_target`` (e.g. "por_Latn") stores a
    forced BOS in the generation config, as a checkpoint fine-tuned for one direction would."""
    from transformers import M2M100ForConditionalGeneration

    out = _fresh_dir(root, name)
    tokenizer = _fairseq_lang_tokenizer(out, "NllbTokenizer")
    tokenizer.src_lang = "eng_Latn"
    config = _m2m_config(_vocab_size(tokenizer))

    def build() -> torch.nn.Module:
        model = M2M100ForConditionalGeneration(config)
        if forced_target is not None:
            model.generation_config.forced_bos_token_id = tokenizer.convert_tokens_to_ids(forced_target)
        return model

    return _save(out, build, tokenizer, seed)


def make_tiny_m2m100(root: Path, *, name: str = "tiny-m2m100", seed: int = 0) -> Path:
    """M2M100 with its own tokenizer (vocab.json + SentencePiece; language tokens "__pt__" after the vocab)."""
    from transformers import M2M100ForConditionalGeneration, M2M100Tokenizer

    out = _fresh_dir(root, name)
    sp = _train_spm(out / "sentencepiece.bpe.model", model_type="bpe")
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for i in range(sp.get_piece_size()):
        vocab.setdefault(sp.id_to_piece(i), len(vocab))
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = M2M100Tokenizer(str(out / "vocab.json"), str(out / "sentencepiece.bpe.model"), src_lang="en")
    size = len(tokenizer.encoder) + len(tokenizer.lang_code_to_id) + tokenizer.num_madeup_words
    return _save(out, lambda: M2M100ForConditionalGeneration(_m2m_config(size)), tokenizer, seed)


def make_tiny_nllb_moe(root: Path, *, name: str = "tiny-nllb-moe", seed: int = 0) -> Path:
    """NLLB-MoE architecture (2 experts, every second layer sparse) with the NLLB tokenizer."""
    from transformers import NllbMoeConfig, NllbMoeForConditionalGeneration

    out = _fresh_dir(root, name)
    tokenizer = _fairseq_lang_tokenizer(out, "NllbTokenizer")
    tokenizer.src_lang = "eng_Latn"
    config = NllbMoeConfig(
        vocab_size=_vocab_size(tokenizer),
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        scale_embedding=True,
        num_experts=2,
        expert_capacity=8,
        encoder_sparse_step=2,
        decoder_sparse_step=2,
        **_COMMON,
    )
    return _save(out, lambda: NllbMoeForConditionalGeneration(config), tokenizer, seed)


#: family name -> builder, for parametrised tests
BUILDERS: dict[str, Callable[..., Path]] = {
    "marian": make_tiny_marian,
    "t5": make_tiny_t5,
    "mbart50": make_tiny_mbart50,
    "nllb": make_tiny_nllb,
    "m2m100": make_tiny_m2m100,
    "nllb_moe": make_tiny_nllb_moe,
}
