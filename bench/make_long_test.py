"""Long utterances from short ones: join consecutive clips of a manifest into 20-40 s clips.

    python3 bench/make_long_test.py --manifest corpus16k/test.jsonl [more.jsonl ...] --out long_test [--min_s 20 --max_s 40 --gap_s 0.4]

For testing long-utterance behaviour of connectors trained on short clips (the paper's claim that STE stays
ahead past 20 s) without new sentences: the joined clips hold exactly the test split's sentences, so nothing
overlaps with training. Transcripts and translations are joined with spaces, as ``sltalign data synth``
joins the sentences of its own long clips; ``translation_source`` is kept. Writes OUT/audio/*.flac and
OUT/test.jsonl; clips left over at the end (under ``--min_s``) are dropped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from sltalign.audio import load_audio
from sltalign.data.manifest import Utterance, read_manifest, write_manifest

SR = 16000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, nargs="+", required=True, help="one or more manifests, joined in order")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--min_s", type=float, default=20.0)
    ap.add_argument("--max_s", type=float, default=40.0)
    ap.add_argument("--gap_s", type=float, default=0.4, help="silence between joined clips")
    args = ap.parse_args()
    if not 0 < args.min_s < args.max_s:
        raise SystemExit("need 0 < --min_s < --max_s")
    utts = [u for m in args.manifest for u in read_manifest(m, require=("transcript", "translation"))]
    (args.out / "audio").mkdir(parents=True, exist_ok=True)
    gap = np.zeros(round(args.gap_s * SR), dtype=np.float32)
    out: list[Utterance] = []
    group: list[tuple[Utterance, np.ndarray]] = []

    def flush() -> None:
        wave = np.concatenate([x for _, w in group for x in (w, gap)][:-1])
        uid = f"long-{len(out):04d}"
        path = args.out / "audio" / f"{uid}.flac"
        sf.write(path, wave, SR, subtype="PCM_16")
        out.append(Utterance(
            id=uid, audio=f"audio/{uid}.flac", duration=len(wave) / SR,
            transcript=" ".join(u.transcript for u, _ in group), translation=" ".join(u.translation for u, _ in group),
            translation_source=group[0][0].translation_source,
        ))  # fmt: skip
        group.clear()

    for u in utts:
        w = load_audio(u.audio, offset=u.offset, duration=u.duration)
        length = sum(len(x) + len(gap) for _, x in group) + len(w)
        if group and length > args.max_s * SR:  # this clip would overshoot: close the group first if long enough
            if sum(len(x) + len(gap) for _, x in group) - len(gap) >= args.min_s * SR:
                flush()
            else:
                group.clear()  # cannot reach min_s without passing max_s: start again from this clip
        group.append((u, w))
        if sum(len(x) + len(gap) for _, x in group) - len(gap) >= args.min_s * SR:
            flush()
    path = write_manifest(args.out / "test.jsonl", out)
    total = sum(u.duration for u in out)
    print(
        f"{len(out)} clips, {total / 60:.1f} min, {min(u.duration for u in out):.1f}-{max(u.duration for u in out):.1f} s -> {path}"
    )


if __name__ == "__main__":
    main()
