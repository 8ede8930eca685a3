"""split_long_audio on real synthetic speech (espeak-ng) and on stubbed VAD output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from sltalign import segment
from sltalign.segment import split_long_audio

SR = 16000

LONG_TEXT = (
    "the committee met on tuesday morning to discuss the budget for the next year and after a long debate "
    "about roads schools hospitals and the new library they agreed to spend more on public transport while the "
    "mayor argued that taxes should stay the same because many families in the city already struggle to pay "
    "their bills and the local shops have seen fewer customers since the factory closed two years ago so the "
    "plan will be reviewed again in the spring when the new figures arrive from the national office"
)
SHORT_TEXTS = [
    "good morning everyone",
    "the train to lisbon leaves at nine",
    "please close the window",
    "she bought three apples and a loaf of bread",
    "thank you",
]


def _say(text: str, tmp: Path, speed: int) -> np.ndarray:
    """espeak-ng -> 16 kHz float32, trimmed to the first and last clearly audible sample."""
    out = tmp / "say.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(speed), "-w", str(out), text], check=True, capture_output=True)
    wav, sr = sf.read(out, dtype="float32")
    wav = soxr.resample(wav, sr, SR).astype(np.float32)
    loud = np.nonzero(np.abs(wav) > 0.01)[0]
    return wav[loud[0] : loud[-1] + 1]


@pytest.fixture(scope="module")
def long_signal(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """~70 s: short utterances with gaps of 0.4-6 s around one ~32 s utterance without pauses."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng CLI is required for this test (apt-get install espeak-ng)")
    tmp = tmp_path_factory.mktemp("espeak")
    rng = np.random.default_rng(0)
    layout = [
        (1.0, SHORT_TEXTS[0]),
        (0.4, SHORT_TEXTS[1]),
        (4.0, LONG_TEXT),
        (3.0, SHORT_TEXTS[2]),
        (0.5, SHORT_TEXTS[3]),
        (6.0, SHORT_TEXTS[4]),
    ]
    parts: list[np.ndarray] = []
    bursts: list[tuple[int, int]] = []
    pos = 0
    for gap, text in layout:
        silence = np.zeros(int(gap * SR), np.float32)
        speech = _say(text, tmp, speed=150 if text is LONG_TEXT else 170)
        parts += [silence, speech]
        pos += silence.size
        bursts.append((pos, pos + speech.size))
        pos += speech.size
    parts.append(np.zeros(max(0, 70 * SR - pos), np.float32))
    wav = np.concatenate(parts)
    wav = wav + rng.normal(0, 1e-3, wav.size).astype(np.float32)  # a recording's noise floor
    long_burst = bursts[2]
    assert (long_burst[1] - long_burst[0]) / SR > 29.0, "the long utterance must need splitting"
    return wav, bursts


def _check_spans(spans: list[tuple[int, int]], n: int, max_seconds: float) -> None:
    assert spans, "speech was present but no span came back"
    for (s, e), nxt in zip(spans, spans[1:] + [None]):
        assert 0 <= s < e <= n
        assert (e - s) <= max_seconds * SR
        if nxt is not None:
            assert e <= nxt[0], f"spans overlap or are out of order: {(s, e)} then {nxt}"


def test_spans_cover_all_speech(long_signal: tuple[np.ndarray, list[tuple[int, int]]]) -> None:
    wav, bursts = long_signal
    spans = split_long_audio(wav, sample_rate=SR, max_seconds=28.0)
    _check_spans(spans, wav.size, 28.0)
    covered = np.zeros(wav.size, bool)
    for s, e in spans:
        covered[s:e] = True
    for s, e in bursts:
        assert covered[(s + e) // 2], f"burst {(s / SR, e / SR)} s has its centre outside every span"
        # never drop speech: nearly all clearly audible samples of every burst are inside a span
        loud = np.abs(wav[s:e]) > 0.05
        assert covered[s:e][loud].mean() > 0.99, f"burst {(s / SR, e / SR)} s lost audible speech"
    # the 32 s utterance had to be cut, and packing kept the number of pieces small
    assert 3 <= len(spans) <= 7
    # silence far from speech stays out: the 6 s gap before the last word is not all inside spans
    gap_start, gap_end = bursts[4][1], bursts[5][0]
    assert not covered[gap_start + SR : gap_end - SR].all()


def test_long_utterance_cut_in_a_quiet_place(long_signal: tuple[np.ndarray, list[tuple[int, int]]]) -> None:
    wav, bursts = long_signal
    spans = split_long_audio(wav, sample_rate=SR, max_seconds=20.0)
    _check_spans(spans, wav.size, 20.0)
    s_long, e_long = bursts[2]
    cuts = [e for (s, e), (s2, _) in zip(spans, spans[1:]) if s_long < e < e_long and e == s2]
    assert cuts, "the long utterance should be cut into adjacent pieces"
    level = np.sqrt(np.mean(wav[s_long:e_long] ** 2))
    for c in cuts:
        local = np.sqrt(np.mean(wav[c - 160 : c + 160] ** 2))  # 20 ms around the cut
        assert local < 0.5 * level, f"cut at {c / SR:.2f} s is in loud speech ({local:.4f} vs {level:.4f})"


def test_silence_gives_no_spans() -> None:
    rng = np.random.default_rng(1)
    wav = rng.normal(0, 1e-3, 40 * SR).astype(np.float32)
    assert split_long_audio(wav, sample_rate=SR) == []
    assert split_long_audio(np.zeros(0, np.float32)) == []


def test_short_audio_is_one_span_without_vad(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_vad(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("the VAD must not run on short audio")

    monkeypatch.setattr(segment, "detect_speech", no_vad)
    wav = np.zeros(10 * SR, np.float32)
    assert split_long_audio(wav, sample_rate=SR) == [(0, wav.size)]


def test_region_without_pause_is_split_evenly(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    wav = rng.normal(0, 0.1, 70 * SR).astype(np.float32)  # no pause anywhere
    monkeypatch.setattr(segment, "detect_speech", lambda *a, **k: [(SR, 61 * SR)])
    spans = split_long_audio(wav, sample_rate=SR, max_seconds=28.0)
    assert [e - s for s, e in spans] == [20 * SR, 20 * SR, 20 * SR]
    assert spans[0][0] == SR and spans[-1][1] == 61 * SR
    assert all(e == s2 for (_, e), (s2, _) in zip(spans, spans[1:]))


def test_region_split_at_the_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    wav = rng.normal(0, 0.1, 50 * SR).astype(np.float32)
    wav[int(18.0 * SR) : int(18.3 * SR)] *= 0.01  # a 300 ms pause at 18 s
    monkeypatch.setattr(segment, "detect_speech", lambda *a, **k: [(0, 40 * SR)])
    spans = split_long_audio(wav, sample_rate=SR, max_seconds=28.0)
    assert len(spans) == 2
    assert 18.0 * SR <= spans[0][1] <= 18.3 * SR
    assert spans[0][1] == spans[1][0]


def test_short_isolated_speech_is_widened(monkeypatch: pytest.MonkeyPatch) -> None:
    wav = np.zeros(60 * SR, np.float32)
    monkeypatch.setattr(segment, "detect_speech", lambda *a, **k: [(10 * SR, 10 * SR + 3200), (40 * SR, 45 * SR)])
    spans = split_long_audio(wav, sample_rate=SR, min_seconds=0.5)
    assert len(spans) == 2
    s, e = spans[0]
    assert e - s == 8000 and s <= 10 * SR and e >= 10 * SR + 3200
    assert spans[1] == (40 * SR, 45 * SR)


def test_packing_respects_gap_and_length(monkeypatch: pytest.MonkeyPatch) -> None:
    wav = np.zeros(100 * SR, np.float32)
    regions = [(0, 5 * SR), (6 * SR, 12 * SR), (13 * SR, 27 * SR), (28 * SR, 30 * SR), (40 * SR, 42 * SR)]
    monkeypatch.setattr(segment, "detect_speech", lambda *a, **k: regions)
    spans = split_long_audio(wav, sample_rate=SR, max_seconds=28.0, max_gap_seconds=2.0)
    # first three fit in 27 s; the fourth would make 30 s; the fifth is 10 s of silence away
    assert spans == [(0, 27 * SR), (28 * SR, 30 * SR), (40 * SR, 42 * SR)]


@pytest.mark.parametrize(
    ("wav", "kwargs", "message"),
    [
        (np.zeros((2, 100), np.float32), {}, "1-D"),
        (np.zeros(100, np.int16), {}, "dtype"),
        (np.zeros(100, np.float32), {"sample_rate": 44100}, "8000 or 16000"),
        (np.array([0.0, np.nan], np.float32), {}, "NaN"),
        (np.zeros(100, np.float32), {"min_seconds": 30.0}, "min_seconds"),
        (np.zeros(100, np.float32), {"packing": "even"}, "packing"),
        (np.zeros(100, np.float32), {"sentence_pause_seconds": -1.0}, "sentence_pause_seconds"),
    ],
)
def test_bad_input(wav: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_long_audio(wav, **kwargs)


def _sentences_with_pauses(pauses: list[float], seconds: float = 1.5) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Noise bursts of `seconds` separated by silences of `pauses` (s), and the regions a VAD padding each
    burst by 100 ms would return (touching where a pause is under 0.2 s, as Silero's do)."""
    rng = np.random.default_rng(5)
    parts, bursts, pos = [], [], 0
    for k in range(len(pauses) + 1):
        n = int(seconds * SR)
        parts.append(rng.normal(0, 0.1, n).astype(np.float32))
        bursts.append((pos, pos + n))
        pos += n
        if k < len(pauses):
            parts.append(np.zeros(int(pauses[k] * SR), np.float32))
            pos += int(pauses[k] * SR)
    wav = np.concatenate(parts)
    pad = int(0.1 * SR)
    regions = []
    for i, (s, e) in enumerate(bursts):
        lo = max(0, s - pad) if i == 0 else max(s - pad, (bursts[i - 1][1] + s) // 2)
        hi = min(wav.size, e + pad) if i + 1 == len(bursts) else min(e + pad, (e + bursts[i + 1][0]) // 2)
        regions.append((lo, hi))
    return wav, regions


def test_pause_packing_cuts_at_sentence_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    # three "sentences" of two bursts each: 0.1 s pauses inside, 0.4 s between them (11.1 s in all)
    wav, regions = _sentences_with_pauses([0.1, 0.4, 0.1, 0.4, 0.1])
    monkeypatch.setattr(segment, "detect_speech", lambda *a, **k: regions)
    spans = split_long_audio(wav, sample_rate=SR, max_seconds=10.0, packing="pauses", sentence_pause_seconds=0.2)
    assert spans == [(regions[0][0], regions[1][1]), (regions[2][0], regions[3][1]), (regions[4][0], regions[5][1])]
    # greedy packing fills the first span up to the limit, across the first sentence end
    greedy = split_long_audio(wav, sample_rate=SR, max_seconds=10.0)
    assert len(greedy) == 2 and greedy[0] == (regions[0][0], regions[4][1])


def test_pause_packing_cuts_the_longest_pause_when_too_long(monkeypatch: pytest.MonkeyPatch) -> None:
    # no pause reaches the sentence threshold, but 10.6 s do not fit in 6: cut at the longest pause (0.15 s),
    # then the 7.0 s on its right at its own longest (0.1 s)
    wav, regions = _sentences_with_pauses([0.05, 0.15, 0.1, 0.05, 0.05], seconds=1.7)
    monkeypatch.setattr(segment, "detect_speech", lambda *a, **k: regions)
    spans = split_long_audio(wav, sample_rate=SR, max_seconds=6.0, packing="pauses", sentence_pause_seconds=0.5)
    assert spans == [(regions[0][0], regions[1][1]), regions[2], (regions[3][0], regions[5][1])]
    # without a threshold the same rule holds; every speech sample stays in one span
    assert split_long_audio(wav, sample_rate=SR, max_seconds=6.0, packing="pauses") == spans


def test_pause_packing_on_espeak_sentences(tmp_path: Path) -> None:
    """Real eSpeak NG speech through the real VAD: five sentences 0.3 s apart come back one per span."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng CLI is required for this test (apt-get install espeak-ng)")
    texts = [LONG_TEXT.split(" and ")[0], *SHORT_TEXTS[1:4], "the plan will be reviewed again in the spring"]
    parts, starts, pos = [], [], 0
    for i, text in enumerate(texts):
        if i:
            parts.append(np.zeros(int(0.3 * SR), np.float32))
            pos += parts[-1].size
        speech = _say(text, tmp_path, speed=170)
        starts.append(pos)
        parts.append(speech)
        pos += speech.size
    wav = np.concatenate(parts) + np.random.default_rng(0).normal(0, 1e-3, pos).astype(np.float32)
    assert wav.size > 10 * SR
    spans = split_long_audio(wav, sample_rate=SR, max_seconds=10.0, packing="pauses", sentence_pause_seconds=0.2)
    assert len(spans) == len(texts)
    for (s, e), start in zip(spans, starts):
        assert s <= start + int(0.05 * SR) and start - int(0.3 * SR) <= s  # each span opens at its sentence
