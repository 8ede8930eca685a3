"""The lexicon's text: held-out sentences never reach it, named sources and files are read, errors name them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sltalign.data.lexicon_text import clip_voice, held_sentences, lexicon_lines, phrase_lines
from sltalign.data.manifest import Utterance
from sltalign.data.synth import DEFAULT_SENTENCES, load_sentences

needs_dict = pytest.mark.skipif(
    not DEFAULT_SENTENCES.is_file(), reason="Debian's trans-de-en is not installed (scripts/setup.sh installs it)"
)


def test_held_sentences_split_long_transcripts_and_read_the_synth_record(tmp_path):
    audio = tmp_path / "a.flac"
    (tmp_path / "a.json").write_text(
        json.dumps({"sentences": ["One listed sentence."], "voice": "en-029+m2", "backend": "espeak"})
    )
    utts = [
        Utterance(id="a", audio=str(audio), duration=1.0, transcript="First one. Second one? Third!"),
        Utterance(id="b", audio=str(tmp_path / "b.wav"), duration=1.0),
    ]
    assert held_sentences(utts) == {
        "First one. Second one? Third!",
        "First one.",
        "Second one?",
        "Third!",
        "One listed sentence.",
    }
    assert clip_voice(audio) == ("espeak", "en-029+m2")
    assert clip_voice(tmp_path / "b.wav") == (None, None)


def test_files_are_read_minus_held_lines(tmp_path):
    f = tmp_path / "text.txt"
    f.write_text("Keep this line.\n\nDrop this line.\n  Also   keep\u2019s spacing.  \n")
    assert lexicon_lines([str(f)], {"Drop this line."}) == ["Keep this line.", "Also keep's spacing."]
    with pytest.raises(FileNotFoundError, match="missing.txt is not a file"):
        lexicon_lines([str(tmp_path / "missing.txt")], set())
    with pytest.raises(ValueError, match="unknown source 'trans-de-en:words'"):
        lexicon_lines(["trans-de-en:words"], set())


@needs_dict
def test_dictionary_sources_hold_out_sentences_and_are_deterministic():
    sentences = [s for s, _ in load_sentences(None)]
    held = set(sentences[:50])
    lines = lexicon_lines(["trans-de-en:sentences"], held)
    assert len(lines) == len(sentences) - 50 and not held & set(lines)
    a = phrase_lines(200, set(), seed=1)
    assert a == phrase_lines(200, set(), seed=1) != phrase_lines(200, set(), seed=2)
    assert all(3 <= len(x.split(", ")) and x.endswith(".") and x[0].isupper() for x in a)
    assert not set(a[:5]) & set(phrase_lines(200, set(a[:5]), seed=1))


def test_held_out_drops_lines_that_contain_a_held_sentence(tmp_path):
    from sltalign.data.lexicon_text import HeldOut

    held = HeldOut({"Please check the number and dial again.", "Front left."})
    assert "Please check the number and dial again." in held
    # a quotation that quotes a held prompt, in other case and punctuation
    assert "The operator said: please CHECK the number, and dial again or ask for help." in held
    assert "Please check the number and call again." not in held
    # held sentences under 4 words are dropped only as whole lines: "front left" is everyday English
    assert "Front left." in held and "The front left wheel came off." not in held
    f = tmp_path / "text.txt"
    f.write_text("Please check the number and dial again or ask your operator.\nA line to keep.\n")
    assert lexicon_lines([str(f)], {"Please check the number and dial again."}) == ["A line to keep."]


def test_wordnet_and_fortune_readers(tmp_path):
    from sltalign.data.lexicon_text import fortune_sentences, wordnet_examples

    wn = tmp_path / "wordnet"
    wn.mkdir()
    (wn / "data.noun").write_text(
        "  1 This software and database is provided under a licence\n"
        '00001 03 n 01 bus 0 000 | a vehicle; "he ran to catch the bus"; "the bus was late"\n'
        '00002 03 n 01 hat 0 000 | a covering; "<b>no</b> markup here"\n',
        encoding="latin-1",
    )
    (wn / "data.verb").write_text('00003 29 v 01 sleep 0 000 | rest; "she sleeps well at night"\n', encoding="latin-1")
    assert wordnet_examples(str(wn)) == ("he ran to catch the bus", "she sleeps well at night", "the bus was late")
    fo = tmp_path / "fortunes"
    fo.mkdir()
    (fo / "wisdom").write_text("Look before you leap. Then leap anyway.\n\t-- Someone\n%\n  /\\_/\\  ( o.o )  > ^ <\n%\nOk.\n")
    (fo / "wisdom.dat").write_bytes(b"\x00\x01")
    (fo / "wisdom.u8").symlink_to(fo / "wisdom")
    assert fortune_sentences(str(fo)) == ("Look before you leap.", "Then leap anyway.")
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        wordnet_examples(str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="apt-get install fortunes-min fortunes"):
        fortune_sentences(str(tmp_path / "none"))
    with pytest.raises(ValueError, match="unknown source 'wordnet:glosses'"):
        lexicon_lines(["wordnet:glosses"], set())


@pytest.mark.skipif(
    not (Path("/usr/share/wordnet/data.noun").is_file() and Path("/usr/share/games/fortunes/fortunes").is_file()),
    reason="Debian's wordnet-base and fortunes are not installed (scripts/setup.sh installs them)",
)
def test_packaged_wordnet_and_fortunes_give_everyday_english():
    wn = lexicon_lines(["wordnet:examples"], set())
    fo = lexicon_lines(["fortunes:sentences"], set())
    assert len(wn) > 30_000 and len(fo) > 10_000
    assert "The children ran to the store" in wn
    assert all(3 <= len(t.split()) <= 40 for t in wn + fo)
    kept = lexicon_lines(["wordnet:examples"], {"The children ran to the store"})
    assert kept == [t for t in wn if t != "The children ran to the store"]


def test_check_sources_names_the_missing_package(tmp_path, monkeypatch):
    from sltalign.data import lexicon_text

    monkeypatch.setattr(lexicon_text, "WORDNET_DIR", tmp_path / "wordnet")
    monkeypatch.setattr(lexicon_text, "FORTUNES_DIR", tmp_path / "fortunes")
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        lexicon_text.check_sources(["wordnet:examples"])
    with pytest.raises(FileNotFoundError, match="apt-get install fortunes-min fortunes"):
        lexicon_text.check_sources(["fortunes:sentences"])
    with pytest.raises(FileNotFoundError, match="nowhere.txt is not a file"):
        lexicon_text.check_sources([str(tmp_path / "nowhere.txt")])
    with pytest.raises(ValueError, match="unknown source 'fortunes:jokes'"):
        lexicon_text.check_sources(["fortunes:jokes"])
    (tmp_path / "wordnet").mkdir()
    (tmp_path / "wordnet" / "data.noun").write_text("")
    (tmp_path / "fortunes").mkdir()
    (tmp_path / "fortunes" / "wisdom").write_text("Look before you leap.\n")
    (tmp_path / "mine.txt").write_text("A line.\n")
    lexicon_text.check_sources(["wordnet:examples", "fortunes:sentences", str(tmp_path / "mine.txt")])
