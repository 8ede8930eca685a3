"""Speed and memory of the phone head's read-outs, side by side in one process: the lexicon search with its
word LM against the greedy read-out, on the same connector and audio.

    python3 bench/bench_read_out.py --model runs/demo/connector --manifest runs/demo/realspeech/manifest.jsonl

Prints the one-time cost of the search (building the word LM and the lexicon trie; resident memory before and
after) and, for each of ``--repeats`` rounds, the wall time of ``SpeechTranslator.translate`` over the
manifest's audio with the search and then greedily, and their ratio. Whole translations are timed (encoder,
connector, read-out, MT), so the ratio is what a user sees. Each round also times
``translate_segments(sources=True)`` (the translation and the transcript the connector heard) against the
search's ``translate``: the transcript is the text the MT translated, so its ratio should stay near 1 (an
ensemble's members are each searched once, not twice).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import torch

from sltalign.api import SpeechTranslator
from sltalign.connectors.lexicon_search import SearchOptions
from sltalign.data.manifest import read_manifest


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak resident set, kB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a phone-head checkpoint whose head searches")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    utts = read_manifest(args.manifest)
    audio = [u.audio if os.path.isabs(u.audio) else str(Path(args.manifest).parent / u.audio) for u in utts]
    seconds = sum(u.duration or 0.0 for u in utts)
    tr = SpeechTranslator.from_pretrained(args.model)
    head = tr.model.ctc_head
    if head is None or not getattr(head, "search", SearchOptions()).beam:
        raise SystemExit(f"{args.model}: its CTC head does not search (rebuild it with bench/rebuild_lexicon.py)")
    searching = head.search
    before = rss_mb()
    t0 = time.perf_counter()
    head.warm_up()
    print(f"search built in {time.perf_counter() - t0:.1f} s; peak RSS {before:.0f} -> {rss_mb():.0f} MB", flush=True)
    print(f"{len(audio)} clips, {seconds:.0f} s of audio, {args.threads} threads", flush=True)
    for r in range(args.repeats):
        head.search = searching
        t0 = time.perf_counter()
        tr.translate(audio)
        t_search = time.perf_counter() - t0
        t0 = time.perf_counter()
        tr.translate_segments(audio, sources=True)  # the translation and what was heard: `sltalign translate`
        t_sources = time.perf_counter() - t0
        head.search = SearchOptions()  # beam 0: greedy
        t0 = time.perf_counter()
        tr.translate(audio)
        t_greedy = time.perf_counter() - t0
        print(
            f"round {r + 1}: search {t_search:.1f} s (RTF {t_search / seconds:.3f}), greedy {t_greedy:.1f} s "
            f"(RTF {t_greedy / seconds:.3f}); search / greedy {t_search / t_greedy:.2f}x; search with the sources "
            f"{t_sources:.1f} s, {t_sources / t_search:.2f}x the search alone",
            flush=True,
        )
    head.search = searching


if __name__ == "__main__":
    main()
