"""sltalign.data.corpora on tiny fake corpora: Kaldi / How2 data dirs, MuST-C and CoVoST 2."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sltalign.audio import load_audio
from sltalign.data.corpora import covost_to_manifest, kaldi_to_manifest, mustc_to_manifest

SR = 16000


def _wav(path, seconds, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).uniform(-0.5, 0.5, int(seconds * SR)).astype(np.float32)
    sf.write(path, x, SR, subtype="FLOAT")
    return x


@pytest.fixture
def kaldi_dir(tmp_path):
    audio = tmp_path / "audio"
    rec1 = _wav(audio / "rec1.wav", 3.0, 1)
    _wav(audio / "rec2.wav", 2.0, 2)
    d = tmp_path / "data" / "train"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text(f"rec1 {audio / 'rec1.wav'}\nrec2 {audio / 'rec2.wav'}\n")
    (d / "segments").write_text("rec1_a rec1 0.50 1.25\nrec1_b rec1 1.50 2.90\nrec2_a rec2 0.25 -1\n")
    (d / "text.en").write_text("rec1_a hello there\nrec1_b how are you\nrec2_a fine thanks\n")
    (d / "text.pt").write_text("rec1_a olá\nrec1_b como vai você\nrec2_a bem obrigado\n")
    return d, rec1


def test_kaldi_with_segments(kaldi_dir):
    d, rec1 = kaldi_dir
    utts = kaldi_to_manifest(d)
    assert [u.id for u in utts] == ["rec1_a", "rec1_b", "rec2_a"]
    a, _, c = utts
    assert (a.offset, a.duration, a.transcript, a.translation, a.translation_source) == (0.5, 0.75, "hello there", "olá", "human")
    assert c.offset == 0.25 and c.duration == pytest.approx(1.75)  # end -1: to the end of the recording
    np.testing.assert_array_equal(load_audio(a.audio, offset=a.offset, duration=a.duration), rec1[8000:20000])


def test_kaldi_without_segments_or_target(kaldi_dir):
    d, _ = kaldi_dir
    (d / "segments").unlink()
    (d / "text.en").write_text("rec1 first recording\nrec2 second\n")
    utts = kaldi_to_manifest(d, target_text=None)
    assert [(u.id, u.offset, u.duration, u.translation) for u in utts] == [("rec1", 0.0, 3.0, None), ("rec2", 0.0, 2.0, None)]


def test_how2_layout_text_id_files_and_audio_dir(kaldi_dir):
    d, _ = kaldi_dir
    (d / "wav.scp").unlink()
    (d / "text.en").rename(d / "text.id.en")  # How2's release names
    (d / "text.pt").rename(d / "text.id.pt")
    with pytest.raises(FileNotFoundError, match="audio_dir"):
        kaldi_to_manifest(d)
    utts = kaldi_to_manifest(d, audio_dir=d.parent.parent / "audio")
    assert [u.translation for u in utts] == ["olá", "como vai você", "bem obrigado"]
    assert utts[0].audio.endswith("rec1.wav")


def test_kaldi_errors_are_clear(kaldi_dir):
    d, _ = kaldi_dir
    (d / "text.pt").write_text("rec1_a olá\n")
    with pytest.raises(ValueError, match=r"text\.pt: no target text for 2 of 3 utterances: rec1_b, rec2_a"):
        kaldi_to_manifest(d)
    with pytest.raises(FileNotFoundError, match="text files present"):
        kaldi_to_manifest(d, target_text="text.de")
    (d / "wav.scp").write_text("rec1 sox in.sph -t wav - |\nrec2 x.wav\n")
    with pytest.raises(ValueError, match="piped command"):
        kaldi_to_manifest(d)
    (d / "wav.scp").write_text("rec1 feats.ark:12\n")
    with pytest.raises(ValueError, match="Kaldi archive"):
        kaldi_to_manifest(d)
    (d / "wav.scp").write_text("rec1 /no/such/file.wav\nrec2 /no/such/other.wav\n")
    with pytest.raises(FileNotFoundError, match="2 audio file"):
        kaldi_to_manifest(d)


def _mustc(tmp_path, tgt="pt"):
    split = tmp_path / "en-pt" / "data" / "dev"
    _wav(split / "wav" / "ted_1.wav", 4.0, 1)
    _wav(split / "wav" / "ted_7.wav", 2.0, 2)
    (split / "txt").mkdir()
    (split / "txt" / "dev.yaml").write_text(
        "- {duration: 1.5, offset: 0.25, rel_id: 0, speaker_id: spk.1, wav: ted_1.wav}\n"
        "- {duration: 2.0, offset: 1.9, rel_id: 1, speaker_id: spk.1, wav: ted_1.wav}\n"
        "- {duration: 1.0, offset: 0.5, rel_id: 0, speaker_id: spk.7, wav: ted_7.wav}\n"
    )
    (split / "txt" / "dev.en").write_text("First line.\nSecond line.\nThird.\n")
    (split / "txt" / f"dev.{tgt}").write_text("Primeira linha.\nSegunda linha.\nTerceira.\n")
    return split


def test_mustc(tmp_path):
    split = _mustc(tmp_path)
    utts = mustc_to_manifest(split, target_lang="pt")
    assert [u.id for u in utts] == ["ted_1_0", "ted_1_1", "ted_7_0"]
    assert (utts[1].offset, utts[1].duration, utts[1].transcript, utts[1].translation) == (
        1.9,
        2.0,
        "Second line.",
        "Segunda linha.",
    )
    assert utts[2].audio == str(split / "wav" / "ted_7.wav")
    assert mustc_to_manifest(split, target_lang=None)[0].translation is None


def test_mustc_errors(tmp_path):
    split = _mustc(tmp_path)
    (split / "txt" / "dev.pt").write_text("Primeira linha.\n")
    with pytest.raises(ValueError, match=r"dev\.pt: 1 lines but .*dev\.yaml lists 3 segments"):
        mustc_to_manifest(split)
    with pytest.raises(FileNotFoundError, match=r"dev\.de"):
        mustc_to_manifest(split, target_lang="de")
    with pytest.raises(FileNotFoundError, match="txt/"):
        mustc_to_manifest(tmp_path)


def _clip(path, seconds, seed):
    x = np.random.default_rng(seed).uniform(-0.3, 0.3, int(seconds * SR)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".mp3":
        sf.write(path, x, SR, format="MP3")
    else:
        sf.write(path, x, SR)


def test_covost(tmp_path):
    ext = ".mp3" if "MP3" in sf.available_formats() else ".wav"
    clips = tmp_path / "clips"
    for i, sec in enumerate((1.0, 2.0, 1.5)):
        _clip(clips / f"common_voice_en_{i}{ext}", sec, i)
    tsv = tmp_path / "covost_v2.en_pt.tsv"
    tsv.write_text(
        "path\tsentence\ttranslation\tclient_id\tsplit\n"
        f'common_voice_en_0{ext}\tHe said "hi".\tEle disse "oi".\tc1\ttrain\n'
        f"common_voice_en_1{ext}\tGood night.\tBoa noite.\tc2\tdev\n"
        f"common_voice_en_2{ext}\tSee you.\tAté logo.\tc1\ttrain\n",
        encoding="utf-8",
    )
    utts = covost_to_manifest(tsv, clips_dir=clips, split="train")
    assert [u.id for u in utts] == ["common_voice_en_0", "common_voice_en_2"]
    assert utts[0].transcript == 'He said "hi".' and utts[0].translation == 'Ele disse "oi".'  # unquoted TSV
    assert utts[1].duration == pytest.approx(1.5, abs=0.06)
    assert utts[0].translation_source == "human"
    assert len(covost_to_manifest(tsv, clips_dir=clips)) == 3


def test_covost_errors(tmp_path):
    (tmp_path / "clips").mkdir()
    tsv = tmp_path / "x.tsv"
    tsv.write_text("path\tsentence\nclip.mp3\thello\n")
    with pytest.raises(ValueError, match=r"expected TSV columns \['path', 'sentence', 'translation'\]"):
        covost_to_manifest(tsv, clips_dir=tmp_path / "clips")
    tsv.write_text("path\tsentence\ttranslation\nclip.mp3\thello\tolá\n")
    with pytest.raises(FileNotFoundError, match=r"clip\.mp3"):
        covost_to_manifest(tsv, clips_dir=tmp_path / "clips")
    with pytest.raises(ValueError, match="no 'split' column"):
        covost_to_manifest(tsv, clips_dir=tmp_path / "clips", split="dev")
