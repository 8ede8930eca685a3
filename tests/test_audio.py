"""sltalign.audio: formats, exact spans, resampling, downmixing, in-memory waveforms and error messages."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from sltalign.audio import (
    AudioError,
    AudioFileNotFoundError,
    as_waveform,
    mono_float32,
    duration_of,
    load_audio,
    resample,
    write_audio,
    write_wav,
)


def _sine(seconds: float, sr: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _dominant_hz(wav: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.argmax(spec) * sr / len(wav))


@pytest.mark.parametrize("suffix,lossless", [(".wav", True), (".flac", True), (".ogg", False)])
def test_formats_roundtrip(tmp_path, suffix, lossless):
    x = _sine(1.0, 16000)
    path = tmp_path / f"a{suffix}"
    sf.write(path, x, 16000)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) == len(x)
    if lossless:
        np.testing.assert_allclose(y, x, atol=1e-4)  # 16-bit quantisation
    else:
        assert np.corrcoef(x[2000:-2000], y[2000:-2000])[0, 1] > 0.95
    assert duration_of(path) == pytest.approx(1.0, abs=1e-3)


def test_mp3_through_soundfile(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} has no MP3 support")
    x = _sine(2.0, 22050)
    path = tmp_path / "a.mp3"
    sf.write(path, x, 22050, format="MP3")
    y = load_audio(path, offset=0.5, duration=1.0)
    assert len(y) == 16000
    assert _dominant_hz(y, 16000) == pytest.approx(440, abs=5)
    assert duration_of(path) == pytest.approx(2.0, abs=0.06)


def test_m4a_through_pyav(tmp_path):
    av = pytest.importorskip("av")
    sr = 16000
    x = _sine(3.0, sr, 300.0)
    path = tmp_path / "a.m4a"
    try:
        with av.open(str(path), "w") as c:
            s = c.add_stream("aac", rate=sr)
            s.layout = "mono"
            frame = av.AudioFrame.from_ndarray(x[None, :], format="fltp", layout="mono")
            frame.sample_rate = sr
            for p in list(s.encode(frame)) + list(s.encode(None)):
                c.mux(p)
    except Exception as err:  # an FFmpeg build without the AAC encoder
        pytest.skip(f"cannot encode AAC here: {err}")
    with pytest.raises(Exception):
        sf.info(str(path))  # soundfile cannot: this really exercises the PyAV path
    y = load_audio(path, offset=1.0, duration=0.5)
    assert len(y) == 8000
    assert _dominant_hz(y, sr) == pytest.approx(300, abs=5)
    assert duration_of(path) == pytest.approx(3.0, abs=0.1)


def test_offset_and_duration_are_exact(tmp_path):
    sr = 16000
    x = np.random.default_rng(0).uniform(-0.9, 0.9, 2 * sr).astype(np.float32)
    path = tmp_path / "float.wav"
    sf.write(path, x, sr, subtype="FLOAT")  # float samples: no quantisation, exact comparison
    y = load_audio(path, offset=0.5, duration=0.25)
    assert len(y) == 4000
    np.testing.assert_array_equal(y, x[8000:12000])
    np.testing.assert_array_equal(load_audio(path, offset=1.5), x[24000:])
    # a span running past the end is cut at the end (segment ends are often rounded up)
    assert len(load_audio(path, offset=1.9, duration=0.5)) == 1600


def test_resampling_lengths_and_pitch(tmp_path):
    path = tmp_path / "cd.wav"
    sf.write(path, _sine(1.0, 44100, 1000.0), 44100)
    y = load_audio(path)
    assert len(y) == 16000
    assert _dominant_hz(y, 16000) == pytest.approx(1000, abs=3)
    assert len(load_audio(path, offset=0.1, duration=0.3)) == 4800
    for n in (1, 7, 22051, 66157):
        assert len(resample(np.zeros(n, np.float32), 22050, 16000)) == round(n * 16000 / 22050)
    assert len(load_audio(path, sample_rate=8000)) == 8000


def test_stereo_is_averaged(tmp_path):
    x = _sine(0.5, 16000)
    path = tmp_path / "st.flac"
    sf.write(path, np.stack([x, np.zeros_like(x)], axis=1), 16000)
    np.testing.assert_allclose(load_audio(path), x / 2, atol=1e-4)


def test_headerless_raw_is_sphinx_convention(tmp_path):
    x = (np.arange(1600) * 10).astype("<i2")
    path = tmp_path / "a.raw"
    x.tofile(path)
    y = load_audio(path, offset=0.05, duration=0.025)
    np.testing.assert_allclose(y, x[800:1200] / 32768.0)
    assert duration_of(path) == pytest.approx(0.1)


def test_as_waveform_coerces_arrays_and_tensors():
    x16 = np.array([0, 16384, -32768], dtype=np.int16)
    np.testing.assert_allclose(as_waveform(x16, 16000), [0.0, 0.5, -1.0])
    stereo = torch.stack([torch.ones(800), -torch.ones(800)]).to(torch.float16)  # (C, N)
    w = as_waveform(stereo, 8000)
    assert w.dtype == np.float32 and w.shape == (1600,)
    assert np.abs(w).max() < 1e-3  # +1 and -1 averaged
    assert as_waveform(np.ones((400, 2), np.float32), 16000).shape == (400,)  # (N, C) also understood
    assert as_waveform([0.1, 0.2], 16000).tolist() == pytest.approx([0.1, 0.2])


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((2, 2, 2)), "1-D"),
        (np.array([], dtype=np.float32), "empty"),
        (np.array([0.0, np.nan]), "NaN"),
        (np.array(["a"]), "numeric"),
    ],
)
def test_as_waveform_errors(bad, match):
    with pytest.raises(AudioError, match=match):
        as_waveform(bad, 16000)


def test_missing_file_error(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        load_audio(path)
    with pytest.raises(ValueError, match="nope.wav"):  # the same error is also a ValueError
        load_audio(path)
    with pytest.raises(AudioFileNotFoundError):
        duration_of(path)


def test_corrupt_file_error(tmp_path):
    path = tmp_path / "junk.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(AudioError, match=r"junk\.wav.*expected an audio file"):
        load_audio(path)


def test_offset_beyond_end_and_bad_requests(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, _sine(1.0, 16000), 16000)
    with pytest.raises(AudioError, match=r"a\.wav: offset 1\.0 s is at or beyond the end"):
        load_audio(path, offset=1.0)
    with pytest.raises(AudioError, match="offset must be"):
        load_audio(path, offset=-1)
    with pytest.raises(AudioError, match="duration must be"):
        load_audio(path, duration=0)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav: no samples"):
        load_audio(empty)


def test_write_is_atomic_and_checks_suffix(tmp_path, monkeypatch):
    path = tmp_path / "out.wav"
    write_wav(path, _sine(0.1, 16000), 16000)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_wav(path, np.zeros(10, np.float32), 16000)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old file is untouched ...
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]  # ... and no temporary is left
    with pytest.raises(AudioError, match="suffix"):
        write_audio(tmp_path / "x.xyz", np.zeros(10), 16000)
    # clipping instead of integer wrap-around
    write_audio(tmp_path / "loud.flac", np.array([2.0, -2.0, 0.5], np.float32), 16000)
    np.testing.assert_allclose(sf.read(tmp_path / "loud.flac")[0], [1.0, -1.0, 0.5], atol=1e-4)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((2, 100), np.float32), "1-D"),
        (np.zeros(100, np.int16), "float samples"),
        (np.array([0.0, np.inf], np.float32), "NaN or infinite"),
    ],
)
def test_mono_float32_names_the_input_and_what_was_expected(x: np.ndarray, message: str) -> None:
    with pytest.raises(AudioError, match=rf"clip 3: .*{message}"):
        mono_float32(x, "clip 3")


def test_mono_float32_accepts_tensors_and_empty() -> None:
    import torch

    out = mono_float32(torch.tensor([0.5, -0.25], dtype=torch.float64))
    assert out.dtype == np.float32 and out.tolist() == [0.5, -0.25]
    assert mono_float32(np.zeros(0, np.float32)).shape == (0,)


# --- suspicious input: flagged, with a defined result (cases 1-3 of the fault campaign) ------------------


def test_truncated_wav_data_chunk_is_flagged(tmp_path):
    """Case 1: a WAV cut to a third with its header intact was read (and translated) in part without a word."""
    from sltalign.audio import AudioWarning

    write_wav(tmp_path / "whole.wav", _sine(3.0, 16000), 16000)
    data = (tmp_path / "whole.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 3])
    with pytest.warns(AudioWarning, match=r"cut.wav: the WAV header declares 3.00 s of audio but the file holds 1.00 s"):
        wav = load_audio(tmp_path / "cut.wav")
    assert 0.9 * 16000 < len(wav) < 1.01 * 16000  # what is there is read
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a whole file is not flagged
        load_audio(tmp_path / "whole.wav")


def test_float_samples_beyond_full_scale_are_clipped_with_a_warning(tmp_path):
    """Case 2: a float WAV peaking at 3.0 was passed on unclipped although the loader documents [-1, 1]."""
    from sltalign.audio import AudioWarning

    loud = 3.0 * _sine(1.0, 16000) / 0.5
    sf.write(tmp_path / "loud.wav", loud, 16000, subtype="FLOAT")
    with pytest.warns(AudioWarning, match=r"loud.wav: float samples reach 3, beyond \[-1, 1\]"):
        wav = load_audio(tmp_path / "loud.wav")
    assert wav.max() == 1.0 and wav.min() == -1.0
    with pytest.warns(AudioWarning, match="waveform: float samples reach 3.2e\\+04.*divide by 32768"):
        arr = as_waveform(np.full(1600, 32000.0, dtype=np.float32), 16000)
    assert arr.max() <= 1.0
    # resampled full-scale audio stays in range (soxr overshoots slightly), without a warning
    sq = np.sign(_sine(1.0, 44100) + 1e-9).astype(np.float32)
    sf.write(tmp_path / "square.wav", sq, 44100, subtype="FLOAT")
    out = load_audio(tmp_path / "square.wav")
    assert out.max() <= 1.0 and out.min() >= -1.0


def test_zero_byte_file_is_an_empty_clip(tmp_path):
    """Case 3: a 0-byte file raised a decoder's message; now duration 0 and a clear error naming it."""
    (tmp_path / "empty.wav").write_bytes(b"")
    assert duration_of(tmp_path / "empty.wav") == 0.0
    with pytest.raises(AudioError, match=r"empty.wav: the file is empty \(0 bytes\)"):
        load_audio(tmp_path / "empty.wav")


# --- property: any bytes are audio, an AudioError, or nothing else ------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _riff(payload: bytes, declared: int) -> bytes:
    import struct

    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, 16000, 32000, 2, 16)
    return b"RIFF" + struct.pack("<I", 36 + len(payload)) + b"WAVE" + fmt + b"data" + struct.pack("<I", declared) + payload


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=600),
        st.builds(_riff, st.binary(max_size=400), st.integers(0, 2**32 - 1)),
    ),
    suffix=st.sampled_from([".wav", ".flac", ".mp3", ".raw", ".bin"]),
    offset=st.floats(0, 1, allow_nan=False),
)
def test_any_bytes_load_or_raise_audio_error(tmp_path, data, suffix, offset):
    import warnings

    p = tmp_path / f"x{suffix}"
    p.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            wav = load_audio(p, offset=offset)
        except AudioError:
            return
    assert wav.dtype == np.float32 and wav.ndim == 1 and len(wav) > 0
    assert np.all(np.isfinite(wav)) and np.abs(wav).max() <= 1.0
