"""sltalign.data.realspeech: the human-translated real-speech test set over Debian's pocketsphinx-testdata."""

from __future__ import annotations

import pytest

from sltalign.audio import load_audio
from sltalign.data.manifest import read_manifest
from sltalign.data.realspeech import (
    DEFAULT_ROOT,
    IVR_ROOT,
    SUBSETS,
    RealSpeechUnavailable,
    build_realspeech_manifest,
    read_realspeech_table,
    subset_of,
)


def test_table_is_complete_and_human_translated():
    rows = read_realspeech_table()
    assert len(rows) == 96
    assert len({r["id"] for r in rows}) == 96
    assert {subset_of(r["id"]) for r in rows} == set(SUBSETS)
    for r in rows:
        # written form: the package's words, with case and punctuation (MT on gold reads it like text)
        assert r["english"].rstrip()[-1] in ".,;!?"
        assert r["portuguese"][0].isupper() and r["portuguese"].rstrip()[-1] in ".!?"
        assert r["portuguese"].lower() != r["english"]
        assert any(k in r["english_source"] for k in ("pocketsphinx", "TIDIGITS", "asterisk-core-sounds-en"))
    assert sum(subset_of(r["id"]) == "ivr" for r in rows) == 84


@pytest.mark.skipif(not (DEFAULT_ROOT.is_dir() and IVR_ROOT.is_dir()),
                    reason="Debian packages pocketsphinx-testdata and asterisk-core-sounds-en-wav not installed (scripts/setup.sh installs them)")
def test_manifest_builds_and_audio_loads(tmp_path):
    path = build_realspeech_manifest(tmp_path)
    utts = read_manifest(path, require=("transcript", "translation"))
    assert len(utts) == 96
    assert {u.translation_source for u in utts} == {"human"}
    librivox = [u for u in utts if u.id.startswith("librivox-")]
    assert sum(u.duration for u in librivox) == pytest.approx(24.73, abs=0.01)
    for u in utts:
        wav = load_audio(u.audio)
        assert len(wav) == round(u.duration * 16000)
        assert 0.05 < abs(wav).max() <= 1.0  # speech, not silence
    only = read_manifest(build_realspeech_manifest(tmp_path / "sub", subsets=["cards"]))
    assert [u.id for u in only] == [f"cards-00{i}" for i in range(1, 6)]


def test_missing_package_is_reported(tmp_path):
    with pytest.raises(RealSpeechUnavailable, match="pocketsphinx-testdata"):
        build_realspeech_manifest(tmp_path, root=tmp_path / "absent")
    with pytest.raises(RealSpeechUnavailable, match="subset 'ivr'.*asterisk-core-sounds-en-wav"):
        build_realspeech_manifest(tmp_path, subsets=["ivr"], ivr_root=tmp_path / "absent")
    with pytest.raises(ValueError, match="subsets must be among"):
        build_realspeech_manifest(tmp_path, subsets=["podcasts"])
