"""The lexicon's text: held-out sentences never reach it, named sources and files are read, errors name them."""

from __future__ import annotations

import json

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
