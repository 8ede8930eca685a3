"""Why the soft cascade's decoder source recognises in 30-s windows: Whisper's greedy hypothesis (CTranslate2
int8, the cascade's engine) on real recordings, with the encoder input padded to 30 s as Whisper was trained,
trimmed to the clip, or trimmed plus a little silence; WER against the packaged transcripts and seconds per clip,
side by side in one run.

    python3 bench/bench_decoder_source.py --manifest rs/manifest.jsonl [--asr packaged:whisper-base] [--limit 40]

(``sltalign data realspeech --out rs`` builds the manifest.) Trimmed input is ~10x cheaper, but Whisper's
decoder rarely predicts the end of text there and repeats its hypothesis up to the length cap.
"""

from __future__ import annotations

import argparse
import re
import time

import numpy as np


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--asr", default="packaged:whisper-base")
    ap.add_argument("--limit", type=int, default=0, help="first N clips only (0: all)")
    args = ap.parse_args()

    import ctranslate2
    import jiwer
    import torch

    from sltalign.audio import load_audio
    from sltalign.cascade import whisper_ct2_dir
    from sltalign.data.manifest import read_manifest
    from sltalign.foundation.whisper_decoder import load_whisper_decoder_source

    utts = read_manifest(args.manifest, require=("transcript",))
    if args.limit:
        utts = utts[: args.limit]
    source = load_whisper_decoder_source(args.asr)  # its prompt, tokenizer and 30-s features
    model = ctranslate2.models.Whisper(
        whisper_ct2_dir(args.asr), device="cpu", compute_type="int8", intra_threads=torch.get_num_threads()
    )
    fe = source.feature_extractor
    waves = [load_audio(u.audio, offset=u.offset or 0.0, duration=u.duration) for u in utts]
    refs = [_words(u.transcript) for u in utts]
    rows = []
    for name, extra in (
        ("30-s window (the source's)", None),
        ("trimmed", 0.0),
        ("trimmed + 1 s silence", 1.0),
        ("trimmed + 3 s silence", 3.0),
    ):
        hyps, t0 = [], time.perf_counter()
        for w in waves:
            if extra is None:
                mel = source.features([w])
            else:
                n = len(w) + int(extra * 16000)
                padded = np.zeros(160 * int(np.ceil((n + 400) / 160)), dtype=np.float32)
                padded[: len(w)] = w
                full = fe(padded, sampling_rate=16000, return_tensors="np").input_features[0]
                frames = int(np.ceil(n / 160))
                mel = full[None, :, : frames + frames % 2]
            res = model.generate(
                ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, dtype=np.float32)),
                [source.prompt],
                beam_size=1,
                max_length=source.max_tokens,
                suppress_blank=True,
            )
            hyps.append(_words(source.decode_text([res[0].sequences_ids[0]])[0]) or "-")
        rows.append((name, 100 * jiwer.wer(refs, hyps), (time.perf_counter() - t0) / len(waves)))
    print(f"{len(waves)} clips, {sum(len(w) for w in waves) / 16000:.1f} s of audio, {args.asr}, CTranslate2 int8, greedy")
    print("| encoder input | WER % | s per clip |\n|---|---|---|")
    for name, wer, sec in rows:
        print(f"| {name} | {wer:.1f} | {sec:.3f} |")


if __name__ == "__main__":
    main()
