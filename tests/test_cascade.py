"""Cascade: model-directory assembly, real Whisper ASR on real speech (LibriVox), MT plumbing."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sltalign.cascade import Cascade, assemble_split_model, whisper_ct2_dir

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


# --- directory assembly (no model needed) --------------------------------------------------------


def _parts(tmp: Path, first: bytes, second: bytes) -> list[Path]:
    d1, d2 = tmp / "pkg1" / "data", tmp / "pkg2" / "data"
    d1.mkdir(parents=True, exist_ok=True)
    d2.mkdir(parents=True, exist_ok=True)
    (d1 / "model.bin.part1").write_bytes(first)
    (d1 / "__init__.py").write_text("")
    (d2 / "model.bin.part2").write_bytes(second)
    (d2 / "config.json").write_text('{"a": 1}')
    (d2 / "tokenizer.json").write_text("{}")
    return [d1, d2]


def test_assemble_split_model(tmp_path: Path) -> None:
    dirs = _parts(tmp_path, b"abc", b"defg")
    cache = tmp_path / "cache"
    out = assemble_split_model(dirs, name="w", cache_root=cache)
    assert out == cache / "w-3-4"
    assert (out / "model.bin").read_bytes() == b"abcdefg"
    assert (out / "config.json").read_text() == '{"a": 1}'
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.bin", "tokenizer.json"]
    assert [p.name for p in cache.iterdir()] == ["w-3-4"]  # no temporary directory left behind
    # a second call reuses the directory without rewriting it
    mtime = (out / "model.bin").stat().st_mtime_ns
    assert assemble_split_model(dirs, name="w", cache_root=cache) == out
    assert (out / "model.bin").stat().st_mtime_ns == mtime
    # a truncated model.bin (e.g. copied by hand) is rebuilt
    (out / "model.bin").write_bytes(b"abc")
    assert (assemble_split_model(dirs, name="w", cache_root=cache) / "model.bin").read_bytes() == b"abcdefg"
    # different parts (other sizes) get their own directory
    dirs2 = _parts(tmp_path / "v2", b"abcd", b"efg")
    assert assemble_split_model(dirs2, name="w", cache_root=cache) == cache / "w-4-3"


def test_assemble_split_model_uses_env_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLTALIGN_CACHE", str(tmp_path / "envcache"))
    out = assemble_split_model(_parts(tmp_path, b"x", b"yz"), name="m")
    assert out == tmp_path / "envcache" / "m-1-2"


def test_assemble_split_model_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        assemble_split_model([tmp_path / "missing"], name="w", cache_root=tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.bin.part2").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"numbered 1..1"):
        assemble_split_model([tmp_path / "a"], name="w", cache_root=tmp_path)
    (tmp_path / "b").mkdir()
    with pytest.raises(FileNotFoundError, match="no model.bin.part"):
        assemble_split_model([tmp_path / "b"], name="w", cache_root=tmp_path)


def test_whisper_ct2_dir_names(tmp_path: Path) -> None:
    (tmp_path / "ct2").mkdir()
    (tmp_path / "ct2" / "model.bin").write_bytes(b"x")
    assert whisper_ct2_dir(str(tmp_path / "ct2")) == str(tmp_path / "ct2")
    with pytest.raises(FileNotFoundError, match="no model.bin"):
        whisper_ct2_dir(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not found"):
        whisper_ct2_dir(str(tmp_path / "nope"))
    assert whisper_ct2_dir("hf:Systran/faster-whisper-small") == "Systran/faster-whisper-small"


# --- real models ---------------------------------------------------------------------------------


def _normalise(text: str) -> list[str]:
    text = text.lower().replace("-", " ")
    return re.sub(r"[^a-z0-9' ]", " ", text).split()


def _word_errors(hyp: list[str], ref: list[str]) -> int:
    """Levenshtein distance over words (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def _librivox() -> tuple[list[np.ndarray], list[str]]:
    lines = (LIBRIVOX / "transcription").read_text().splitlines()
    refs = {}
    for line in lines:
        m = re.match(r"<s>(.*)</s>\s*\((\S+)\)", line.strip())
        assert m, f"unexpected transcription line {line!r}"
        refs[m.group(2)] = m.group(1).strip()
    wavs, texts = [], []
    for uid in sorted(refs):
        wav, sr = sf.read(LIBRIVOX / f"{uid}.wav", dtype="float32")
        assert sr == 16000
        wavs.append(wav)
        texts.append(refs[uid])
    assert len(wavs) == 5
    return wavs, texts


class FakeMT:
    """Stands in for a Translator: records its calls and 'translates' by tagging the text."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], int, int]] = []

    def translate_text(self, texts, *, beam=4, max_len=150):  # noqa: ANN001, ANN201
        self.calls.append((list(texts), beam, max_len))
        return [f"PT[{t}]" for t in texts]


@pytest.fixture(scope="module")
def tiny_cascade() -> Cascade:
    if not LIBRIVOX.is_dir():
        pytest.fail(f"{LIBRIVOX} is missing: apt-get install pocketsphinx-testdata")
    return Cascade("packaged:whisper-tiny.en", FakeMT(), beam=3, max_len=99)


@pytest.mark.packaged
def test_tiny_en_word_error_rate(tiny_cascade: Cascade) -> None:
    wavs, refs = _librivox()
    tiny_cascade.reset_timings()
    hyps = tiny_cascade.transcribe(wavs)
    errors = sum(_word_errors(_normalise(h), _normalise(r)) for h, r in zip(hyps, refs))
    words = sum(len(_normalise(r)) for r in refs)
    wer = errors / words
    print(f"whisper tiny.en WER on LibriVox: {wer:.3f} ({errors}/{words}); {tiny_cascade.timings}")
    assert wer < 0.25, f"WER {wer:.3f}: {hyps}"
    t = tiny_cascade.timings
    assert t["asr_seconds"] > 0 and t["mt_seconds"] == 0
    assert t["audio_seconds"] == pytest.approx(sum(len(w) for w in wavs) / 16000)


@pytest.mark.packaged
def test_translate_one_line_per_clip(tiny_cascade: Cascade) -> None:
    wavs, _ = _librivox()
    mt: FakeMT = tiny_cascade.mt  # type: ignore[assignment]
    mt.calls.clear()
    clips = [wavs[1], np.zeros(0, np.float32), wavs[4]]
    out = tiny_cascade.translate(clips)
    assert len(out) == 3
    assert out[1] == ""  # nothing to say: the MT is not asked to translate ""
    assert out[0].startswith("PT[") and "young man" in out[0].lower()
    assert out[2].startswith("PT[") and "amiable" in out[2].lower()
    assert len(mt.calls) == 1 and mt.calls[0][1:] == (3, 99)  # one batched call with the cascade's settings
    assert tiny_cascade.timings["mt_seconds"] > 0


@pytest.mark.packaged
def test_evaluation_runs_the_api_cascade(tiny_cascade: Cascade, tmp_path: Path) -> None:
    """``sltalign evaluate --cascade`` and the demo (systems.run_cascade) translate exactly as
    ``Cascade.translate``: an empty clip stays empty (the MT given "" would invent a sentence); the
    transcripts it returns are what was translated."""
    import soundfile as sf

    from sltalign.data.manifest import Utterance
    from sltalign.systems import run_cascade

    wavs, _ = _librivox()
    clips = [wavs[1], np.zeros(1600, np.float32), wavs[4]]
    utts = []
    for i, w in enumerate(clips):
        sf.write(tmp_path / f"{i}.wav", w, 16000)
        utts.append(Utterance(id=str(i), audio=str(tmp_path / f"{i}.wav"), duration=len(w) / 16000))
    want = tiny_cascade.translate(clips)
    hyps, timings, transcripts = run_cascade(tiny_cascade, utts, progress=False)
    assert hyps == want and hyps[1] == "" and transcripts[1] == ""
    assert [f"PT[{t}]" for t in transcripts if t] == [h for h in hyps if h]
    assert timings["asr_seconds"] > 0 and timings["mt_seconds"] > 0


@pytest.mark.packaged
def test_long_clip_is_split_and_fully_transcribed(tiny_cascade: Cascade) -> None:
    wavs, refs = _librivox()
    gap = np.zeros(2 * 16000, np.float32)
    long = np.concatenate([x for w in wavs for x in (w, gap)])  # ~35 s: longer than Whisper's window
    assert len(long) / 16000 > 30
    mt: FakeMT = tiny_cascade.mt  # type: ignore[assignment]
    mt.calls.clear()
    out = tiny_cascade.translate([long])
    pieces = mt.calls[0][0]  # each piece is translated on its own
    assert len(pieces) == 2  # cut at a pause, and the short gaps packed (Whisper pads every piece to 30 s)
    assert out == [" ".join(f"PT[{p}]" for p in pieces)]
    hyp, ref = _normalise(" ".join(pieces)), _normalise(" ".join(refs))
    assert _word_errors(hyp, ref) / len(ref) < 0.25, pieces  # nothing lost at the cut


@pytest.mark.packaged
def test_whisper_base_assembled_from_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLTALIGN_CACHE", str(tmp_path))
    wavs, refs = _librivox()
    cascade = Cascade("packaged:whisper-base", FakeMT())
    assert Path(cascade.asr_path).parent == tmp_path
    assert (Path(cascade.asr_path) / "model.bin").stat().st_size > 100_000_000
    hyp = cascade.transcribe([wavs[0]])[0]
    ref = _normalise(refs[0])
    assert _word_errors(_normalise(hyp), ref) / len(ref) < 0.25, hyp
