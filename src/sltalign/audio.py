"""Audio in and out: any common format -> 16 kHz mono float32, with offsets into long files.

Nothing here knows about models. Every loader returns a 1-D ``np.ndarray`` of float32 samples in [-1, 1]
at the requested rate (16 kHz by default, what Whisper-style encoders take).

Decoders, tried in order:

* soundfile (libsndfile): WAV, FLAC, OGG/Vorbis/Opus, AIFF, ... and MP3 (libsndfile >= 1.1). It seeks, so
  ``load_audio(path, offset=3600, duration=5)`` reads 5 s, not an hour.
* PyAV (installed with faster-whisper): everything FFmpeg decodes (m4a/AAC, webm, mp4 audio, ...); it seeks
  to the nearest packet before ``offset`` and decodes from there.
* ``.raw`` / ``.pcm`` files have no header: they are read as the CMU Sphinx convention, signed 16-bit
  little-endian mono at 16 kHz (what pocketsphinx's test data uses).

Resampling is soxr (high quality); channels are averaged. Errors on bad input are ``AudioError``
(a ``ValueError``) naming the file and what was expected; a missing file raises ``AudioFileNotFoundError``,
which is both a ``ValueError`` and a ``FileNotFoundError``; an empty (0-byte) file is an ``AudioError`` too.

Suspicious input that still has a defined reading is read with an ``AudioWarning`` (a ``UserWarning``) naming
the file: a WAV whose data chunk declares more audio than the file holds (a cut-off copy or download: what is
there is read), and float samples beyond [-1, 1] (clipped to [-1, 1], the range every loader returns).
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "SAMPLE_RATE",
    "AudioError",
    "AudioFileNotFoundError",
    "AudioWarning",
    "load_audio",
    "as_waveform",
    "resample",
    "write_audio",
    "write_wav",
    "duration_of",
]

SAMPLE_RATE = 16000
#: headerless files are read with the CMU Sphinx convention (16 kHz, 16-bit signed little-endian, mono)
RAW_SUFFIXES = (".raw", ".pcm")
RAW_SAMPLE_RATE = 16000

# what write_audio writes for each suffix: (libsndfile format, default subtype)
_WRITE_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}


class AudioError(ValueError):
    """A file that cannot be read as audio, or a request (offset, duration) it cannot satisfy."""


class AudioFileNotFoundError(AudioError, FileNotFoundError):
    """The audio file does not exist (catchable as ValueError or FileNotFoundError)."""


class AudioWarning(UserWarning):
    """Audio read with a defined result that may not be what its owner meant (truncated, clipped)."""


# ---------------------------------------------------------------------------------------------------
# public API


def load_audio(
    path: str | os.PathLike,
    *,
    offset: float = 0.0,
    duration: float | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Read ``duration`` seconds from ``offset`` of an audio file as mono float32 at ``sample_rate``.

    Only the requested span is decoded. ``duration=None`` reads to the end. A span that runs past the end
    of the file is cut at the end (manifests often round segment ends up); an ``offset`` at or past the end,
    or a span that holds no samples, is an error. When the file is long enough the result has exactly
    ``round(duration * sample_rate)`` samples.

    Returns: (N,) float32.
    """
    p = Path(path).expanduser()
    _check_request(p, offset, duration, sample_rate)
    if not p.exists():
        raise AudioFileNotFoundError(f"audio file not found: {p}")
    if not p.is_file():
        raise AudioError(f"audio path is not a file: {p}")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: the file is empty (0 bytes); expected an audio file")
    _warn_if_wav_truncated(p)
    if p.suffix.lower() in RAW_SUFFIXES:
        try:
            wav, sr = _read_soundfile(p, offset, duration, raw=True)
        except _Unsupported as err:
            raise AudioError(f"cannot read {p} as headerless 16 kHz 16-bit mono: {err}") from None
    else:
        try:
            wav, sr = _read_soundfile(p, offset, duration)
        except _Unsupported as sf_err:
            try:
                wav, sr = _read_av(p, offset, duration)
            except _Unsupported as av_err:
                raise AudioError(
                    f"cannot decode {p}: expected an audio file (wav, flac, ogg, mp3, m4a, ...); "
                    f"soundfile said: {sf_err}; PyAV said: {av_err}"
                ) from None
    if wav.size == 0:
        raise AudioError(f"{p}: no samples in the requested span (offset {offset} s, duration {duration} s)")
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{p}: contains NaN or infinite samples; expected finite float samples in [-1, 1]")
    wav = _clip_with_warning(wav, str(p))
    n_out = _output_length(len(wav), sr, sample_rate, duration)
    return _clip(_fit(resample(wav, sr, sample_rate), n_out))


def as_waveform(x: Any, sample_rate: int, *, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Coerce a waveform given in memory (numpy array, torch tensor, list) to mono float32 at ``target_rate``.

    ``sample_rate`` is the rate ``x`` is sampled at. Integer samples are scaled to [-1, 1] (int16 / 32768, ...).
    A 2-D input is (channels, samples) when its first dimension is the smaller one, else (samples, channels);
    channels are averaged. A path (str / PathLike) is read with ``load_audio``.

    Returns: (N,) float32.
    """
    if isinstance(x, (str, os.PathLike)):
        return load_audio(x, sample_rate=target_rate)
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        t = x.detach().cpu()
        x = t.float().numpy() if t.is_floating_point() else t.numpy()  # float() also covers bf16 / fp16
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.number)) or np.iscomplexobj(arr):
        raise AudioError(f"waveform: expected real numeric samples, got dtype {arr.dtype}")
    arr = _to_float(arr)
    if arr.ndim == 2:
        # (C, N) or (N, C): the shorter side holds the channels
        arr = arr.mean(axis=0) if arr.shape[0] <= arr.shape[1] else arr.mean(axis=1)
    elif arr.ndim != 1:
        raise AudioError(f"waveform: expected a 1-D (samples) or 2-D (channels x samples) array, got shape {arr.shape}")
    if arr.size == 0:
        raise AudioError("waveform: empty (0 samples)")
    if not np.all(np.isfinite(arr)):
        raise AudioError("waveform: contains NaN or infinite samples")
    if sample_rate <= 0 or target_rate <= 0:
        raise AudioError(f"waveform: sample rates must be positive, got {sample_rate} -> {target_rate}")
    arr = _clip_with_warning(np.ascontiguousarray(arr, dtype=np.float32), "waveform")
    return _clip(resample(arr, sample_rate, target_rate))


def mono_float32(x: Any, name: str = "wav") -> np.ndarray:
    """A waveform that must already be model-ready: 1-D, float samples in [-1, 1], finite; -> (N,) float32.

    Stricter than ``as_waveform``: nothing is mixed down, rescaled or resampled, because the callers (the
    VAD, the cascade) are handed arrays documented as 16 kHz mono float and a 2-D or integer array there is
    a caller's mistake worth naming, not something to guess about. ``name`` is how errors refer to ``x``.
    Empty input is allowed (callers decide what nothing means).
    """
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    w = np.asarray(x)
    if w.ndim != 1:
        raise AudioError(f"{name}: expected a 1-D mono waveform (N,), got shape {w.shape}; mix down channels first")
    if not np.issubdtype(w.dtype, np.floating):
        raise AudioError(f"{name}: expected float samples in [-1, 1], got dtype {w.dtype}; convert integer PCM first")
    if w.size and not np.isfinite(w).all():
        raise AudioError(f"{name}: contains NaN or infinite samples")
    return np.ascontiguousarray(w, dtype=np.float32)


def resample(wav: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample a 1-D float waveform with soxr (HQ); the result has ``round(N * target / orig)`` samples."""
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if orig_rate == target_rate:
        return wav
    out = soxr.resample(wav, orig_rate, target_rate, quality="HQ")
    return _fit(np.asarray(out, dtype=np.float32), int(round(len(wav) * target_rate / orig_rate)))


def write_audio(path: str | os.PathLike, wav: Any, sample_rate: int, *, subtype: str | None = None) -> Path:
    """Write a mono (N,) or multi-channel (N, C) waveform; the format follows the suffix (.wav .flac .ogg .mp3).

    Float samples are clipped to [-1, 1] first (libsndfile would otherwise wrap around when converting to
    integers). The file is written under a temporary name and renamed, so readers never see half a file.
    """
    p = Path(path).expanduser()
    fmt = _WRITE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise AudioError(f"write_audio: cannot write {p}: expected a suffix among {', '.join(_WRITE_FORMATS)}")
    arr = np.asarray(wav)
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.clip(arr, -1.0, 1.0).astype(np.float32)
    if arr.ndim not in (1, 2) or arr.size == 0:
        raise AudioError(f"write_audio: expected a non-empty (N,) or (N, C) waveform for {p}, got shape {arr.shape}")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        sf.write(tmp, arr, int(sample_rate), format=fmt[0], subtype=subtype or fmt[1])
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_wav(path: str | os.PathLike, wav: Any, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write 16-bit PCM audio (the format follows the suffix; ``.wav`` is the usual one). See ``write_audio``."""
    return write_audio(path, wav, sample_rate)


def duration_of(path: str | os.PathLike) -> float:
    """Length of an audio file in seconds, from its header where it has one (no full decode)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise AudioFileNotFoundError(f"audio file not found: {p}")
    if p.suffix.lower() in RAW_SUFFIXES or (p.is_file() and p.stat().st_size == 0):  # 0 bytes: an empty clip
        return p.stat().st_size / (2 * RAW_SAMPLE_RATE)
    try:
        info = sf.info(str(p))
        if info.samplerate > 0 and info.frames >= 0:  # a valid header with 0 frames is an empty clip: 0 s
            return info.frames / info.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass
    try:
        return _av_duration(p)
    except _Unsupported as err:
        raise AudioError(f"cannot read the duration of {p}: expected an audio file; {err}") from None


# ---------------------------------------------------------------------------------------------------
# helpers


class _Unsupported(Exception):
    """This decoder cannot open the file (another one may)."""


def _clip(wav: np.ndarray) -> np.ndarray:
    """Keep [-1, 1] after resampling (a filter may overshoot a full-scale signal slightly), silently."""
    if wav.size and (wav.max() > 1.0 or wav.min() < -1.0):
        return np.clip(wav, -1.0, 1.0)
    return wav


def _clip_with_warning(wav: np.ndarray, name: str) -> np.ndarray:
    """Float samples beyond [-1, 1] (a float WAV written without normalising, or PCM values passed as floats):
    clipped to [-1, 1], with a warning giving the peak, since the models expect that range."""
    if not wav.size:
        return wav
    peak = float(np.max(np.abs(wav)))
    if peak > 1.0:
        over = float(np.mean(np.abs(wav) > 1.0))
        warnings.warn(
            f"{name}: float samples reach {peak:.4g}, beyond [-1, 1] ({over:.1%} of them); clipped to [-1, 1]"
            + (" (integer PCM values given as floats? divide by 32768)" if peak > 256 else ""),
            AudioWarning,
            stacklevel=3,
        )
        return np.clip(wav, -1.0, 1.0)
    return wav


def _warn_if_wav_truncated(p: Path) -> None:
    """Warn when a RIFF/WAVE file's data chunk declares more bytes than the file holds after it.

    libsndfile reads what is there without a word, so a copy or download cut short would be translated in
    part, silently. Sizes 0 and 0xFFFFFFFF are what streaming writers leave when the length is not known
    yet; those are not flagged."""
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return
            pos, block_align, rate = 12, 0, 0
            while pos + 8 <= size:
                f.seek(pos)
                chunk = f.read(8)
                if len(chunk) < 8:
                    return
                cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(min(csize, 16))
                    if len(fmt) >= 14:
                        _, _, rate, _, block_align = struct.unpack("<HHIIH", fmt[:14])
                elif cid == b"data":
                    have = size - (pos + 8)
                    if csize in (0, 0xFFFFFFFF) or csize <= have:
                        return
                    if block_align and rate:
                        declared, held = csize / block_align / rate, have / block_align / rate
                        amount = f"{declared:.2f} s of audio but the file holds {held:.2f} s"
                    else:
                        amount = f"{csize} bytes of audio but the file holds {have}"
                    warnings.warn(
                        f"{p}: the WAV header declares {amount} (truncated copy or download?); reading what is there",
                        AudioWarning,
                        stacklevel=3,
                    )
                    return
                pos += 8 + csize + (csize & 1)  # chunks are padded to an even size
    except OSError:
        return  # the decoders report unreadable files themselves


def _check_request(p: Path, offset: float, duration: float | None, sample_rate: int) -> None:
    if not isinstance(offset, (int, float)) or not math.isfinite(offset) or offset < 0:
        raise AudioError(f"{p}: offset must be a finite number of seconds >= 0, got {offset!r}")
    if duration is not None and (not isinstance(duration, (int, float)) or not math.isfinite(duration) or duration <= 0):
        raise AudioError(f"{p}: duration must be a positive number of seconds or None, got {duration!r}")
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise AudioError(f"{p}: sample_rate must be a positive integer, got {sample_rate!r}")


def _output_length(n_read: int, sr_in: int, sr_out: int, duration: float | None) -> int:
    """Samples to return: exactly round(duration * sr_out) when the whole span was there, else what was read."""
    if duration is not None and n_read >= int(round(duration * sr_in)):
        return int(round(duration * sr_out))
    return int(round(n_read * sr_out / sr_in))


def _fit(wav: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad the tail so that len == n (resamplers can be off by a sample at the edges)."""
    if len(wav) == n:
        return wav
    if len(wav) > n:
        return wav[:n]
    return np.concatenate([wav, np.zeros(n - len(wav), dtype=wav.dtype)])


def _to_float(arr: np.ndarray) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32, copy=False)
    if arr.dtype == np.uint8:  # 8-bit audio is unsigned with 128 as silence
        return (arr.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(arr.dtype, np.signedinteger):
        return arr.astype(np.float32) / float(2 ** (8 * arr.dtype.itemsize - 1))
    return arr.astype(np.float32)


def _mono(data: np.ndarray) -> np.ndarray:
    # data: (N, C) -> (N,)
    return data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]


def _read_soundfile(p: Path, offset: float, duration: float | None, *, raw: bool = False) -> tuple[np.ndarray, int]:
    kwargs: dict[str, Any] = {}
    if raw:
        kwargs = dict(samplerate=RAW_SAMPLE_RATE, channels=1, subtype="PCM_16", format="RAW", endian="LITTLE")
    try:
        f = sf.SoundFile(str(p), **kwargs)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise _Unsupported(str(err)) from None
    with f:
        sr = f.samplerate
        start = int(round(offset * sr))
        if f.frames > 0 and start >= f.frames:
            raise AudioError(f"{p}: offset {offset} s is at or beyond the end of the file ({f.frames / sr:.3f} s)")
        n = -1 if duration is None else int(round(duration * sr))
        try:
            if start:
                f.seek(start)
            data = f.read(frames=n, dtype="float32", always_2d=True)  # (N, C)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(f"{p}: the file is damaged or truncated (reading {offset} s + {duration} s): {err}") from None
    return _mono(data), sr


def _audio_stream(container: Any, p: Path) -> Any:
    streams = list(container.streams.audio)
    if not streams:
        raise _Unsupported(f"{p} has no audio stream")
    return streams[0]


def _read_av(p: Path, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    try:
        import av
    except ImportError:
        raise _Unsupported("PyAV is not installed (pip install av, or faster-whisper which brings it)") from None
    try:
        container = av.open(str(p))
    except Exception as err:  # PyAV raises many FFmpeg error classes
        raise _Unsupported(str(err)) from None
    with container:
        stream = _audio_stream(container, p)
        sr = int(stream.codec_context.sample_rate or stream.rate or 0)
        if sr <= 0:
            raise _Unsupported(f"{p}: audio stream has no sample rate")
        # planar float keeps the channels apart so that we average them ourselves, as for soundfile
        resampler = av.AudioResampler(format="fltp", layout=None, rate=sr)
        if offset > 0 and stream.time_base:
            # seeks to the last packet at or before offset; samples before offset are cut below
            container.seek(int(offset / stream.time_base), stream=stream, backward=True, any_frame=False)
        end = None if duration is None else offset + duration
        pieces: list[np.ndarray] = []
        first_time: float | None = None
        decoded = 0
        try:
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else decoded / sr
                if first_time is None:
                    first_time = t
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().mean(axis=0))  # (C, n) -> (n,)
                decoded += frame.samples
                if end is not None and t + frame.samples / sr >= end:
                    break
        except Exception as err:
            if not pieces:
                raise _Unsupported(str(err)) from None
            raise AudioError(f"{p}: the file is damaged or truncated: {err}") from None
    if not pieces:
        raise AudioError(f"{p}: offset {offset} s is at or beyond the end of the file (nothing decoded)")
    wav = np.concatenate(pieces).astype(np.float32)
    start = max(0, int(round((offset - (first_time or 0.0)) * sr)))
    if start >= len(wav):
        raise AudioError(
            f"{p}: offset {offset} s is at or beyond the end of the file ({((first_time or 0.0) + len(wav) / sr):.3f} s)"
        )
    wav = wav[start:]
    if duration is not None:
        wav = wav[: int(round(duration * sr))]
    return wav, sr


def _av_duration(p: Path) -> float:
    try:
        import av
    except ImportError:
        raise _Unsupported("PyAV is not installed") from None
    try:
        container = av.open(str(p))
    except Exception as err:
        raise _Unsupported(str(err)) from None
    with container:
        stream = _audio_stream(container, p)
        if stream.duration is not None and stream.time_base:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / 1_000_000  # AV_TIME_BASE
        sr = int(stream.codec_context.sample_rate or 0)
        n = sum(frame.samples for frame in container.decode(stream))
        if sr <= 0 or n == 0:
            raise _Unsupported(f"{p}: no decodable audio")
        return n / sr
