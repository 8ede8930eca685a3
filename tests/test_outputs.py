"""Outputs as whisper users expect them: txt/json/srt/vtt/tsv writers that round-trip through independent
readers (srt, webvtt-py), segments with the VAD pieces' times from the Python API, arrays at any rate, and
`sltalign translate -o DIR -f FMT` over files, directories and globs."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sltalign import SpeechTranslator
from sltalign.checkpoint import save_connector
from sltalign.cli import main
from sltalign.connectors import TiedCTCHead, build_connector
from sltalign.foundation import load_speech_encoder, load_translator
from sltalign.model import AlignedST
from sltalign.outputs import FORMATS, Segment, Translation, parse_formats, render, write_outputs
from tests.conftest import speechlike

SEGMENTS = [
    Segment(0.0, 2.5, "O gato sentou-se no tapete.", "the cat sat on the mat"),
    Segment(3.004, 7.25, "Ação --> reação, e\nlinha nova: não quebra a legenda."),
    Segment(7.25, 7.25, "zero length: no cue"),
    Segment(7.5, 3725.999, "Uma hora depois."),  # past an hour: HH > 00
    Segment(3726.0, 3727.0, ""),  # empty text: no cue
]
TR = Translation(text=" ".join(s.text for s in SEGMENTS if s.text), segments=SEGMENTS, duration=3727.5, language="pt")
CUES = [s for s in SEGMENTS if s.text and s.end > s.start]


def _flat(text: str) -> str:
    return " ".join(text.split()).replace("-->", "->")


def test_srt_round_trips_through_the_srt_library():
    import srt

    subs = list(srt.parse(render("srt", TR)))
    assert [s.index for s in subs] == [1, 2, 3]
    assert [s.content for s in subs] == [_flat(c.text) for c in CUES]
    assert [(s.start, s.end) for s in subs] == [
        (timedelta(seconds=round(c.start, 3)), timedelta(seconds=round(c.end, 3))) for c in CUES
    ]
    assert "01:02:05,999" in render("srt", TR)


def test_vtt_round_trips_through_webvtt_py():
    import webvtt

    vtt = webvtt.from_string(render("vtt", TR))
    assert [c.text for c in vtt.captions] == [_flat(c.text) for c in CUES]

    def seconds(stamp: str) -> float:  # webvtt-py keeps times as strings; its *_in_seconds are whole seconds
        h, m, s = stamp.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    assert [(seconds(c.start), seconds(c.end)) for c in vtt.captions] == [
        (pytest.approx(round(c.start, 3)), pytest.approx(round(c.end, 3))) for c in CUES
    ]
    assert vtt.captions[2].end == "01:02:05.999"


def test_tsv_txt_and_json_round_trip():
    rows = list(csv.reader(io.StringIO(render("tsv", TR)), delimiter="\t"))
    assert rows[0] == ["start", "end", "text"]
    assert [(int(a), int(b), t) for a, b, t in rows[1:]] == [
        (round(s.start * 1000), round(s.end * 1000), _flat(s.text)) for s in SEGMENTS if s.text
    ]
    assert render("txt", TR).splitlines() == [_flat(s.text) for s in SEGMENTS if s.text]
    meta = {"model": {"checkpoint": "ckpt"}, "decoding": {"beam": 4}}
    d = json.loads(render("json", TR, meta))
    assert d["model"] == meta["model"] and d["decoding"] == meta["decoding"] and d["language"] == "pt"
    assert d["segments"][0] == {"id": 0, "start": 0.0, "end": 2.5, "text": SEGMENTS[0].text, "source": "the cat sat on the mat"}
    assert "source" not in d["segments"][1]  # no transcript for that segment: no key, not a null
    back = Translation.from_dict(d)
    assert back.text == TR.text and back.language == "pt" and back.duration == TR.duration
    assert [(s.start, s.end, s.text, s.source) for s in back.segments] == [
        (round(s.start, 3), round(s.end, 3), s.text, s.source) for s in SEGMENTS
    ]
    assert "ação" in render("json", TR)  # UTF-8, not \\u escapes


def test_format_names_and_files(tmp_path):
    assert (
        parse_formats("all") == list(FORMATS) and parse_formats("vtt,srt") == ["srt", "vtt"] and parse_formats(["TXT"]) == ["txt"]
    )
    with pytest.raises(ValueError, match="expected txt, json, srt, vtt, tsv or all"):
        parse_formats("docx")
    with pytest.raises(ValueError, match="output format"):
        render("docx", TR)
    paths = write_outputs(TR, tmp_path / "out", "talk", FORMATS)
    assert [p.name for p in paths] == [f"talk.{f}" for f in FORMATS]
    empty = Translation(text="", segments=[], duration=0.0)
    assert render("srt", empty) == "" and render("vtt", empty) == "WEBVTT\n\n" and render("txt", empty) == ""


# ---------------------------------------------------------------------------------------------------------
# the Python API on a tiny random model


@pytest.fixture(scope="module")
def st(tiny_whisper_dir, sharp_marian_dir, tmp_path_factory) -> SpeechTranslator:
    speech = load_speech_encoder(str(tiny_whisper_dir), mode="trim")
    mt = load_translator(str(sharp_marian_dir))
    torch.manual_seed(0)
    conn = build_connector("mlp", in_dim=speech.dim, out_dim=mt.embed_dim, stack=4, hidden=32)
    model = AlignedST(
        speech_encoder=speech, connector=conn, translator=mt, arrangement="ecd", ctc_head=TiedCTCHead(embed_dim=mt.embed_dim)
    )
    ckpt = save_connector(
        model, tmp_path_factory.mktemp("outputs") / "ckpt", decoding={"beam": 1, "max_len": 5, "length_penalty": 1.0}
    )
    return SpeechTranslator.from_pretrained(ckpt)


def test_segments_carry_the_vad_pieces_times(st, monkeypatch):
    from sltalign import segment

    sr = 16000
    starts = [0, 3 * sr, 6 * sr]
    wav = np.concatenate([np.concatenate([speechlike(2.5, seed=s), np.zeros(sr // 2, np.float32)]) for s in (1, 2, 3)])
    monkeypatch.setattr(segment, "detect_speech", lambda *a, **k: [(s, s + int(2.5 * sr)) for s in starts])
    monkeypatch.setattr(st, "max_piece_seconds", 3.0)
    tr = st.translate_segments(wav)
    assert isinstance(tr, Translation) and tr.duration == pytest.approx(len(wav) / sr)
    assert len(tr.segments) == 3
    for seg, s in zip(tr.segments, starts):  # each piece padded at most into the silence around it
        assert s / sr - 0.3 <= seg.start <= s / sr and (s + 2.5 * sr) / sr <= seg.end <= (s + 2.5 * sr) / sr + 0.3
    assert all(seg.source is not None for seg in tr.segments)  # the model has a CTC head: what it heard
    assert tr.text == st.translate(wav)  # the same text as translate() gives
    assert st.translate([wav], return_segments=True)[0].segments == tr.segments


def test_short_input_is_one_segment_and_silence_none(st):
    wav = speechlike(1.2, seed=4)
    tr = st.translate_segments(wav)
    assert [(s.start, s.end) for s in tr.segments] == [(0.0, 1.2)] and tr.segments[0].text == tr.text
    with pytest.warns(UserWarning, match="no audio"):
        assert st.translate_segments([np.zeros(100, np.float32)])[0].segments == []
    assert st.translate_segments(wav, sources=False).segments[0].source is None
    # the source comes from the translation's own connector pass: what ctc_transcribe reads on its own
    assert tr.segments[0].source == st.model.ctc_transcribe(*st.model.encode_audio([wav]))[0]
    assert st.translate_segments(wav, sources=False).text == tr.text


def test_arrays_at_any_sampling_rate(st):
    from sltalign.audio import resample

    wav16 = speechlike(1.5, seed=7)
    wav8 = resample(wav16, 16000, 8000)
    assert st.translate(wav8, sampling_rate=8000) == st.translate(resample(wav8, 8000, 16000))
    tr = st.translate_segments(wav8, sampling_rate=8000)
    assert tr.duration == pytest.approx(1.5, abs=1e-3)
    assert st.translate(wav16.astype(np.float32), sampling_rate=16000) == st.translate(wav16)


def test_describe_names_model_and_decoding(st):
    d = st.describe()
    assert d["decoding"]["beam"] == 1 and d["model"]["checkpoint"] and d["model"]["translator"]


def test_device_is_checked_by_name(st):
    from sltalign.api import resolve_device

    assert resolve_device(None).type == "cpu" and resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")


# ---------------------------------------------------------------------------------------------------------
# the command line


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for i in range(3):
        sf.write(root / f"c{i}.wav", speechlike(0.6 + 0.3 * i, seed=i), 16000)
    (root / "notes.txt").write_text("not audio: a directory's other files are skipped")
    return root


def test_translate_writes_every_format_per_input(st, clips, tmp_path, capsys, caplog):
    ckpt = str(st.checkpoint)
    with caplog.at_level("INFO", logger="sltalign"):  # -v after the subcommand: load and compute timings logged
        assert main(["translate", "--model", ckpt, *sorted(str(p) for p in clips.glob("*.wav")), "-v"]) == 0
    assert any(m.startswith("loaded ") for m in caplog.messages) and any("model " in m and "load " in m for m in caplog.messages)
    lines = capsys.readouterr().out.strip("\n").split("\n")  # today's stdout behaviour: one line per input
    assert len(lines) == 3
    out = tmp_path / "subs"
    assert main(["translate", "--model", ckpt, str(clips), "-o", str(out), "-f", "all"]) == 0  # a directory
    assert sorted(p.name for p in out.iterdir()) == sorted(f"c{i}.{f}" for i in range(3) for f in FORMATS)
    for i, line in enumerate(lines):
        d = json.loads((out / f"c{i}.json").read_text())
        assert d["text"] == line and d["audio"].endswith(f"c{i}.wav") and d["decoding"]["beam"] == 1
        assert d["model"]["checkpoint"] == ckpt and d["segments"][0]["start"] == 0.0
    out2 = tmp_path / "glob"
    assert (
        main(["translate", "--model", ckpt, str(clips / "c[01].wav"), "--output_dir", str(out2), "--output_format", "srt"]) == 0
    )
    assert sorted(p.name for p in out2.iterdir()) == ["c0.srt", "c1.srt"]
    assert "wrote 2 file(s)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["{clips}/nothing*.wav"], "no file matches"),
        (["{clips}/c0.wav", "-f", "srt"], "--output_format needs --output_dir"),
        (["{clips}/c0.wav", "-o", "{tmp}/o", "-f", "docx"], "expected txt, json, srt, vtt, tsv or all"),
        (["{clips}/c0.wav", "--out", "{tmp}/x.jsonl"], "--out is for --manifest"),
        (["{tmp}/empty_dir"], "no audio files in"),
    ],
)
def test_translate_input_errors_are_one_line(st, clips, tmp_path, capsys, args, message):
    (tmp_path / "empty_dir").mkdir()
    argv = ["translate", "--model", str(st.checkpoint), *[a.format(clips=clips, tmp=tmp_path) for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
