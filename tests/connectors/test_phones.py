"""The CTC head over phones and its lexicon: eSpeak's phonemes per accent, a deterministic lexicon that reads
known words exactly and unknown ones by their nearest neighbour, and a head that travels with both."""

from __future__ import annotations

import pytest
import torch

from sltalign.connectors.phones import (
    ACCENTS,
    WORD,
    Lexicon,
    PhoneCTCHead,
    accent_for,
    build_phone_inventory,
    phonemize,
    split_words,
)

TEXTS = [
    "The cat sat on the mat.",
    "A dog runs in the park.",
    "We like green tea.",
    "The house is very old and the garden is small.",
    "Where is the railway station?",
    "My brother bought a red bicycle.",
]


@pytest.fixture(scope="module")
def lexicon_and_phones():
    phones = phonemize(TEXTS, "en-us")
    return Lexicon.from_text(TEXTS, phones), phones


def test_phonemize_marks_words_and_depends_on_accent():
    us, gb = phonemize(["The car is in the garden."] * 2, ["en-us", "en-gb"])
    assert WORD in us and us[0] != WORD and us[-1] != WORD  # boundaries between words only
    # eSpeak joins some function words ("in the") into one phone word; the lexicon learns them as such
    assert 4 <= len(split_words(us)) == len(split_words(gb)) <= 6
    assert us != gb  # rhotic "car", "garden" in en-us, not in en-gb
    assert phonemize(["The car is in the garden."], "en-us") == [us]  # deterministic
    assert phonemize(["", "  "], "en-us") == [[], []]
    with pytest.raises(ValueError, match="unknown accent"):
        phonemize(["hello"], ["en-xx"])
    with pytest.raises(ValueError, match="2 texts but 1 accents"):
        phonemize(["a", "b"], ["en-us"])


def test_accent_of_a_voice():
    assert accent_for("espeak", "en-gb-scotland+m3") == "en-gb-scotland"
    assert accent_for("espeak", "en+f2") == "en-gb"  # eSpeak's plain "en" is British
    assert accent_for(None, "en-029") == "en-029"
    assert accent_for("flite", "slt") == "en-us" == accent_for(None, None) == accent_for("espeak", "fr+m1")
    assert set(ACCENTS) >= {accent_for("espeak", f"{a}+m1") for a in ACCENTS}


def test_lexicon_reads_known_words_exactly_and_is_deterministic(lexicon_and_phones):
    lex, phones = lexicon_and_phones
    # every line reads back as its own words (first word capitalised, a full stop)
    for text, seq in zip(TEXTS, phones):
        words = " ".join(w.strip(".?") for w in text.split())
        assert lex.read(seq) == words[0].upper() + words[1:] + "."
    assert lex.table == Lexicon.from_text(TEXTS, phonemize(TEXTS, "en-us")).table
    assert lex.lines_used == len(TEXTS)
    # a line's first word counts lower-cased ("The" -> "the", "A" -> "a"), the pronoun "I" keeps its case
    (the,) = split_words(phonemize(["the"], "en-us")[0])
    assert lex.table[the] == "the"
    assert "A" not in lex.table.values() and "a" in lex.table.values()
    assert lex.read([]) == ""
    # eSpeak joins "on the" into one phone word: the line is aligned and the pair is one entry
    assert "on the" in lex.table.values() and lex.read(phonemize(["sat on the mat"], "en-us")[0]) == "Sat on the mat."


def test_lexicon_reads_unseen_words_by_nearest_entry_or_split(lexicon_and_phones):
    lex, _ = lexicon_and_phones
    (garden,) = split_words(phonemize(["garden"], "en-us")[0])
    one_off = garden[:-1] + ("z",)  # one phone wrong: the nearest entry
    assert lex.read_word(one_off) == ["garden"]
    (green,) = split_words(phonemize(["green"], "en-us")[0])
    (tea,) = split_words(phonemize(["tea"], "en-us")[0])
    assert lex.read_word(green + tea) == ["green", "tea"]  # a missed word boundary: two exact entries
    # lines whose words do not pair with phone words (eSpeak spells digits out) teach nothing
    # nor do lines with digits or capitalised abbreviations: a spelled-out "42" (two phone words) and a join
    # ("in the", one) would leave the counts equal and pair every word after the number with the wrong sounds
    lines = ["It costs 42 euros.", "He paid 42 dollars in the shop.", "The UN met today.", "The cat sat on the mat."]
    lex2 = Lexicon.from_text(lines, phonemize(lines, "en-us"))
    assert lex2.lines_used == 1 and not {"42", "dollars", "in", "UN"} & set(lex2.table.values())
    # a line is aligned word by word in its own accent
    gb = ["The car is in the garden."]
    assert Lexicon.from_text(gb, phonemize(gb, "en-gb"), "en-gb").read(phonemize(gb, "en-gb")[0]) == "The car is in the garden."
    with pytest.raises(ValueError, match="empty table"):
        Lexicon({})


def test_words_read_alone_fill_the_accents_their_lines_were_not_read_in():
    # each line is read in one accent: "answered" and "muted" only in en-gb here
    lines = ["The call was answered.", "The speaker is muted.", "I answered the phone."]
    accents = ["en-gb", "en-gb", "en-us"]
    ph = phonemize(lines, accents)
    (us_muted,) = split_words(phonemize(["muted"], "en-us")[0])
    plain = Lexicon.from_text(lines, ph, accents)
    assert us_muted not in plain.table  # heard as whatever entry is nearest
    lex = Lexicon.from_text(lines, ph, accents, word_accents=["en-us", "en-gb"])
    assert lex.read_word(us_muted) == ["muted"] and lex.words_added > 0 and lex.lines_used == plain.lines_used
    # the lines keep precedence: every entry they gave reads as before
    assert all(lex.table[k] == w for k, w in plain.table.items())
    # a line's first word counts lower-cased alone too ("The" -> "the"), "I" keeps its case
    assert "The" not in lex.table.values() and "I" in lex.table.values()
    assert lex.table == Lexicon.from_text(lines, ph, accents, word_accents=["en-us", "en-gb"]).table  # deterministic


def test_a_new_head_reads_words_alone_unless_told_not_to(tmp_path):
    from types import SimpleNamespace

    text = tmp_path / "text.txt"
    text.write_text("The call was answered.\nThe speaker is muted.\nWe like green tea.\n", encoding="utf-8")

    def prepare(alone: bool) -> Lexicon:
        cfg = SimpleNamespace(lexicon_text=[str(text)], lexicon_exclude=["x"], lexicon_words_alone=alone)
        state = PhoneCTCHead.prepare(model_cfg=cfg, train_utts=[], held_out=[], seed=0)
        return Lexicon.from_json(state["lexicon"])

    with_words, lines_only = prepare(True), prepare(False)
    assert set(lines_only.table) < set(with_words.table)  # more entries, none of the lines' lost
    for acc in ACCENTS:  # "muted" is read in every accent, whichever one its line drew
        (key,) = split_words(phonemize(["muted"], acc)[0])
        assert with_words.table[key] == "muted"


def test_lexicon_json_round_trip(lexicon_and_phones):
    lex, phones = lexicon_and_phones
    again = Lexicon.from_json(lex.to_json())
    assert again.table == lex.table
    assert [again.read(p) for p in phones] == [lex.read(p) for p in phones]
    with pytest.raises(ValueError, match="phone word, written word"):
        Lexicon.from_json([["a b"]])


def test_head_encodes_transcripts_and_decodes_through_the_lexicon(lexicon_and_phones):
    lex, phones = lexicon_and_phones
    units = build_phone_inventory(phones)
    assert WORD in units and units == sorted(set(units))
    head = PhoneCTCHead(embed_dim=8, units=units, lexicon=lex)
    ids = head.encode(TEXTS[:3], "en-us")
    assert all(0 <= i < head.vocab_size for row in ids for i in row)
    assert head.decode(ids) == ["The cat sat on the mat.", "A dog runs in the park.", "We like green tea."]
    torch.manual_seed(0)
    assert head(torch.randn(2, 5, 8)).shape == (2, 5, len(units) + 1)  # (B, S, U + 1), blank last
    assert head.config() == {"kind": "phones", "embed_dim": 8, "vocab_size": len(units)}
    again = PhoneCTCHead.from_state(head.state(), embed_dim=8)
    assert again.units == head.units and again.lexicon.table == lex.table


def test_head_refuses_bad_units_and_state(lexicon_and_phones):
    lex, _ = lexicon_and_phones
    with pytest.raises(ValueError, match="distinct"):
        PhoneCTCHead(embed_dim=8, units=["a", "a", WORD], lexicon=lex)
    with pytest.raises(ValueError, match="distinct"):
        PhoneCTCHead(embed_dim=8, units=["a", "b"], lexicon=lex)  # no word boundary
    with pytest.raises(ValueError, match="embed_dim"):
        PhoneCTCHead(embed_dim=0, units=["a", WORD], lexicon=lex)
    with pytest.raises(ValueError, match="sltalign-phones"):
        PhoneCTCHead.from_state({"units": []}, embed_dim=8)
    head = PhoneCTCHead(embed_dim=8, units=["a", WORD], lexicon=lex)
    with pytest.raises(ValueError, match="width 7"):
        head(torch.randn(1, 2, 7))
