"""sltalign.data.realspeech: the human-translated real-speech test and dev sets over installed Debian packages."""

from __future__ import annotations

import re
from pathlib import Path
from importlib import resources

import pytest

from sltalign.audio import load_audio
from sltalign.data.manifest import read_manifest
from sltalign.data.realspeech import (
    ALSA_ROOT,
    DEFAULT_ROOT,
    IVR_ROOT,
    PACKAGES,
    SPLITS,
    SUBSETS,
    WZ2100_ARCHIVE,
    RealSpeechUnavailable,
    build_realspeech_manifest,
    read_realspeech_table,
    subset_of,
)

INSTALLED = {
    "librivox": DEFAULT_ROOT.is_dir(),
    "cards": DEFAULT_ROOT.is_dir(),
    "commands": DEFAULT_ROOT.is_dir(),
    "digits": DEFAULT_ROOT.is_dir(),
    "ivr": IVR_ROOT.is_dir(),
    "wz2100": WZ2100_ARCHIVE.is_file(),
    "alsa": ALSA_ROOT.is_dir(),
}
ORIGINAL = ("librivox", "cards", "commands", "digits", "ivr")
#: clips per subset and split, and the bounds of a sane clip length (s) per subset
COUNTS = {
    "test": {"librivox": 5, "cards": 5, "commands": 1, "digits": 1, "ivr": 84, "wz2100": 17, "alsa": 8},
    "dev": {"ivr": 24, "wz2100": 7},
}
SECONDS = {
    "librivox": (2, 15),
    "cards": (1, 5),
    "commands": (1, 5),
    "digits": (1, 5),
    "ivr": (0.8, 12),
    "wz2100": (1, 6),
    "alsa": (0.8, 3),
}


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def test_table_is_well_formed():
    text = resources.files("sltalign.data").joinpath("realspeech.tsv").read_text(encoding="utf-8")
    lines = text.split("\n")
    assert lines[-1] == "" and "" not in lines[:-1]  # one row a line, ending in a newline, no blank lines
    header = lines[0].split("\t")
    assert header == ["id", "path", "english", "portuguese", "english_source", "split"]
    for n, line in enumerate(lines[1:-1], start=2):
        cells = line.split("\t")
        assert len(cells) == len(header), f"realspeech.tsv:{n}: {len(cells)} cells"
        assert all(c == c.strip() and c for c in cells), f"realspeech.tsv:{n}: an empty or padded cell"
    assert set(PACKAGES) == set(SUBSETS)


def test_table_is_complete_and_human_translated():
    rows = read_realspeech_table()
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids) == 152
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", i) for i in ids)
    for split in SPLITS:
        counts = {}
        for r in rows:
            if r["split"] == split:
                counts[subset_of(r["id"])] = counts.get(subset_of(r["id"]), 0) + 1
        assert counts == COUNTS[split]
    assert {subset_of(r["id"]) for r in rows} == set(SUBSETS)
    for r in rows:
        # written form: the package's words, with case and punctuation (MT on gold reads it like text)
        if subset_of(r["id"]) != "librivox":  # the LibriVox clips cut sentences, so some begin lower-case
            assert r["english"][0].isupper() or r["english"][0].isdigit()
        assert r["english"].rstrip()[-1] in ".,;!?"
        assert r["portuguese"][0].isupper() and r["portuguese"].rstrip()[-1] in ".!?"
        assert r["portuguese"].lower() != r["english"].lower()
        assert "  " not in r["english"] and "  " not in r["portuguese"]
        assert any(
            k in r["english_source"]
            for k in ("pocketsphinx", "TIDIGITS", "asterisk-core-sounds-en", PACKAGES[subset_of(r["id"])])
        )
    # the original 96 test rows keep their ids
    assert sum(r["split"] == "test" and subset_of(r["id"]) in ORIGINAL for r in rows) == 96


def test_dev_and_test_are_disjoint():
    rows = read_realspeech_table()
    test = [r for r in rows if r["split"] == "test"]
    dev = [r for r in rows if r["split"] == "dev"]
    assert 20 <= len(dev) <= 40
    key = lambda r: (PACKAGES[subset_of(r["id"])], r["path"])
    assert not {key(r) for r in test} & {key(r) for r in dev}
    assert not {_norm(r["english"]) for r in test} & {_norm(r["english"]) for r in dev}
    assert len({key(r) for r in rows}) == len(rows)  # no recording twice in the table


@pytest.mark.parametrize("split", SPLITS)
def test_every_row_of_an_installed_subset_loads(tmp_path, split):
    chosen = [s for s in COUNTS[split] if INSTALLED[s]]
    if not chosen:
        pytest.skip(f"no {split} subset installed (scripts/setup.sh installs {sorted(set(PACKAGES.values()))})")
    path = build_realspeech_manifest(tmp_path, split=split, subsets=chosen)
    utts = read_manifest(path, require=("transcript", "translation"))
    assert len(utts) == sum(COUNTS[split][s] for s in chosen)
    assert {u.translation_source for u in utts} == {"human"}
    assert len({u.id for u in utts}) == len(utts)
    for u in utts:
        lo, hi = SECONDS[subset_of(u.id)]
        assert lo <= u.duration <= hi, (u.id, u.duration)
        wav = load_audio(u.audio)
        assert len(wav) == round(u.duration * 16000)
        assert 0.05 < abs(wav).max() <= 1.0  # speech, not silence
    if "librivox" in chosen:
        librivox = [u for u in utts if u.id.startswith("librivox-")]
        assert sum(u.duration for u in librivox) == pytest.approx(24.73, abs=0.01)
    if "wz2100" in chosen:  # clips inside the archive are extracted next to the manifest, once
        wz = [u for u in utts if u.id.startswith("wz2100-")]
        assert all(u.audio.startswith(str(tmp_path / "audio" / "wz2100")) for u in wz)
        again = read_manifest(build_realspeech_manifest(tmp_path, split=split, subsets=["wz2100"]))
        assert [u.id for u in again] == [u.id for u in wz]


@pytest.mark.skipif(not INSTALLED["wz2100"], reason="the wz2100 archive is not installed (scripts/setup.sh installs it)")
def test_a_relative_out_dir_gives_paths_that_exist(tmp_path, monkeypatch):
    # Extracted clips must be found when the manifest is read, whatever directory the caller named it from.
    monkeypatch.chdir(tmp_path)
    path = build_realspeech_manifest("rel/realspeech", split="dev", subsets=["wz2100"])
    utts = read_manifest(path)
    assert utts and all(Path(u.audio).is_file() for u in utts)


@pytest.mark.skipif(
    not all(INSTALLED.values()), reason="not every real-speech package installed (scripts/setup.sh installs them)"
)
def test_default_builds_the_whole_test_set(tmp_path):
    utts = read_manifest(build_realspeech_manifest(tmp_path))  # the demo's call
    assert len(utts) == sum(COUNTS["test"].values())
    assert {subset_of(u.id) for u in utts} == set(SUBSETS)
    only = read_manifest(build_realspeech_manifest(tmp_path / "sub", subsets=["cards"]))
    assert [u.id for u in only] == [f"cards-00{i}" for i in range(1, 6)]


def test_missing_package_is_reported(tmp_path):
    with pytest.raises(RealSpeechUnavailable, match="pocketsphinx-testdata"):
        build_realspeech_manifest(tmp_path, root=tmp_path / "absent")
    with pytest.raises(RealSpeechUnavailable, match="subset 'ivr'.*asterisk-core-sounds-en-wav"):
        build_realspeech_manifest(tmp_path, subsets=["ivr"], ivr_root=tmp_path / "absent")
    with pytest.raises(RealSpeechUnavailable, match="warzone2100-data.*alsa-utils"):
        build_realspeech_manifest(
            tmp_path, subsets=["wz2100", "alsa"], roots={"wz2100": tmp_path / "absent.wz", "alsa": tmp_path / "absent"}
        )
    with pytest.raises(ValueError, match="subsets must be among"):
        build_realspeech_manifest(tmp_path, subsets=["podcasts"])
    with pytest.raises(ValueError, match="split must be one of"):
        build_realspeech_manifest(tmp_path, split="train")
    with pytest.raises(ValueError, match="no dev rows"):
        build_realspeech_manifest(tmp_path, split="dev", subsets=["cards"])


@pytest.mark.skipif(not INSTALLED["cards"], reason="Debian package pocketsphinx-testdata not installed")
def test_a_missing_new_package_leaves_its_subset_out(tmp_path, capsys):
    # the older set still builds where the newer packages are absent (the demo relies on it)
    absent = {"wz2100": tmp_path / "absent.wz", "alsa": tmp_path / "absent"}
    utts = read_manifest(build_realspeech_manifest(tmp_path, subsets=["cards", "wz2100", "alsa"], roots=absent))
    assert [subset_of(u.id) for u in utts] == ["cards"] * 5
    err = capsys.readouterr().err
    assert "apt-get install warzone2100-data" in err and "apt-get install alsa-utils" in err
