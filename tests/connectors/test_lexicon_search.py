"""The phone head's lexicon search and its word LM: the search spells lexicon words only, the LM settles what
the sound leaves open, options are checked and travel with checkpoints, and heads without a search (or
without flashlight-text) read greedily as before."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from sltalign.connectors import lexicon_search
from sltalign.connectors.ctc_head import CTCHeadDataError
from sltalign.connectors.lexicon_search import SearchOptions
from sltalign.connectors.phones import LM_FILE, PHONES_FILE, WORD, Lexicon, PhoneCTCHead, build_phone_inventory, phonemize
from sltalign.connectors.word_lm import TrigramLM, words_of

TEXTS = [
    "The cat sat on the mat.",
    "A dog runs in the park.",
    "We like green tea.",
    "The cat likes the mat.",
    "My cat sat in the sun.",
]
SEARCH = SearchOptions(beam=16, lm_weight=1.0, word_score=0.0)


@pytest.fixture(scope="module")
def lexicon_and_units():
    phones = phonemize(TEXTS, "en-us")
    return Lexicon.from_text(TEXTS, phones), build_phone_inventory(phones)


def posteriors(units: list[str], phones: list[str], *, ambiguous: dict[int, tuple[str, str]] | None = None) -> np.ndarray:
    """Log-posteriors (S, U + 1) of a clean reading of ``phones``: one frame per phone (0.9) and a blank frame
    after each. ``ambiguous``: position -> (winner, runner-up) spoken 0.46 / 0.44 at that phone's frame."""
    idx = {u: i for i, u in enumerate(units)}
    blank = len(units)
    frames = []
    for pos, p in enumerate(phones):
        row = np.full(blank + 1, 0.1 / blank)
        if ambiguous and pos in ambiguous:
            win, second = ambiguous[pos]
            row[:] = 0.1 / (blank - 1)
            row[idx[win]], row[idx[second]] = 0.46, 0.44
        else:
            row[idx[p]] = 0.9
        frames.append(row)
        silence = np.full(blank + 1, 0.1 / blank)
        silence[blank] = 0.9
        frames.append(silence)
    return np.log(np.stack(frames) / np.stack(frames).sum(1, keepdims=True)).astype(np.float32)


def test_word_lm_is_a_distribution_and_prefers_seen_word_orders():
    lm = TrigramLM(TEXTS)
    assert words_of("Don't stop, the CAT!") == ["don't", "stop", "the", "cat"]
    for ctx in (("<s>", "<s>"), ("<s>", "the"), ("the", "cat"), ("never", "seen")):
        mass = sum(math.exp(lm.logp(*ctx, w)) for w in lm.vocab)  # vocab includes </s>
        assert 0.99 < mass <= 1.0 + 1e-9, ctx  # what is left is the floor kept for unseen words
    assert lm.sentence_logp("The cat sat on the mat.") > lm.sentence_logp("The mat sat on the cat.")
    assert lm.logp("the", "cat", "sat") > lm.logp("the", "sat", "sat")
    with pytest.raises(ValueError, match="no sentences"):
        TrigramLM([])


def test_search_options_are_checked_by_name_and_round_trip():
    assert SearchOptions.from_dict(None) == SearchOptions()  # greedy: what heads made before the search read
    assert SearchOptions.from_dict(SEARCH.to_dict()) == SEARCH
    with pytest.raises(ValueError, match="unknown option.*'bem'"):
        SearchOptions.from_dict({"bem": 4})
    with pytest.raises(ValueError, match="search.beam: expected an integer >= 0"):
        SearchOptions(beam=-1)
    with pytest.raises(ValueError, match="search.lm_weight: expected a finite number"):
        SearchOptions(beam=4, lm_weight=float("nan"))
    with pytest.raises(ValueError, match="search.lm_weight: expected >= 0"):
        SearchOptions(beam=4, lm_weight=-0.5)
    with pytest.raises(ValueError, match="expected a mapping"):
        SearchOptions.from_dict([4])


def test_search_reads_clean_posteriors_as_greedy_does(lexicon_and_units):
    pytest.importorskip("flashlight.lib.text.decoder", reason="flashlight-text has no wheel for this Python")
    lex, units = lexicon_and_units
    search = lexicon_search.LexiconSearch(units=units, lexicon=lex, options=SEARCH, word_unit=WORD, lm=TrigramLM(TEXTS))
    for text in TEXTS:
        phones = phonemize([text], "en-us")[0]
        words = search(posteriors(units, phones))
        assert Lexicon.sentence(words) == lex.read(phones)
    assert search(np.zeros((0, len(units) + 1), np.float32)) == []
    with pytest.raises(ValueError, match=rf"expected log_probs \(S, {len(units) + 1}\)"):
        search(np.zeros((3, 4), np.float32))


def test_the_lm_settles_what_the_sound_leaves_open(lexicon_and_units):
    """'The ?at sat on the mat.' with the first phone of ?at heard as s (0.46) or k (0.44): greedy and the
    search without an LM spell 'sat'; the LM, which has seen 'the cat sat', spells 'cat'."""
    pytest.importorskip("flashlight.lib.text.decoder", reason="flashlight-text has no wheel for this Python")
    lex, units = lexicon_and_units
    phones = phonemize(["The cat sat on the mat."], "en-us")[0]
    k = phones.index("k")
    lp = posteriors(units, phones, ambiguous={k: ("s", "k")})
    path = [int(i) for i in lp.argmax(1) if i != len(units)]
    assert lex.read([units[i] for i in path]) == "The sat sat on the mat."
    no_lm = lexicon_search.LexiconSearch(units=units, lexicon=lex, options=SearchOptions(beam=16), word_unit=WORD)
    assert Lexicon.sentence(no_lm(lp)) == "The sat sat on the mat."
    with_lm = lexicon_search.LexiconSearch(units=units, lexicon=lex, options=SEARCH, word_unit=WORD, lm=TrigramLM(TEXTS))
    assert Lexicon.sentence(with_lm(lp)) == "The cat sat on the mat."
    with pytest.raises(ValueError, match="needs the word LM"):
        lexicon_search.LexiconSearch(units=units, lexicon=lex, options=SEARCH, word_unit=WORD)


def _logits(units: list[str], texts: list[str], ambiguous: dict[int, tuple[str, str]] | None = None):
    rows = [
        torch.from_numpy(posteriors(units, phonemize([t], "en-us")[0], ambiguous=ambiguous if i == 0 else None))
        for i, t in enumerate(texts)
    ]
    s = max(r.shape[0] for r in rows)
    logits = torch.full((len(rows), s, len(units) + 1), -30.0)
    mask = torch.zeros(len(rows), s, dtype=torch.bool)
    for i, r in enumerate(rows):
        logits[i, : r.shape[0]], mask[i, : r.shape[0]] = r, True
        logits[i, r.shape[0] :, len(units)] = 0.0  # padding: blank, and masked out anyway
    return logits, mask


def test_head_searches_in_a_batch_and_padding_does_not_change_a_reading(lexicon_and_units):
    pytest.importorskip("flashlight.lib.text.decoder", reason="flashlight-text has no wheel for this Python")
    lex, units = lexicon_and_units
    k = phonemize(["The cat sat on the mat."], "en-us")[0].index("k")
    texts = ["The cat sat on the mat.", "We like green tea.", "A dog runs in the park."]
    greedy_head = PhoneCTCHead(embed_dim=4, units=units, lexicon=lex)
    head = PhoneCTCHead(embed_dim=4, units=units, lexicon=lex, search=SEARCH, lm_text=TEXTS)
    logits, mask = _logits(units, texts, {k: ("s", "k")})
    assert greedy_head.read_logits(logits, mask, None)[0] == "The sat sat on the mat."
    read = head.read_logits(logits, mask, None)
    assert read == texts
    alone = [
        head.read_logits(logits[i : i + 1, : int(mask[i].sum())], mask[i : i + 1, : int(mask[i].sum())], None)[0]
        for i in range(3)
    ]
    assert alone == read
    # phones no sequence of lexicon words fits: the search spells nothing, the greedy reading stands
    lp = torch.from_numpy(posteriors(units, ["ð", "ð", "ð"]))[None]
    whole = torch.ones(1, lp.shape[1], dtype=torch.bool)
    assert head.searcher()(lp[0].numpy()) == []
    assert head.read_logits(lp, whole, None) == greedy_head.read_logits(lp, whole, None) == ["The."]
    silent = torch.zeros(1, 6, len(units) + 1)
    silent[..., len(units)] = 10.0  # every frame blank: nothing heard, nothing spelled
    assert head.read_logits(silent, torch.ones(1, 6, dtype=torch.bool), None) == greedy_head.read_logits(
        silent, torch.ones(1, 6, dtype=torch.bool), None
    )


def test_head_reads_greedily_without_flashlight(lexicon_and_units, monkeypatch, caplog):
    lex, units = lexicon_and_units
    k = phonemize(["The cat sat on the mat."], "en-us")[0].index("k")
    head = PhoneCTCHead(embed_dim=4, units=units, lexicon=lex, search=SEARCH, lm_text=TEXTS)
    import builtins

    real_import = builtins.__import__

    def no_flashlight(name, *args, **kwargs):
        if name.startswith("flashlight"):
            raise ImportError("no flashlight here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_flashlight)
    monkeypatch.setattr(lexicon_search, "_warned", False)
    logits, mask = _logits(units, ["The cat sat on the mat."], {k: ("s", "k")})
    with caplog.at_level("WARNING"):
        assert head.read_logits(logits, mask, None) == ["The sat sat on the mat."]
        head.read_logits(logits, mask, None)
    assert sum("flashlight-text is not installed" in r.message for r in caplog.records) == 1


def test_search_and_lm_travel_with_the_checkpoint(lexicon_and_units, tmp_path):
    lex, units = lexicon_and_units
    head = PhoneCTCHead(embed_dim=4, units=units, lexicon=lex, search=SEARCH, lm_text=TEXTS)
    head.write_data(tmp_path)
    assert (tmp_path / LM_FILE).is_file() and "lm_text" not in (tmp_path / PHONES_FILE).read_text()
    data = PhoneCTCHead.read_data(tmp_path)
    assert data == head.data()
    again = PhoneCTCHead.from_data(embed_dim=4, data=data)
    assert again.search == SEARCH and again.lm_text == TEXTS and again.units == units

    (tmp_path / LM_FILE).write_bytes(b"not gzip")
    with pytest.raises(CTCHeadDataError, match=LM_FILE):
        PhoneCTCHead.read_data(tmp_path)
    (tmp_path / LM_FILE).unlink()
    with pytest.raises(CTCHeadDataError, match=f"{LM_FILE} is missing"):
        PhoneCTCHead.read_data(tmp_path)
    with pytest.raises(ValueError, match="needs the LM's sentences"):
        PhoneCTCHead(embed_dim=4, units=units, lexicon=lex, search=SEARCH)


def test_a_head_from_before_the_search_reads_greedily(lexicon_and_units, tmp_path):
    lex, units = lexicon_and_units
    old = {"format": "sltalign-phones", "units": units, "lexicon": lex.to_json()}  # no "search", no LM file
    (tmp_path / PHONES_FILE).write_text(__import__("json").dumps(old))
    head = PhoneCTCHead.from_data(embed_dim=4, data=PhoneCTCHead.read_data(tmp_path))
    assert head.search == SearchOptions() and head.searcher() is None


def test_a_new_head_takes_its_search_from_the_config(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("The call was answered.\nWe like green tea.\n", encoding="utf-8")
    utt = types.SimpleNamespace(transcript="The speaker is muted.", audio=str(tmp_path / "clip.wav"))  # no voice record: en-us
    cfg = types.SimpleNamespace(lexicon_text=[str(text)], lexicon_exclude=["x"], phone_search=SEARCH.to_dict())
    state = PhoneCTCHead.prepare(model_cfg=cfg, train_utts=[utt], held_out=[], seed=0)
    assert state["search"] == SEARCH.to_dict()
    assert state["lm_text"] == ["The call was answered.", "We like green tea.", "The speaker is muted."]
    cfg.phone_search = {"beam": 0}
    assert "lm_text" not in PhoneCTCHead.prepare(model_cfg=cfg, train_utts=[utt], held_out=[], seed=0)


def test_the_read_out_is_said_in_words(lexicon_and_units):
    """What the model card says (tests/test_train.py checks a trained checkpoint's card carries it)."""
    lex, units = lexicon_and_units
    assert PhoneCTCHead(embed_dim=4, units=units, lexicon=lex).read_out().startswith("greedy")
    searching = PhoneCTCHead(embed_dim=4, units=units, lexicon=lex, search=SEARCH, lm_text=TEXTS).read_out()
    assert searching.startswith("lexicon search (beam 16, a word trigram over 5 sentences, weight 1")
