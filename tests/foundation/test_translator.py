"""HFTranslator on tiny random Marian / T5 / mBART-50 / NLLB / M2M100 / NLLB-MoE models saved to disk and
loaded back through load_hf_translator (the from_pretrained path real checkpoints take)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sltalign.foundation.translator import HFTranslator, load_hf_translator
from tests.foundation.tiny_models import BUILDERS, D_MODEL, make_tiny_marian, make_tiny_nllb, make_tiny_t5

FAMILIES = list(BUILDERS)
#: the families the slower generation tests run on (NLLB-MoE shares NLLB's tokenizer and generation path)
GEN_FAMILIES = [f for f in FAMILIES if f != "nllb_moe"]
#: what load_hf_translator needs per family beyond the directory
LOAD_KWARGS: dict[str, dict[str, str]] = {
    "marian": {},
    "t5": {},
    "mbart50": {"target_lang": "pt_XX", "src_lang": "en_XX"},
    "nllb": {"target_lang": "por_Latn"},
    "m2m100": {"target_lang": "pt"},
    "nllb_moe": {"target_lang": "por_Latn"},
}
FORCED_FAMILIES = ["mbart50", "nllb", "m2m100", "nllb_moe"]
#: padded positions get other position vectors on the ids path than on the inputs_embeds path (fairseq-style
#: positions that skip pad ids); they are masked everywhere, so only real positions are compared there
PAD_AWARE_POSITIONS = {"nllb", "m2m100", "nllb_moe"}
# MarianTokenizer asks for sacremoses (an optional punctuation normaliser) on every load
pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

SOURCES = ["the cat sat on the mat", "a dog", "we like green tea and bread"]
TARGETS = ["o gato está na casa", "o cão", "nós gostamos de chá verde"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_translators")
    return {name: build(root) for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def translators(model_dirs: dict[str, Path]) -> dict[str, HFTranslator]:
    return {name: load_hf_translator(str(d), **LOAD_KWARGS[name]) for name, d in model_dirs.items()}


def _pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = True
    return ids, mask


def _source_batch(tr: HFTranslator, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    return _pad(tr.tokenize_source(texts, add_prefix=True), tr.pad_id)


# --- embedding space -------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_encode_embeddings_of_embedded_ids_equals_encoder_on_ids(translators, family):
    tr = translators[family]
    ids, mask = _source_batch(tr, SOURCES)  # padded batch
    encoder = tr.model.get_encoder()
    with torch.no_grad():
        ref = encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        got = tr.encode_embeddings(tr.embed_source_ids(ids), mask)
        via_matrix = tr.encode_embeddings(torch.nn.functional.embedding(ids, tr.source_embedding_matrix()), mask)
    assert got.shape == (len(SOURCES), ids.shape[1], D_MODEL)
    if family in PAD_AWARE_POSITIONS:
        assert torch.equal(got[mask], ref[mask])
        full = mask.all(1)  # the longest row has no padding: all of it matches
        assert full.any() and not full.all()
        assert torch.equal(got[full], ref[full])
    else:
        assert torch.equal(got, ref)
    torch.testing.assert_close(via_matrix, got, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_source_embeddings_carry_the_family_scale(translators, family):
    """Every tiny model has scale_embedding (sqrt(16) = 4) except T5, which has no embedding scale; feeding
    the raw rows instead would change the encoder output (so the equality test above can fail)."""
    tr = translators[family]
    raw = tr.model.get_encoder().get_input_embeddings().weight
    scale = 1.0 if family == "t5" else math.sqrt(D_MODEL)
    torch.testing.assert_close(tr.source_embedding_matrix(), raw * scale, rtol=0, atol=0)
    assert tr.source_embedding_matrix() is tr.source_embedding_matrix()  # cached, not rebuilt per call
    if scale != 1.0:
        ids, mask = _source_batch(tr, SOURCES[:1])
        with torch.no_grad():
            unscaled = tr.encode_embeddings(torch.nn.functional.embedding(ids, raw), mask)
            scaled = tr.encode_ids(ids, mask)
        assert (unscaled - scaled).abs().max() > 1e-3


# --- teacher forcing ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_decoder_logits_match_model_forward_with_labels(translators, family):
    tr = translators[family]
    src, src_mask = _source_batch(tr, SOURCES)
    tgt, tgt_mask = _pad(tr.tokenize_target(TARGETS), tr.pad_id)
    with torch.no_grad():
        logits = tr.decoder_logits(tr.encode_ids(src, src_mask), src_mask, tgt)
        ref = tr.model(input_ids=src, attention_mask=src_mask.long(), labels=tgt).logits
    assert logits.shape == (len(TARGETS), tgt.shape[1], tr.target_vocab_size)
    torch.testing.assert_close(logits[tgt_mask], ref[tgt_mask], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", GEN_FAMILIES)
def test_decoder_logits_at_t_are_generates_logits_at_step_t(translators, family, monkeypatch):
    """Greedy generate (recording its raw per-step logits), then teacher-force what it produced: position t of
    decoder_logits must hold the logits generate computed for its t-th token, and the greedy tokens must be
    their argmax. This ties decoder_logits' shift (start token, forced language) to generate's prefix."""
    tr = translators[family]
    steps: list[torch.Tensor] = []
    original = tr.model.generate

    def recording_generate(**kwargs):
        out = original(**kwargs, output_logits=True, return_dict_in_generate=True)
        steps.extend(out.logits)  # one (B, V) tensor per generated token
        return out.sequences

    monkeypatch.setattr(tr.model, "generate", recording_generate)
    src, src_mask = _source_batch(tr, SOURCES[:2])
    with torch.no_grad():
        memory = tr.encode_ids(src, src_mask)
        hyps = tr.generate(memory, src_mask, beam=1, max_len=8)
        lang = [tr.forced_bos_id] if tr.forced_bos_id is not None else []
        rows = [lang + h + [tr.eos_id] for h in hyps]
        tgt, _ = _pad(rows, tr.pad_id)
        logits = tr.decoder_logits(memory, src_mask, tgt)  # (B, L, V)
    generated = torch.stack(steps, 1)  # (B, steps, V)
    for i, h in enumerate(hyps):
        assert h, "a tiny random model generated nothing: the check would be empty"
        n = min(len(rows[i]), generated.shape[1])  # the final </s> may have been cut by max_len
        torch.testing.assert_close(logits[i, :n], generated[i, :n], rtol=1e-4, atol=1e-4)
        content = logits[i, len(lang) : len(lang) + len(h)].clone()  # the language token is forced, not chosen
        content[:, tr.pad_id] = float("-inf")  # opus-mt's generation config bans <pad>
        assert content.argmax(-1).tolist() == h


@pytest.mark.parametrize("family", GEN_FAMILIES)
def test_padding_does_not_change_an_items_outputs(translators, family):
    tr = translators[family]
    short_src, long_src = SOURCES[1], SOURCES[2]
    short_tgt, long_tgt = TARGETS[1], TARGETS[2]
    with torch.no_grad():
        outs = []
        for srcs, tgts in (([short_src], [short_tgt]), ([short_src, long_src], [short_tgt, long_tgt])):
            src, src_mask = _source_batch(tr, srcs)
            tgt, tgt_mask = _pad(tr.tokenize_target(tgts), tr.pad_id)
            memory = tr.encode_ids(src, src_mask)
            logits = tr.decoder_logits(memory, src_mask, tgt)
            hyp = tr.generate(memory, src_mask, beam=2, max_len=6)
            outs.append((memory[0][src_mask[0]], logits[0][tgt_mask[0]], hyp[0]))
    assert outs[1][0].shape == outs[0][0].shape
    assert len(tr.tokenize_source([long_src], add_prefix=True)[0]) > outs[0][0].shape[0]  # really padded
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[1][1], outs[0][1], rtol=1e-5, atol=1e-5)
    assert outs[1][2] == outs[0][2]


# --- generation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", GEN_FAMILIES)
def test_generate_returns_valid_ids_without_specials(translators, family):
    tr = translators[family]
    src, src_mask = _source_batch(tr, SOURCES)
    with torch.no_grad():
        hyps = tr.generate(tr.encode_ids(src, src_mask), src_mask, beam=3, max_len=7, length_penalty=1.2)
    assert len(hyps) == len(SOURCES)
    specials = {tr.eos_id, tr.pad_id, tr.decoder_start_id}
    for h in hyps:
        assert 0 < len(h) <= 7
        assert all(isinstance(t, int) and 0 <= t < tr.target_vocab_size for t in h)
        assert not specials & set(h)


@pytest.mark.parametrize("family", FORCED_FAMILIES)
def test_forced_target_language_is_the_first_generated_token(translators, family, monkeypatch):
    tr = translators[family]
    seen: list[torch.Tensor] = []
    original = tr.model.generate

    def spy(**kwargs):
        out = original(**kwargs)
        seen.append(out)
        return out

    monkeypatch.setattr(tr.model, "generate", spy)
    src, src_mask = _source_batch(tr, SOURCES)
    with torch.no_grad():
        hyps = tr.generate(tr.encode_ids(src, src_mask), src_mask, beam=2, max_len=5)
    (raw,) = seen
    lang_id = tr.tokenize_target(["x"])[0][0]
    assert tr.forced_bos_id == lang_id
    assert raw[:, 0].tolist() == [tr.decoder_start_id] * len(SOURCES)
    assert raw[:, 1].tolist() == [lang_id] * len(SOURCES)
    for row, h in zip(raw[:, 2:].tolist(), hyps):
        cut = row.index(tr.eos_id) if tr.eos_id in row else len(row)
        assert h == [t for t in row[:cut] if t != tr.pad_id]


def test_target_lang_selects_the_forced_token(model_dirs):
    pt = load_hf_translator(str(model_dirs["mbart50"]), target_lang="pt_XX")
    de = load_hf_translator(str(model_dirs["mbart50"]), target_lang="de_DE")
    tok = pt.tokenizer
    assert pt.forced_bos_id == tok.convert_tokens_to_ids("pt_XX")
    assert de.forced_bos_id == tok.convert_tokens_to_ids("de_DE")
    assert de.tokenize_target(["o gato"])[0][0] == de.forced_bos_id
    m2m = load_hf_translator(str(model_dirs["m2m100"]), target_lang="de", src_lang="fr")
    assert m2m.forced_bos_id == m2m.tokenizer.get_lang_id("de")
    assert m2m.tokenize_source(["a"])[0][0] == m2m.tokenizer.get_lang_id("fr")


def test_forced_language_from_the_checkpoint_when_none_given(tmp_path):
    tr = load_hf_translator(str(make_tiny_nllb(tmp_path, forced_target="deu_Latn")))
    assert tr.forced_bos_id == tr.tokenizer.convert_tokens_to_ids("deu_Latn")
    assert tr.tokenize_target(["das haus"])[0][0] == tr.forced_bos_id


@pytest.mark.parametrize("family", GEN_FAMILIES)
def test_translate_text_runs(translators, family):
    out = translators[family].translate_text(SOURCES, beam=2, max_len=5)
    assert len(out) == len(SOURCES) and all(isinstance(s, str) for s in out)


def test_detokenize_round_trips_and_drops_language_tokens(translators):
    for family in ("marian", "t5", "nllb"):
        tr = translators[family]
        assert tr.detokenize(tr.tokenize_target(["o gato está na casa"])) == ["o gato está na casa"]
        # the source side reads back what a CTC head over the source vocabulary would spell
        assert tr.detokenize_source(tr.tokenize_source(["the cat is in the house"])) == ["the cat is in the house"]
    m2m = translators["m2m100"]
    ids = m2m.tokenize_target(["o gato"])[0]
    assert ids[0] == m2m.forced_bos_id
    assert m2m.detokenize([[m2m.tokenizer.get_lang_id("yo")] + ids]) == ["o gato"]


# --- prefixes and prompts -------------------------------------------------------------------------
def test_t5_prefix_from_task_specific_params(tmp_path, translators):
    assert translators["t5"].source_prefix == "translate English to Portuguese: "
    two = make_tiny_t5(
        tmp_path,
        name="t5-two",
        task_prefixes={
            "translation_en_to_de": "translate English to German: ",
            "translation_en_to_pt": "translate English to Portuguese: ",
        },
    )
    assert load_hf_translator(str(two), target_lang="de").source_prefix == "translate English to German: "
    with pytest.raises(ValueError, match="several translation prefixes"):
        load_hf_translator(str(two))
    none = make_tiny_t5(tmp_path, name="t5-none", task_prefixes={})
    with pytest.raises(ValueError, match="source_prefix"):
        load_hf_translator(str(none))
    assert load_hf_translator(str(none), source_prefix="").source_prefix == ""


def test_t5_prompt_is_the_prefix_tokens_without_eos(translators):
    tr = translators["t5"]
    ids = tr.tokenize_source([tr.source_prefix])[0]
    assert ids[-1] == tr.eos_id
    expected = tr.embed_source_ids(torch.tensor([ids[:-1]]))[0]
    assert torch.equal(tr.embed_prompt(tr.source_prefix), expected)
    # text path: the prefix goes in front only when asked
    assert tr.tokenize_source(["a dog"], add_prefix=True)[0][: len(ids) - 1] == ids[:-1]
    assert tr.tokenize_source(["a dog"])[0] != tr.tokenize_source(["a dog"], add_prefix=True)[0]


def test_multilingual_marian_target_token_prefix(tmp_path):
    d = make_tiny_marian(tmp_path, multilingual=True)
    tr = load_hf_translator(str(d), target_lang="por")
    assert tr.source_prefix == ">>por<< "
    por = tr.tokenizer.convert_tokens_to_ids(">>por<<")
    assert tr.tokenize_source(["the cat"], add_prefix=True)[0][0] == por
    prompt = tr.embed_prompt(tr.source_prefix)
    assert torch.equal(prompt[0], tr.source_embedding_matrix()[por])
    assert tr.forced_bos_id is None
    with pytest.raises(ValueError, match="multilingual.*por"):
        load_hf_translator(str(d))
    with pytest.raises(ValueError, match="xyz"):
        load_hf_translator(str(d), target_lang="xyz")
    assert load_hf_translator(str(d), source_prefix=">>deu<< ").source_prefix == ">>deu<< "


def test_language_code_tokens_frame_the_speech_prompt(translators):
    nllb = translators["nllb"]
    eng = nllb.tokenizer.convert_tokens_to_ids("eng_Latn")
    assert nllb.source_special_ids == ([eng], [nllb.eos_id])
    assert torch.equal(nllb.embed_prompt(""), nllb.embed_source_ids(torch.tensor([[eng]]))[0])
    assert translators["marian"].source_special_ids == ([], [translators["marian"].eos_id])
    assert translators["marian"].embed_prompt("").shape == (0, D_MODEL)


# --- frozen ---------------------------------------------------------------------------------------
def test_frozen_eval_and_gradients_reach_the_inputs(translators):
    tr = translators["marian"]
    assert all(not p.requires_grad for p in tr.parameters())
    tr.train()
    assert not tr.training and not tr.model.training and not any(m.training for m in tr.modules())
    src, mask = _source_batch(tr, SOURCES[:2])
    x = tr.embed_source_ids(src).clone().requires_grad_(True)
    tgt, _ = _pad(tr.tokenize_target(TARGETS[:2]), tr.pad_id)
    a = tr.decoder_logits(tr.encode_embeddings(x, mask), mask, tgt)
    b = tr.decoder_logits(tr.encode_embeddings(x, mask), mask, tgt)
    assert torch.equal(a, b)  # dropout 0.1 in the config stays off
    a.logsumexp(-1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in tr.parameters())
    fp = tr.fingerprint()
    assert fp == load_hf_translator(tr.spec).fingerprint()


# --- loading and bad input ------------------------------------------------------------------------
def test_spec_forms_share_one_loading_path(model_dirs):
    d = model_dirs["marian"]
    a = load_hf_translator(str(d))
    b = load_hf_translator("hf:" + str(d))  # from_pretrained takes paths too: same code for both forms
    assert a.spec == str(d.resolve()) and b.spec == "hf:" + str(d)
    assert a.fingerprint() == b.fingerprint()
    assert a.load_kwargs == {"source_prefix": None, "target_lang": None, "src_lang": None}


def test_loading_errors_name_the_path_and_what_was_expected(tmp_path, model_dirs):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_hf_translator(str(missing))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_hf_translator("./not/a/dir/here")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty has no config\.json"):
        load_hf_translator(str(empty))
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "marian"}))
    with pytest.raises(FileNotFoundError, match=r"no model weights.*model\.safetensors"):
        load_hf_translator(str(no_weights))
    a_file = tmp_path / "file.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="is a file"):
        load_hf_translator(str(a_file))
    with pytest.raises(ValueError, match="packaged"):
        load_hf_translator("packaged:bergamot-en-pt")
    with pytest.raises(ValueError, match="src_lang"):
        load_hf_translator(str(model_dirs["marian"]), src_lang="en")
    with pytest.raises(ValueError, match="'pt' only"):  # a bilingual en->pt opus-mt cannot do German
        load_hf_translator(str(model_dirs["marian"]), target_lang="de")
    assert load_hf_translator(str(model_dirs["marian"]), target_lang="pt").source_prefix == ""
    with pytest.raises(ValueError, match="xx_YY"):
        load_hf_translator(str(model_dirs["nllb"]), target_lang="xx_YY")
    with pytest.raises(ValueError, match="target_lang"):
        load_hf_translator(str(model_dirs["mbart50"]))


def test_bad_tensors_get_clear_errors(translators):
    tr = translators["marian"]
    src, mask = _source_batch(tr, SOURCES[:2])
    memory = tr.encode_ids(src, mask).detach()
    tgt, _ = _pad(tr.tokenize_target(TARGETS[:2]), tr.pad_id)
    with pytest.raises(ValueError, match="-100"):
        tr.decoder_logits(memory, mask, tgt.masked_fill(tgt == tr.pad_id, -100))
    with pytest.raises(ValueError, match="bool"):
        tr.encode_embeddings(tr.embed_source_ids(src), mask.long())
    with pytest.raises(ValueError, match=r"D_m=16"):
        tr.generate(memory[..., :8], mask)
    with pytest.raises(ValueError, match="no True"):
        tr.generate(memory, torch.zeros_like(mask))
    with pytest.raises(TypeError, match="list of strings"):
        tr.tokenize_source("the cat")
