"""The channel: what happens to a clip's speech between the synthesiser and the file, per clip.

One mechanism: :func:`draw_channel` draws (at planning time, from the clip's own generator) which
augmentations a clip gets and their settings; :func:`apply_channel` applies them in a fixed order. The
original noise and room (``snr_db``, ``rt60`` of a plan, drawn from the clip's main generator) keep their
random streams, so a config without the newer augmentations renders the same bytes as before; each newer
step draws from its own generator seeded by (clip seed, step).

Order: speed perturbation, pitch shift, leading/trailing silence (breaths and clicks in it), room (the
noise-tail room of ``reverb_prob`` or the image-source room of ``rir_prob``), coloured noise, babble, room
tone, telephone band, codec round trip, peak normalisation, level.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "draw_channel",
    "apply_channel",
    "colored_noise",
    "noise_tail_room",
    "image_source_rir",
    "speed_perturb",
    "pitch_shift",
    "telephone",
    "codec_round_trip",
    "PEAK",
]

PEAK = 0.9  # clips are scaled to this peak after everything but the level change
_STEPS = ("speed", "pitch", "silence", "room", "babble", "telephone", "codec", "level")
_SOUND_SPEED = 343.0


def _stream(seed: int, step: str) -> np.random.Generator:
    return np.random.default_rng([seed, 100 + _STEPS.index(step)])


# ---------------------------------------------------------------------------------------------------
# drawing


def draw_channel(
    cfg: Any, rng: np.random.Generator, talker: Callable[[np.random.Generator], dict[str, Any]]
) -> dict[str, Any] | None:
    """Which of the newer augmentations a clip gets and their settings (None: none); ``talker(rng)`` draws
    one babble speaker (backend, voice, text, rate, pitch, speed, seed)."""
    ch: dict[str, Any] = {}
    u = lambda lo_hi: round(float(rng.uniform(*lo_hi)), 4)  # noqa: E731
    if rng.random() < cfg.speed_perturb_prob:
        ch["speed"] = {"factor": u(cfg.speed_perturb_range)}
    if rng.random() < cfg.pitch_shift_prob:
        ch["pitch"] = {"semitones": u(cfg.pitch_shift_range)}
    if rng.random() < cfg.silence_prob:
        ch["silence"] = {
            "lead": u(cfg.silence_range),
            "trail": u(cfg.silence_range),
            "breaths": int(rng.integers(0, 3)),
            "clicks": int(rng.integers(0, 3)),
            "tone_snr_db": u((35.0, 55.0)),
        }
    if rng.random() < cfg.rir_prob:
        dims = [u((3.0, 10.0)), u((2.5, 8.0)), u((2.4, 3.6))]
        source = [u((0.5, d - 0.5)) for d in dims]
        # the microphone 0.3-1.5 m from the talker (a laptop, a phone on the table, a lapel), not anywhere in
        # the room: far-field speech in a live room is beyond what recordings of people usually are
        way = rng.standard_normal(3)
        way *= u((0.3, 1.5)) / (float(np.linalg.norm(way)) + 1e-9)
        mic = [round(float(np.clip(s + w, 0.3, d - 0.3)), 4) for s, w, d in zip(source, way, dims)]
        ch["room"] = {"rt60": u(cfg.rt60_range), "dims": dims, "source": source, "mic": mic}
    if rng.random() < cfg.babble_prob:
        n = int(rng.integers(int(cfg.babble_talkers[0]), int(cfg.babble_talkers[1]) + 1))
        ch["babble"] = {"snr_db": u(cfg.babble_snr_db), "talkers": [talker(rng) for _ in range(n)]}
    if rng.random() < cfg.telephone_prob:
        ch["telephone"] = {"codec": str(rng.choice(["mulaw", "gsm"]))}
    if rng.random() < cfg.codec_prob:
        fmt = str(rng.choice(["mp3", "opus"]))
        ch["codec"] = {"format": fmt, "quality": u((0.6, 0.95) if fmt == "mp3" else (0.7, 0.98))}
    if rng.random() < cfg.level_prob:
        ch["level"] = {"db": u(cfg.level_db_range)}
    return ch or None


# ---------------------------------------------------------------------------------------------------
# the steps


def colored_noise(n: int, slope: float, rng: np.random.Generator) -> np.ndarray:
    """Noise whose power falls as 1/f**slope (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    noise = np.fft.irfft(spec / f ** (slope / 2), n)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def _convolve(wav: np.ndarray, rir: np.ndarray) -> np.ndarray:
    size = len(wav) + len(rir) - 1
    return np.fft.irfft(np.fft.rfft(wav, size) * np.fft.rfft(rir, size), size)[: len(wav)].astype(np.float32)


def noise_tail_room(wav: np.ndarray, sr: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """The original room: a direct path plus noise decaying 60 dB in ``rt60`` s (``reverb_prob``)."""
    n = max(2, int(rt60 * sr))
    tail = rng.standard_normal(n) * np.exp(-6.9078 * np.arange(n) / (sr * rt60))  # ln(1000): -60 dB at rt60
    tail *= math.sqrt(0.3 / float(np.sum(tail[1:] ** 2)))  # reverberant energy 0.3 x direct: about +5 dB DRR
    return _convolve(wav, np.concatenate([[1.0], tail[1:]]))


def image_source_rir(
    sr: int, rt60: float, dims: list[float], source: list[float], mic: list[float], rng: np.random.Generator, order: int = 3
) -> np.ndarray:
    """A shoebox room's impulse response, direct path first with gain 1: image sources up to ``order``
    reflections per axis (one wall absorption from Sabine's formula for ``rt60``), then a diffuse tail of
    noise decaying 60 dB in ``rt60`` whose energy follows the critical distance (the direct-to-reverberant
    ratio falls as the talker stands further from the microphone)."""
    L, s, m = (np.asarray(x, dtype=np.float64) for x in (dims, source, mic))
    volume, surface = float(np.prod(L)), 2.0 * float(L[0] * L[1] + L[0] * L[2] + L[1] * L[2])
    alpha = float(np.clip(0.161 * volume / (surface * rt60), 0.02, 0.98))
    beta = math.sqrt(1.0 - alpha)
    n = np.arange(-order, order + 1)
    pos, refl = [], []
    for axis in range(3):  # image coordinates per axis: 2nL +- s, with |2n| or |2n - 1| reflections
        a = np.concatenate([2 * n * L[axis] + s[axis], 2 * n * L[axis] - s[axis]])
        r = np.concatenate([np.abs(2 * n), np.abs(2 * n - 1)])
        pos.append(a - m[axis])
        refl.append(r)
    dx, dy, dz = np.meshgrid(*pos, indexing="ij")
    rx, ry, rz = np.meshgrid(*refl, indexing="ij")
    dist = np.sqrt(dx**2 + dy**2 + dz**2).ravel()
    gain = (beta ** (rx + ry + rz)).ravel() / np.maximum(dist, 0.1)
    direct = float(dist.min())
    delay = np.round((dist - direct) * sr / _SOUND_SPEED).astype(int)
    n_rir = int(rt60 * sr) + int(delay.max()) + 1
    rir = np.zeros(n_rir, dtype=np.float64)
    np.add.at(rir, delay, gain * max(direct, 0.1))  # direct path: gain 1
    early = float(np.sum(rir**2)) - 1.0
    critical = 0.057 * math.sqrt(volume / rt60)  # metres where direct and reverberant energy are equal
    tail_energy = max((direct / critical) ** 2 - early, 0.1 * (direct / critical) ** 2)
    t0 = int(delay[np.argsort(delay)[min(len(delay) - 1, 6)]])  # the tail starts after the first reflections
    t = np.arange(n_rir - t0)
    tail = rng.standard_normal(len(t)) * np.exp(-6.9078 * t / (sr * rt60)) * np.minimum(1.0, t / (0.005 * sr + 1))
    rir[t0:] += tail * math.sqrt(tail_energy / (float(np.sum(tail**2)) + 1e-12))
    return rir.astype(np.float32)


def speed_perturb(wav: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Faster (factor > 1) or slower speech, tempo and pitch together, as a tape played at another speed:
    the length becomes len / factor."""
    return soxr.resample(wav, sr * factor, sr).astype(np.float32)


def _wsola(x: np.ndarray, stretch: float, sr: int) -> np.ndarray:
    """Time-stretch by ``stretch`` (output length ~ len * stretch), pitch kept: waveform-similarity overlap-add
    with 30 ms Hann windows, each next frame sought within 10 ms where it best continues the last."""
    win, tol = int(0.03 * sr), int(0.01 * sr)
    hop_out = win // 2
    hop_in = hop_out / stretch
    n_out = int(round(len(x) * stretch))
    frames = n_out // hop_out + 1
    xp = np.pad(x.astype(np.float64), (tol, win + 2 * tol + int(hop_in) * 2 + hop_out))
    w = np.hanning(win)
    out = np.zeros(frames * hop_out + win)
    norm = np.zeros_like(out)
    best = tol
    for k in range(frames):
        target = tol + int(round(k * hop_in))
        if k:
            template = xp[best + hop_out : best + hop_out + win]
            region = xp[target - tol : target + tol + win]
            if len(region) >= win + 2 * tol and len(template) == win:
                best = target - tol + int(np.argmax(np.correlate(region, template, mode="valid")))
            else:
                best = target
        else:
            best = target
        out[k * hop_out : k * hop_out + win] += xp[best : best + win] * w
        norm[k * hop_out : k * hop_out + win] += w
    return (out / np.maximum(norm, 1e-3))[:n_out].astype(np.float32)


def pitch_shift(wav: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """Pitch (and formants) moved by ``semitones``, length kept: resampled, then time-stretched back."""
    ratio = 2.0 ** (semitones / 12.0)
    y = speed_perturb(wav, sr, ratio)  # higher and shorter for ratio > 1
    out = _wsola(y, len(wav) / max(len(y), 1), sr)
    return np.pad(out, (0, max(0, len(wav) - len(out))))[: len(wav)]


def _silence(wav: np.ndarray, sr: int, p: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Leading / trailing silence holding breaths (an inhalation: shaped noise, 0.25-0.5 s, ~25 dB under the
    speech) and clicks (mouth or desk clicks: a few ms of decaying high-passed noise)."""
    lead, trail = int(p["lead"] * sr), int(p["trail"] * sr)
    out = np.concatenate([np.zeros(lead, np.float32), wav, np.zeros(trail, np.float32)])
    rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))) or 1e-3
    gaps = [(0, lead), (lead + len(wav), len(out))]
    for _ in range(p["breaths"]):
        n = int(rng.uniform(0.25, 0.5) * sr)
        start, end = gaps[int(rng.integers(2))]
        if end - start < n:
            continue
        at = end - n if start == 0 else start + int(rng.integers(0, end - start - n + 1))  # a breath before speaking
        noise = np.diff(colored_noise(n + 1, 1.0, rng))  # pinkish noise, tilted up: breath is airy
        env = np.sin(np.linspace(0, np.pi, n)) ** 2
        out[at : at + n] += (
            noise / (np.sqrt(np.mean(noise**2)) + 1e-12) * env * rms * 10 ** (rng.uniform(-30, -20) / 20)
        ).astype(np.float32)
    for _ in range(p["clicks"]):
        n = int(rng.uniform(0.002, 0.006) * sr)
        start, end = gaps[int(rng.integers(2))]
        if end - start < n:
            continue
        at = start + int(rng.integers(0, end - start - n + 1))
        click = np.diff(rng.standard_normal(n + 1)) * np.exp(-np.arange(n) / (n / 4))
        out[at : at + n] += (click / (np.abs(click).max() + 1e-12) * rms * 10 ** (rng.uniform(-12, -3) / 20)).astype(np.float32)
    return out


def _tile(wav: np.ndarray, n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """``wav`` repeated with short pauses to cover ``n`` samples, from a random offset."""
    if not len(wav):
        return np.zeros(n, np.float32)
    gap = np.zeros(int(0.3 * sr), np.float32)
    reps = n // (len(wav) + len(gap)) + 2
    long = np.tile(np.concatenate([wav, gap]), reps)
    at = int(rng.integers(0, len(long) - n + 1))
    return long[at : at + n]


def _roundtrip(wav: np.ndarray, sr: int, **fmt: Any) -> np.ndarray:
    buf = io.BytesIO()
    sf.write(buf, wav, sr, **fmt)
    buf.seek(0)
    return sf.read(buf, dtype="float32")[0]


def telephone(wav: np.ndarray, sr: int, codec: str) -> np.ndarray:
    """A telephone channel: 8 kHz, band-pass 300-3400 Hz, a G.711 mu-law or GSM 06.10 round trip, back to ``sr``."""
    from scipy.signal import butter, sosfilt

    x = soxr.resample(wav, sr, 8000).astype(np.float32)
    x = sosfilt(butter(4, [300, 3400], btype="bandpass", fs=8000, output="sos"), x).astype(np.float32)
    scale = float(np.max(np.abs(x))) / PEAK or 1.0
    y = _roundtrip(x / scale, 8000, format="WAV", subtype="ULAW" if codec == "mulaw" else "GSM610")[: len(x)] * scale
    back = soxr.resample(np.pad(y, (0, len(x) - len(y))), 8000, sr).astype(np.float32)
    return np.pad(back, (0, max(0, len(wav) - len(back))))[: len(wav)]


def codec_round_trip(wav: np.ndarray, sr: int, fmt: str, quality: float) -> np.ndarray:
    """An MP3 or Opus round trip through libsndfile (``quality`` is its compression level: 1 is the lowest
    bitrate), aligned to the input (the MP3 decoder's delay is found by cross-correlation)."""
    scale = float(np.max(np.abs(wav))) / PEAK or 1.0
    x = wav / scale
    if fmt == "mp3":
        y = _roundtrip(x, sr, format="MP3", subtype="MPEG_LAYER_III", bitrate_mode="CONSTANT", compression_level=quality)
    elif fmt == "opus":
        y = _roundtrip(x, sr, format="OGG", subtype="OPUS", compression_level=quality)
    else:
        raise ValueError(f"codec format: expected 'mp3' or 'opus', got {fmt!r}")
    extra = len(y) - len(x)
    if extra > 0:
        size = len(y) + len(x)
        corr = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)[: extra + 1]
        y = y[int(np.argmax(corr)) :]
    y = np.pad(y[: len(x)], (0, max(0, len(x) - len(y))))
    return (y * scale).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# applying


def apply_channel(
    wav: np.ndarray,
    sr: int,
    *,
    seed: int,
    rng: np.random.Generator,
    rt60: float | None,
    snr_db: float | None,
    noise_color: float,
    channel: dict[str, Any] | None,
    babble: Callable[[dict[str, Any]], np.ndarray] | None = None,
) -> np.ndarray:
    """The clip's channel, peak-normalised (then its level change). ``rng`` is the clip's main generator
    (the original room and noise draw from it, in that order); ``babble(talker)`` speaks one babble talker
    at ``sr``."""
    ch = channel or {}
    if "speed" in ch:
        wav = speed_perturb(wav, sr, ch["speed"]["factor"])
    if "pitch" in ch:
        wav = pitch_shift(wav, sr, ch["pitch"]["semitones"])
    n_speech = len(wav)  # the SNRs below are against the speech, not the speech and its added silence
    if "silence" in ch:
        wav = _silence(wav, sr, ch["silence"], _stream(seed, "silence"))
    if rt60 is not None and "room" not in ch:
        wav = noise_tail_room(wav, sr, rt60, rng)
    elif rt60 is not None:
        noise_tail_room(np.zeros(1, np.float32), sr, rt60, rng)  # its draws, so the noise after it stays the same
    if "room" in ch:
        r = ch["room"]
        wav = _convolve(wav, image_source_rir(sr, r["rt60"], r["dims"], r["source"], r["mic"], _stream(seed, "room")))
    power = float(np.sum(wav.astype(np.float64) ** 2)) / min(n_speech, len(wav))  # the mean, without silence added
    if snr_db is not None:
        noise = colored_noise(len(wav), noise_color, rng)
        wav = wav + noise * np.float32(math.sqrt(power / 10 ** (snr_db / 10)))
    if "babble" in ch and babble is not None:
        b_rng = _stream(seed, "babble")
        mix = np.zeros(len(wav), np.float64)
        for t in ch["babble"]["talkers"]:
            voice = _tile(babble(t), len(wav), b_rng, sr).astype(np.float64)
            mix += voice / (np.sqrt(np.mean(voice**2)) + 1e-12)
        mix /= np.sqrt(np.mean(mix**2)) + 1e-12
        wav = wav + (mix * math.sqrt(power / 10 ** (ch["babble"]["snr_db"] / 10))).astype(np.float32)
    if "silence" in ch:  # room tone under everything: a recording is never digitally silent
        tone = colored_noise(len(wav), 1.5, _stream(seed, "silence"))
        wav = wav + tone * np.float32(math.sqrt(power / 10 ** (ch["silence"]["tone_snr_db"] / 10)))
    if "telephone" in ch:
        wav = telephone(wav, sr, ch["telephone"]["codec"])
    if "codec" in ch:
        wav = codec_round_trip(wav, sr, ch["codec"]["format"], ch["codec"]["quality"])
    peak = float(np.max(np.abs(wav))) or 1.0
    wav = (wav * (PEAK / peak)).astype(np.float32)
    if "level" in ch:
        wav = (wav * np.float32(10 ** (ch["level"]["db"] / 20))).astype(np.float32)
    return wav
