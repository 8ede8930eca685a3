"""sltalign.data.manifest: the JSONL schema, its validation messages (file:line and field) and atomic writes."""

from __future__ import annotations

import json
import os

import pytest

from sltalign.data.manifest import ManifestError, Utterance, read_manifest, write_manifest


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "audio").mkdir()
    for name in ("a.wav", "b.wav"):
        (tmp_path / "audio" / name).write_bytes(b"RIFF")  # existence is all the manifest checks
    return tmp_path


def _line(**kw):
    base = {"id": "u1", "audio": "audio/a.wav", "duration": 1.5, "translation": "olá"}
    base.update(kw)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


def test_roundtrip_with_relative_paths(corpus, tmp_path_factory):
    utts = [
        Utterance(
            id="u1",
            audio=str(corpus / "audio" / "a.wav"),
            offset=2.0,
            duration=1.5,
            transcript="hello",
            translation="olá",
            translation_source="mt:packaged:bergamot-en-pt",
        ),
        Utterance(id="u2", audio=str(corpus / "audio" / "b.wav"), duration=3.0, translation="tchau", translation_source="human"),
    ]
    path = write_manifest(corpus / "m.jsonl", utts)
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["audio"] == "audio/a.wav"  # under the manifest's directory: written relative
    assert "offset" not in lines[1] and "transcript" not in lines[1]  # defaults are left out
    assert read_manifest(path) == utts
    # an audio file elsewhere keeps its absolute path; a manifest elsewhere still finds it
    other = tmp_path_factory.mktemp("elsewhere") / "m.jsonl"
    write_manifest(other, utts)
    assert json.loads(other.read_text().splitlines()[0])["audio"] == str(corpus / "audio" / "a.wav")
    assert read_manifest(other) == utts


@pytest.mark.parametrize(
    "line,expected",
    [
        ('{"id": "u1", "audio": ', ["not valid JSON"]),
        ('["u1"]', ["expected a JSON object"]),
        (_line(duration=...), ["field 'duration': missing"]),
        (_line(duration="1.5"), ["field 'duration': expected a number", "'1.5'"]),
        (_line(duration=-2), ["field 'duration': expected a positive number", "-2"]),
        (_line(offset=-0.5), ["field 'offset'", "-0.5"]),
        (_line(id=3), ["field 'id': expected a string"]),
        (_line(id="has space"), ["field 'id'", "whitespace"]),
        (_line(audio="audio/missing.wav"), ["field 'audio': file not found", "missing.wav"]),
        (_line(translation=...), ["field 'translation': missing or empty (required here)"]),
        (_line(translation="  "), ["field 'translation': missing or empty"]),
        (_line(translation_source="google"), ["field 'translation_source'", "'human' or 'mt:<model>'"]),
        (_line(transcipt="typo"), ["unknown field(s) ['transcipt']"]),
    ],
)
def test_bad_line_names_file_line_and_field(corpus, line, expected):
    path = corpus / "m.jsonl"
    path.write_text(_line(id="u0", audio="audio/b.wav") + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    msg = str(err.value)
    assert f"{path}:2:" in msg
    for part in expected:
        assert part in msg
    assert f"{path}:1:" not in msg  # the good line is not blamed


def test_every_problem_is_reported_and_duplicates(corpus):
    path = corpus / "m.jsonl"
    lines = [_line(id="a"), _line(id="b", duration=0), "", _line(id="a"), _line(id="c", audio="nope.wav")]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    msg = str(err.value)
    assert f"{path}:2: field 'duration'" in msg
    assert f"{path}:4: field 'id': 'a' duplicates the id on line 1" in msg
    assert f"{path}:5: field 'audio': file not found" in msg


def test_require_and_check_audio_options(corpus):
    path = corpus / "m.jsonl"
    path.write_text(_line(translation=..., audio="not/there.wav") + "\n", encoding="utf-8")
    (u,) = read_manifest(path, require=(), check_audio=False)
    assert u.translation is None and u.audio == str(corpus / "not" / "there.wav")
    with pytest.raises(ValueError, match="unknown fields"):
        read_manifest(path, require=("speaker",))
    with pytest.raises(FileNotFoundError):
        read_manifest(corpus / "absent.jsonl")
    (corpus / "empty.jsonl").write_text("\n")
    with pytest.raises(ManifestError, match="no utterances"):
        read_manifest(corpus / "empty.jsonl")


def test_utterance_checks_values():
    with pytest.raises(ValueError, match="'duration'"):
        Utterance(id="x", audio="/a.wav", duration=0)
    with pytest.raises(ValueError, match="without a 'translation'"):
        Utterance(id="x", audio="/a.wav", duration=1, translation_source="human")
    u = Utterance(id="x", audio="/a.wav", duration=1.0, offset=2.5)
    assert u.end == 3.5


def test_write_is_atomic(corpus, monkeypatch):
    path = corpus / "m.jsonl"
    good = [Utterance(id="u1", audio=str(corpus / "audio" / "a.wav"), duration=1.0)]
    write_manifest(path, good)
    before = path.read_bytes()

    def utts_then_crash():
        yield good[0]
        raise RuntimeError("crash while producing utterances")

    with pytest.raises(RuntimeError):
        write_manifest(path, utts_then_crash())
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_manifest(path, good * 1)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in corpus.iterdir()) == ["audio", "m.jsonl"]  # no temporary left behind
    with pytest.raises(ValueError, match="duplicate id 'u1'"):
        write_manifest(path, good * 2)


def test_non_utf8_line_is_named_with_its_number(corpus):
    """Case 7: a Latin-1 manifest said "'utf-8' codec can't decode byte 0xe1 ..." without the file's name."""
    m = corpus / "latin1.jsonl"
    m.write_bytes(
        (_line(id="u1") + "\n").encode() + b'{"id": "u2", "audio": "audio/a.wav", "duration": 1.5, "translation": "ol\xe1"}\n'
    )
    with pytest.raises(ManifestError, match=rf"{m}:2: not valid UTF-8 \(byte 0xe1 .*\); expected UTF-8 text"):
        read_manifest(m)
    bom = corpus / "bom.jsonl"  # a byte-order mark (Windows editors) is not an error
    bom.write_bytes(b"\xef\xbb\xbf" + (_line() + "\n").encode())
    assert [u.id for u in read_manifest(bom)] == ["u1"]


@pytest.mark.parametrize(
    "record, expected",
    [
        ({"id": "u1", "audio": "a\u0000b.wav", "duration": 1.0, "translation": "x"}, "field 'audio': expected a file path"),
        ({"id": "u1", "audio": "\ud800.wav", "duration": 1.0, "translation": "x"}, "field 'audio': expected a file path"),
        ({"id": "u1", "audio": "audio/a.wav", "duration": 10**400, "translation": "x"}, "too large"),
    ],
)
def test_unrepresentable_values_are_manifest_errors(corpus, record, expected):
    m = corpus / "odd.jsonl"
    m.write_text(json.dumps(record) + "\n")
    with pytest.raises(ManifestError, match=expected):
        read_manifest(m)


# --- property: any bytes, any JSON: utterances or a ManifestError, nothing else ----------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_fieldish = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=6), _json),
        "audio": st.one_of(st.sampled_from(["audio/a.wav", "~nobody-here/x.wav", "/"]), st.text(max_size=8), _json),
        "duration": st.one_of(st.floats(), st.integers(), _json),
        "offset": st.one_of(st.floats(), st.integers(), _json),
        "transcript": st.one_of(st.text(max_size=8), _json),
        "translation": st.one_of(st.text(max_size=8), _json),
        "translation_source": st.one_of(st.sampled_from(["human", "mt:x", "bad"]), _json),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_any_bytes_give_utterances_or_a_manifest_error(corpus, data):
    m = corpus / "fuzz.jsonl"
    m.write_bytes(data)
    try:
        utts = read_manifest(m)
    except ManifestError:
        return
    assert utts and all(isinstance(u, Utterance) for u in utts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.one_of(_fieldish, _json), min_size=1, max_size=4), check_audio=st.booleans())
def test_any_json_lines_give_utterances_or_a_manifest_error(corpus, records, check_audio):
    m = corpus / "fuzz.jsonl"
    m.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8", errors="surrogatepass")
    try:
        utts = read_manifest(m, check_audio=check_audio)
    except ManifestError:
        return
    assert len(utts) == len(records)
