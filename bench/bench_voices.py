"""Synthesis speed of each TTS backend and of the channel's steps, in one process, side by side.

    KOKORO_JA_CACHE=/tmp/kokoro taskset -c 1 python3 bench/bench_voices.py --n 10

Speaks ``--n`` sentences of Debian's trans-de-en (a seeded draw of 4-20 words) with each backend that is
installed (eSpeak NG, Flite, and the voices extra's hibari, Piper joe, a Kokoro blend), after one warm-up
sentence, and prints seconds of audio, wall seconds and x real time (audio seconds per wall second; the
backends use one thread). Then runs each channel step, and the whole chain with every step on, over the
hibari clips at 16 kHz (babble synthesises 3-6 eSpeak talkers per clip, which it counts).

``--wer``: also how well the packaged Whisper-base (faster-whisper int8, beam 1, one thread) understands each
backend's and each channel step's audio (WER against the sentences, lower case, punctuation removed), so a
step that destroyed the speech would show.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10, help="sentences")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backends", nargs="+", default=["espeak", "flite", "hibari", "piper", "kokoro"])
    ap.add_argument("--wer", action="store_true", help="add Whisper-base's WER on each row's audio")
    args = ap.parse_args()
    wer = _wer_fn() if args.wer else None

    from sltalign.audio import resample
    from sltalign.data.synth import KOKORO_VOICES, SynthConfig, apply_channel, draw_channel, load_sentences, make_backend
    from sltalign.data.synth.backends import default_voices
    from sltalign.data.synth.backends.kokoro import draw_blend

    rng = np.random.default_rng(args.seed)
    pool = [s for s, _ in load_sentences(None, min_words=4, max_words=20)]
    sentences = [pool[i] for i in rng.choice(len(pool), size=args.n, replace=False)]
    print(f"{args.n} sentences, {sum(len(s.split()) for s in sentences)} words")
    print(f"{'backend':<10} {'voice':<48} {'audio s':>8} {'wall s':>7} {'x real time':>11}" + ("   WER" if wer else ""))
    clips: dict[str, list[np.ndarray]] = {}
    for name in args.backends:
        try:
            b = make_backend(name)
        except OSError as err:
            print(f"{name:<10} not installed: {err}")
            continue
        voice = default_voices(b.name)[0] if name != "kokoro" else draw_blend(KOKORO_VOICES, np.random.default_rng(args.seed))
        kw = {"speed": 1.0} if name in ("hibari", "piper", "kokoro") else {}
        b.synth("Warming up.", voice, 165, 50, 0, **kw)
        t0 = time.perf_counter()
        out = [b.synth(s, voice, 165, 50, k, **kw) for k, s in enumerate(sentences)]
        wall = time.perf_counter() - t0
        audio = sum(len(w) / sr for w, sr in out)
        clips[name] = [resample(w, sr, 16000) for w, sr in out]
        print(
            f"{b.name:<10} {voice:<48} {audio:8.1f} {wall:7.2f} {audio / wall:11.1f}"
            + (f" {wer(clips[name], sentences):5.1%}" if wer else "")
        )

    speech = clips.get("hibari") or next(iter(clips.values()))
    espeak = make_backend("espeak")
    talker_voices = default_voices(espeak.name)

    def talker(r: np.random.Generator) -> dict:
        return {
            "backend": None,
            "voice": str(talker_voices[int(r.integers(len(talker_voices)))]),
            "text": pool[int(r.integers(len(pool)))],
            "rate": int(r.integers(130, 201)),
            "pitch": int(r.integers(30, 71)),
            "speed": 1.0,
            "seed": int(r.integers(2**31 - 1)),
        }

    def babble(t: dict) -> np.ndarray:
        w, sr = espeak.synth(t["text"], t["voice"], t["rate"], t["pitch"], t["seed"])
        return resample(w, sr, 16000)

    on = SynthConfig(
        speed_perturb_prob=1,
        pitch_shift_prob=1,
        rir_prob=1,
        babble_prob=1,
        telephone_prob=1,
        codec_prob=1,
        level_prob=1,
        silence_prob=1,
    )
    channels = [draw_channel(on, np.random.default_rng([args.seed, k]), talker) for k in range(len(speech))]
    audio = sum(len(w) for w in speech) / 16000
    print(f"\nchannel over {len(speech)} clips, {audio:.1f} s of speech at 16 kHz")
    print(f"{'step':<30} {'wall s':>7} {'x real time':>11}" + ("   WER" if wer else ""))
    steps = ["speed", "pitch", "silence", "room", "babble", "telephone", "codec", "level"]
    variants = [(s, lambda ch, s=s: {s: ch[s]}) for s in steps]
    variants += [
        ("telephone (GSM 06.10)", lambda ch: {"telephone": {"codec": "gsm"}}),
        ("codec (MP3)", lambda ch: {"codec": {"format": "mp3", "quality": ch["codec"]["quality"]}}),
        ("codec (Opus)", lambda ch: {"codec": {"format": "opus", "quality": ch["codec"]["quality"]}}),
        ("noise-tail room (reverb_prob)", None),
        ("all steps at once", lambda ch: ch),
    ]
    for label, pick in variants:
        # once untimed: the first call imports scipy.signal / loads the codec libraries
        apply_channel(
            speech[0][:16000],
            16000,
            seed=0,
            rng=np.random.default_rng(0),
            rt60=0.5 if pick is None else None,
            snr_db=None,
            noise_color=1.0,
            channel=None if pick is None else pick(channels[0]),
            babble=babble,
        )
        t0 = time.perf_counter()
        outs = []
        for k, (w, ch) in enumerate(zip(speech, channels)):
            y = apply_channel(
                w,
                16000,
                seed=k,
                rng=np.random.default_rng(k),
                rt60=0.5 if pick is None else None,
                snr_db=None,
                noise_color=1.0,
                channel=None if pick is None else pick(ch),
                babble=babble,
            )
            outs.append(y)
        wall = time.perf_counter() - t0
        print(f"{label:<30} {wall:7.2f} {audio / wall:11.1f}" + (f" {wer(outs, sentences):5.1%}" if wer else ""))


def _wer_fn():
    """(16 kHz clips, sentences) -> corpus WER of the packaged Whisper-base's transcripts."""
    import jiwer
    from faster_whisper import WhisperModel

    from sltalign.cascade import whisper_ct2_dir

    model = WhisperModel(whisper_ct2_dir("packaged:whisper-base"), device="cpu", compute_type="int8", cpu_threads=1)

    def norm(text: str) -> str:
        return " ".join("".join(c for c in text.lower() if c.isalnum() or c in " '").split())

    def wer(clips: list[np.ndarray], sentences: list[str]) -> float:
        hyps = [norm(" ".join(s.text for s in model.transcribe(w, beam_size=1, language="en")[0])) for w in clips]
        return float(jiwer.wer([norm(s) for s in sentences], [h or "-" for h in hyps]))

    return wer


if __name__ == "__main__":
    main()
