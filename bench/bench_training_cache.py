"""Training throughput: encoder-output cache vs running the frozen encoder every step.

    python3 bench/bench_training_cache.py [--encoder packaged:whisper-base] [--batch 8] [--steps 4]

Side by side in one run, on the same utterances (the project's real-speech set: LibriVox and other
recordings from Debian's pocketsphinx-testdata, with human references), the same connector (STE `small`,
ECED, the paper's target cross-entropy through the frozen Bergamot en->pt), the same batch:

- ``cached``: states read from an ``EncoderCache`` built beforehand (what `sltalign train` does after its
  first pass over the data), then connector + MT forward, backward and an optimizer step;
- ``live pad30``: the frozen Whisper encoder runs on every step on input padded to 30 s (what a plain
  SpeechEncoderDecoderModel-style setup does), then the same step;
- ``live trim``: the frozen encoder runs every step on the real frames only (sltalign's trim mode uncached).

Prints seconds per step, utterances per second and the speed-up of the cache over each live row
(target: >= 10x over live pad30). The cache build itself is timed too: it is paid once, in the first epoch.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from sltalign.connectors import build_connector
from sltalign.data.batching import CachedSpeechDataset, collate
from sltalign.data.cache import EncoderCache
from sltalign.data.manifest import read_manifest
from sltalign.data.realspeech import build_realspeech_manifest
from sltalign.foundation import load_speech_encoder, load_translator
from sltalign.model import IGNORE, AlignedST
from sltalign.systems import load_utterances


def build_model(encoder, translator) -> AlignedST:
    torch.manual_seed(0)
    connector = build_connector("ste", in_dim=encoder.dim, out_dim=translator.embed_dim, preset="small")
    return AlignedST(speech_encoder=None, connector=connector, translator=translator, arrangement="eced")


def train_step(model: AlignedST, optimizer, states, mask, targets) -> float:
    loss = model.loss(states, mask, targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="packaged:whisper-base")
    ap.add_argument("--translator", default="packaged:bergamot-en-pt")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per row (after one warm-up step)")
    args = ap.parse_args()

    work = tempfile.TemporaryDirectory(prefix="sltalign-bench-")
    utts = read_manifest(build_realspeech_manifest(work.name))
    translator = load_translator(args.translator)
    encoders = {mode: load_speech_encoder(args.encoder, mode=mode) for mode in ("trim", "pad30")}
    waves = load_utterances(utts)
    ds_targets = [translator.tokenize_target([u.translation])[0] for u in utts]
    # Consecutive windows over the clips, wrapping around: every step sees a different mix of lengths.
    batches = [[(i * args.batch + j) % len(utts) for j in range(args.batch)] for i in range(args.steps + 1)]
    audio_s = sum(len(w) for w in waves) / 16000
    print(
        f"{args.encoder} + {args.translator}, STE small, ECED, CE; {len(utts)} real clips ({audio_s:.0f} s), "
        f"batch {len(batches[0])}, torch threads {torch.get_num_threads()}, {args.steps} timed steps per row"
    )

    # The cache build: paid once, in the first epoch.
    cache = EncoderCache(f"{work.name}/cache", encoder_fingerprint=encoders["trim"].fingerprint(), mode="trim")
    t = time.perf_counter()
    cache.build(encoders["trim"], utts, progress=False)
    build_s = time.perf_counter() - t
    dataset = CachedSpeechDataset(cache, utts, translator.tokenize_target)

    def targets_of(idx: list[int]) -> torch.Tensor:
        rows = [ds_targets[i] for i in idx]
        out = torch.full((len(rows), max(map(len, rows))), IGNORE, dtype=torch.long)
        for j, r in enumerate(rows):
            out[j, : len(r)] = torch.tensor(r)
        return out

    def cached_batch(idx):
        b = collate([dataset[i] for i in idx], pad_id=IGNORE)
        return b["states"], b["states_mask"]

    def live_batch(mode):
        def get(idx):
            with torch.no_grad():
                return encoders[mode].encode([waves[i] for i in idx])

        return get

    rows = [
        ("cached (trim states from the cache)", cached_batch),
        ("live pad30 (encoder every step)", live_batch("pad30")),
        ("live trim (encoder every step)", live_batch("trim")),
    ]
    results = {}
    for name, get in rows:
        model = build_model(encoders["trim"], translator)
        model.train()
        opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
        times, n_utts = [], 0
        for step in range(args.steps + 1):
            idx = batches[step % len(batches)]
            t = time.perf_counter()
            states, mask = get(idx)
            train_step(model, opt, states, mask, targets_of(idx))
            if step:  # the first step warms up allocators and kernels
                times.append(time.perf_counter() - t)
                n_utts += len(idx)
        results[name] = (sum(times) / len(times), n_utts / sum(times))

    cached_rate = results[rows[0][0]][1]
    print("\n| input | s / step | utterances / s | cache speed-up |")
    print("|---|---|---|---|")
    for name, (sps, ups) in results.items():
        print(f"| {name} | {sps:.2f} | {ups:.2f} | {cached_rate / ups:.1f}x |")
    print(f"\ncache build (first epoch only): {build_s:.1f} s for {len(utts)} clips ({audio_s / build_s:.0f}x real time)")
    live = results[rows[1][0]][1]
    print(f"cache vs live pad30: {cached_rate / live:.1f}x more utterances per second (target >= 10x)")


if __name__ == "__main__":
    main()
