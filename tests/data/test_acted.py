"""The game's speech table is read, its clips decoded and labelled with the filter applied, resumably; bad
tables are refused naming the file and field. A stand-in labeller keeps these tests fast; one test reads the
installed package's table itself."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import soundfile as sf

from sltalign.data.acted import (
    QUEEN_TABLE,
    ActedSpeechUnavailable,
    LabelFilter,
    build_acted_manifest,
    decode_clip,
    read_queen_table,
    speech_entries,
)
from sltalign.data.manifest import read_manifest

RATE = 11025


def tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def mp3(wav: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, RATE, format="MP3")
    return buf.getvalue()


def write_table(path, files: dict[str, bytes], *, magic=b"QTBL", compression=1, count=None) -> None:
    """A queen.1c: header, entries (name, bundle, offset, size; big-endian), then the data."""
    names = list(files)
    offset = 15 + 21 * len(names)
    head = magic + b"v1.00\0" + b"\0\0" + bytes([compression]) + struct.pack(">H", len(names) if count is None else count)
    entries, blobs = b"", b""
    for n in names:
        entries += n.encode().ljust(12, b"\0") + b"\x01" + struct.pack(">II", offset + len(blobs), len(files[n]))
        blobs += files[n]
    path.write_bytes(head + entries + blobs)


@pytest.fixture
def table(tmp_path):
    clips = {f"C{i:02d}.SB": mp3(tone(1.5 + 0.5 * i, 200 + 50 * i)) for i in range(6)}
    clips["SHORT.SB"] = mp3(tone(0.5, 300))  # under the filter's 1.2 s: never chosen
    clips["ROOM.DOG"] = b"not speech"
    p = tmp_path / "queen.1c"
    write_table(p, clips)
    return p


class Scripted:
    """Labels by the clip's length: clip C03 is heard with low confidence (dropped), the others kept."""

    def __init__(self):
        self.calls = 0

    def __call__(self, wav):
        self.calls += 1
        seconds = round(len(wav) / 16000, 1)
        if seconds == 3.0:  # C03
            return "mumble", -1.5, 0.1, 1.0
        return f"a line of {seconds} seconds.", -0.2, 0.05, 1.1


def test_table_entries_and_decoding(table):
    entries = read_queen_table(table)
    assert [e.name for e in entries][-1] == "ROOM.DOG"
    speech = speech_entries(entries)
    assert len(speech) == 7 and speech[0].clip_id == "fotaq-C00"
    wav = decode_clip(table, speech[2])  # 2.5 s at 11,025 Hz -> 16 kHz
    assert wav.dtype == np.float32 and abs(len(wav) / 16000 - 2.5) < 0.06
    peak = np.abs(np.fft.rfft(wav[:16000])).argmax()  # 300 Hz tone survives MP3 and resampling
    assert abs(peak - 300) <= 2


def test_bad_tables_name_file_and_field(tmp_path):
    with pytest.raises(ActedSpeechUnavailable, match="flight-of-the-amazon-queen"):
        read_queen_table(tmp_path / "missing.1c")
    p = tmp_path / "bad.1c"
    write_table(p, {"A.SB": b"x"}, magic=b"RIFF")
    with pytest.raises(ValueError, match=r"bad.1c: not a Flight of the Amazon Queen table"):
        read_queen_table(p)
    write_table(p, {"A.SB": b"x"}, compression=0)
    with pytest.raises(ValueError, match="compression byte 0"):
        read_queen_table(p)
    write_table(p, {"A.SB": b"x"}, count=40)
    with pytest.raises(ValueError, match="announces 40 entries"):
        read_queen_table(p)
    q = tmp_path / "cut.1c"
    write_table(q, {"A.SB": b"x" * 100})
    q.write_bytes(q.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"entry 0 \(A.SB\) spans .* past the file's end"):
        read_queen_table(q)


def test_labels_filter_and_manifest(table, tmp_path):
    out = tmp_path / "acted"
    label = Scripted()
    manifest = build_acted_manifest(out, clips=6, table=table, labeller=label, progress=False)
    assert label.calls == 6  # the 0.5-s clip is outside the duration limits, so all six usable ones
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert {r["id"] for r in labels} == {f"fotaq-C{i:02d}" for i in range(6)}
    utts = read_manifest(manifest, require=("transcript",))
    assert sorted(u.id for u in utts) == sorted(f"fotaq-C{i:02d}" for i in range(6) if i != 3)
    for u in utts:  # each kept clip: its 16 kHz audio and its label
        wav, sr = sf.read(u.audio)
        assert sr == 16000 and u.transcript == f"a line of {round(len(wav) / 16000, 1)} seconds."
    assert not (out / "audio" / "fotaq-C03.flac").exists()


def test_choice_is_seeded_and_a_rerun_resumes(table, tmp_path):
    a, b = Scripted(), Scripted()
    build_acted_manifest(tmp_path / "a", clips=3, seed=1, table=table, labeller=a, progress=False)
    build_acted_manifest(tmp_path / "b", clips=3, seed=1, table=table, labeller=b, progress=False)
    assert (tmp_path / "a" / "labels.jsonl").read_text() == (tmp_path / "b" / "labels.jsonl").read_text()
    # a killed run leaves a torn last line: it is dropped and that clip labelled again
    log = tmp_path / "a" / "labels.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])
    more = Scripted()
    build_acted_manifest(tmp_path / "a", clips=5, seed=1, table=table, labeller=more, progress=False)
    assert more.calls == 3  # the torn one and two new
    ids = [json.loads(line)["id"] for line in log.read_text().splitlines()]  # every line whole again
    assert len(ids) == len(set(ids)) == 5
    again = Scripted()
    build_acted_manifest(tmp_path / "a", clips=5, seed=1, table=table, labeller=again, progress=False)
    assert again.calls == 0  # nothing left to do
    log.write_text(log.read_text() + "{not json}\n")
    with pytest.raises(ValueError, match=r"labels.jsonl:6: not a label line"):
        build_acted_manifest(tmp_path / "a", clips=5, seed=1, table=table, labeller=again, progress=False)


def test_filter_rules():
    from sltalign.data.acted import Label

    rule = LabelFilter()
    good = Label("x", 2.0, "Hello there.", -0.3, 0.1, 1.0)
    assert rule.keeps(good)
    for bad in (
        Label("x", 2.0, "", -0.3, 0.1, 1.0),
        Label("x", 2.0, "...", -0.3, 0.1, 1.0),
        Label("x", 2.0, "Hello.", -0.9, 0.1, 1.0),
        Label("x", 2.0, "Hello.", -0.3, 0.7, 1.0),
        Label("x", 2.0, "la la la la", -0.3, 0.1, 3.0),
    ):
        assert not rule.keeps(bad)


def test_shipped_labels_parse_and_round_trip(tmp_path):
    from sltalign.data.acted import Label, read_shipped_labels, write_shipped_labels

    shipped = read_shipped_labels()
    assert len(shipped) >= 1000 and all(k.startswith("fotaq-") for k in shipped)
    labs = [Label("fotaq-A", 1.0, "Hello there.", -0.25, 0.01, 0.9), Label("fotaq-B", 2.0, "", -99.0, 1.0, 0.0)]
    path = write_shipped_labels(tmp_path / "l.tsv", labs, ["made here"])
    assert path.read_text().startswith("# made here\n")
    with pytest.raises(ValueError, match="fotaq-C: a transcript with a tab"):
        write_shipped_labels(tmp_path / "m.tsv", [Label("fotaq-C", 1.0, "a\tb", -0.1, 0.0, 1.0)], [])


@pytest.mark.skipif(not QUEEN_TABLE.exists(), reason="flight-of-the-amazon-queen not installed (scripts/setup.sh installs it)")
def test_the_installed_game_table_and_the_shipped_labels(tmp_path, monkeypatch):
    from sltalign.data import acted
    from sltalign.data.acted import _read_labels, read_shipped_labels

    speech = speech_entries(read_queen_table())
    assert len(speech) == 6745
    wav = decode_clip(QUEEN_TABLE, speech[0])
    assert 0.2 < len(wav) / 16000 < 30 and np.abs(wav).max() > 0.01
    # the seed-0 choice with Whisper base: its first clips read their shipped labels, nothing is recognised
    shipped = read_shipped_labels()
    monkeypatch.setattr(acted, "whisper_labeller", lambda *a, **k: pytest.fail("recognised a clip with a shipped label"))
    manifest = build_acted_manifest(tmp_path, clips=12, progress=False)
    labels = _read_labels(tmp_path / "labels.jsonl")
    assert len(labels) == 12 and all(lab.transcript == shipped[i][0] for i, lab in labels.items())
    assert {u.id for u in read_manifest(manifest, require=("transcript",))} == {i for i, lab in labels.items() if lab.kept}
