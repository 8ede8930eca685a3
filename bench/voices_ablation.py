"""Voices ablation: the same connector recipe trained on training audio that differs only in its voices and
its channel, then scored on the synthetic test and on every subset of the real-speech set, beside the cascade.

    PYTHONPATH=src python3 bench/voices_ablation.py --out runs/voices [--n_train 2000] [--share 0.25] \\
        [--steps 250] [--parallel 2] [--only today today_ch] [--engine_rows]

Rows (``ROWS``): eSpeak NG + Flite (today's demo voices) alone, + hibari, + Piper (joe), + Kokoro (random
blends of 2-3 style vectors), + all three; each clean and through the channel (``CHANNEL``). Every row has the
same ``--n_train`` training clips, clip i always speaking the same sentence; a fixed, seeded ``--share`` of
the clip indices is spoken by the added voice (in the "all" row those indices are split equally between the
three), the rest by eSpeak NG or Flite as ``sltalign data synth`` drew them for a {espeak: 1, flite: 1} corpus.
Audio is made once and shared: the eSpeak/Flite clips come from one synthesised corpus (which also holds the
shared dev and test splits, eSpeak with MT targets, as the demo's), each added voice speaks only the share's
indices, and a channel row's clip i is the clean clip i put through the channel drawn for index i (the synth
package's own ``draw_channel`` / ``apply_channel``), whatever voice spoke it.

Each row trains with ``sltalign train`` on the demo's recipe (configs/phones.yaml and the demo's overrides)
for the same number of steps, with the same seed, and its best checkpoint (dev BLEU on the synthetic dev set)
is scored with ``sltalign evaluate`` on the synthetic test and on the real-speech test set (per subset,
corpus-level sacrebleu), and its CTC head read greedily (bench/ctc_wer.py) on both. The cascade
(faster-whisper base -> Bergamot) is scored once on the same two sets. ``--engine_rows`` adds the "+hibari,
clean" row trained on torch fp32 encoder states beside the CTranslate2 int8 one.

Every row's training also watches the real-speech dev set (``data.watch.real_dev``: scored at each evaluation,
never selecting), so the report shows whether people's speech peaks at another step than the synthetic dev.
``--train_seed S`` trains the chosen rows again with seed S on the same audio, into rows NAME_tS: the spread
between seeds is what a difference between rows must exceed.

Writes OUT/results.json, OUT/report.md and OUT/voices_ablation.png; rerunning skips finished work (audio,
training, scores).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sltalign.demo import TRAIN_CHANNEL

BENCH = Path(__file__).resolve().parent
MT = "packaged:bergamot-en-pt"
ASR = "packaged:whisper-base"
BASE_MIX = {"espeak": 1.0, "flite": 1.0}
ADDED = ("hibari", "piper", "kokoro")


@dataclass(frozen=True)
class Row:
    name: str
    added: tuple[str, ...]  # the voices that speak the share (split equally, in this order)
    channel: bool
    engine: str = "auto"  # model.encoder_engine
    share: float | None = None  # the added voice's share of the clips (None: --share)
    channel_name: str = "full"  # CHANNELS key, for a channel row

    @property
    def channel_id(self) -> str:
        """The audio a row reads: "" clean, else the channel's name (the key of its audio)."""
        return self.channel_name if self.channel else ""


#: the most informative rows first (the run order)
ROWS = (
    Row("today", (), False),
    Row("today_ch", (), True),
    Row("hibari", ("hibari",), False),
    Row("hibari_ch", ("hibari",), True),
    Row("all", ADDED, False),
    Row("all_ch", ADDED, True),
    Row("piper", ("piper",), False),
    Row("piper_ch", ("piper",), True),
    Row("kokoro", ("kokoro",), False),
    Row("kokoro_ch", ("kokoro",), True),
)
ENGINE_ROWS = (Row("hibari_torch", ("hibari",), False, engine="torch"),)
#: the demo's own mix (a fifth of the clips in hibari) against a lighter channel and a larger hibari share, run
#: at the demo's size (``--demo_rows --n_train 12000 --steps 1900``): the questions the small rows left open
DEMO_ROWS = (
    Row("demo", ("hibari",), False, share=0.2),
    Row("demo_light", ("hibari",), True, share=0.2, channel_name="light"),
    Row("demo_hibari40", ("hibari",), False, share=0.4),
    Row("demo_pitch", ("hibari",), True, share=0.2, channel_name="pitch"),
)

#: the channel of the channel rows, as a demanding user would set it for people's speech: phone calls and
#: lossy apps, rooms, other talkers and noise, tempo and voice pitch, quiet microphones, silences with breaths
CHANNEL = {
    "speed_perturb_prob": 0.5, "speed_perturb_range": (0.9, 1.1),
    "pitch_shift_prob": 0.3, "pitch_shift_range": (-3.0, 3.0),
    "rir_prob": 0.4,
    "babble_prob": 0.2, "babble_snr_db": (5.0, 20.0), "babble_talkers": (3, 6),
    "telephone_prob": 0.25,
    "codec_prob": 0.25,
    "level_prob": 0.3, "level_db_range": (-25.0, 0.0),
    "silence_prob": 0.5, "silence_range": (0.1, 1.0),
}  # fmt: skip
#: coloured noise (white, pink or brown, the synth package's ``colored_noise``) for this share of the clips
NOISE = {"prob": 0.3, "snr_db": (5.0, 30.0)}
#: babble talkers: today's voices only, so that no row hears a neural voice it was not given
BABBLE_BACKENDS = ("espeak", "flite")
#: a lighter channel, the demo's own (``TRAIN_CHANNEL``): what recordings of people have around the speech
#: (silences with breaths and room tone, level, tempo, a near room, some telephone band, mild noise), without
#: the steps that cost most in the small rows (pitch shift, babble, lossy codecs). Its noise is drawn here.
_NOISE_KEYS = ("noise_prob", "noise_snr_db", "augment_splits")
LIGHT_CHANNEL = {k: v for k, v in TRAIN_CHANNEL.items() if k not in _NOISE_KEYS}
LIGHT_NOISE = {"prob": TRAIN_CHANNEL["noise_prob"], "snr_db": TRAIN_CHANNEL["noise_snr_db"]}
#: the light channel with pitch shift (resampling + WSOLA: pitch and formants move together, tempo kept), the
#: one step of the full channel that makes new apparent speakers rather than new surroundings
PITCH_CHANNEL = {**LIGHT_CHANNEL, "pitch_shift_prob": 0.5, "pitch_shift_range": (-3.0, 3.0)}
#: channel name -> (synth channel settings, coloured noise)
CHANNELS = {"full": (CHANNEL, NOISE), "light": (LIGHT_CHANNEL, LIGHT_NOISE), "pitch": (PITCH_CHANNEL, LIGHT_NOISE)}
EVERY_ROW = ROWS + ENGINE_ROWS + DEMO_ROWS


# ---------------------------------------------------------------------------------------------------
# planning (pure)


def added_indices(n_train: int, share: float, seed: int) -> list[int]:
    """The training-clip indices the added voice(s) speak: a seeded choice of round(n * share), in the
    seeded order (the "all" row cuts this list into equal consecutive parts)."""
    k = round(n_train * share)
    return [int(i) for i in np.random.default_rng([seed, 17]).permutation(n_train)[:k]]


def row_sources(row: Row, n_train: int, share: float, seed: int) -> list[str]:
    """For each training clip index, the voice that speaks it: "base" (eSpeak NG / Flite) or an added one."""
    src = ["base"] * n_train
    # a larger share holds a smaller one's indices (a prefix of the same seeded order): their audio is shared
    idx = added_indices(n_train, share if row.share is None else row.share, seed)
    if row.added:
        parts = np.array_split(np.array(idx, dtype=np.int64), len(row.added))
        for voice, part in zip(row.added, parts):
            for i in part:
                src[int(i)] = voice
    return src


def needed_audio(rows: list[Row], n_train: int, share: float, seed: int) -> list[tuple[str, str, tuple[int, ...]]]:
    """The audio groups the rows need, in the order they are first needed: (voice, channel id, indices), the
    channel id "" for clean audio. Each (voice, channel, index) appears once however many rows use it."""
    seen: set[tuple[str, str, int]] = set()
    groups: list[tuple[str, str, tuple[int, ...]]] = []
    for row in rows:
        src = row_sources(row, n_train, share, seed)
        # clean audio first: a channel clip is made from the clean one
        for channel in sorted({"", row.channel_id}):
            by_voice: dict[str, list[int]] = {}
            for i, v in enumerate(src):
                if (v, channel, i) not in seen:
                    seen.add((v, channel, i))
                    by_voice.setdefault(v, []).append(i)
            groups += [(v, channel, tuple(ix)) for v, ix in by_voice.items()]
    return groups


def groups_of(row: Row, groups: list[tuple[str, str, tuple[int, ...]]], n_train: int, share: float, seed: int) -> list[int]:
    """The positions in ``groups`` holding audio the row uses (its clean clips, and with the channel those too)."""
    uses = {(v, "", i) for i, v in enumerate(row_sources(row, n_train, share, seed))}
    if row.channel:
        uses |= {(v, row.channel_id, i) for v, _, i in uses}
    return [k for k, (v, c, ix) in enumerate(groups) if any((v, c, i) in uses for i in ix)]


def clip_path(out: Path, voice: str, channel: str, i: int) -> Path:
    """Clip i in ``voice`` through ``channel`` ("" clean; "full" keeps the first rows' folder name)."""
    if voice == "base" and not channel:
        return out / "corpus" / "audio" / "train" / f"train-{i:06d}.flac"
    folder = "clean" if not channel else "channel" if channel == "full" else f"channel-{channel}"
    return out / "audio" / folder / voice / "audio" / "train" / f"train-{i:06d}.flac"


def is_done(path: Path) -> bool:
    return path.is_file() and path.with_suffix(".json").is_file()


# ---------------------------------------------------------------------------------------------------
# audio


def synth_config(args: argparse.Namespace, **kw: Any):
    from sltalign.data.synth import SynthConfig

    return SynthConfig(n_train=args.n_train, n_dev=args.n_dev, n_test=args.n_test, train_long_fraction=0.0,
                       seed=args.seed, workers=args.workers, mt_splits=("dev", "test"), **kw)  # fmt: skip


def base_corpus(args: argparse.Namespace) -> dict[str, Path]:
    """eSpeak NG / Flite training clips and the shared dev and test splits (eSpeak, MT targets): the demo's."""
    from sltalign.data.synth import synthesize_corpus

    out = args.out / "corpus"
    if all((out / f"{s}.jsonl").is_file() for s in ("train", "dev", "test")):
        return {s: out / f"{s}.jsonl" for s in ("train", "dev", "test")}
    from sltalign.foundation import load_translator

    mt = load_translator(MT)
    return synthesize_corpus(synth_config(args, train_backends=BASE_MIX), out, mt_spec=MT,
                             translate_fn=lambda texts: mt.translate_text(texts, beam=1, batch_size=64))  # fmt: skip


def speak(args: argparse.Namespace, voice: str, indices: tuple[int, ...]) -> None:
    """Clip i of the training split in ``voice``: the same plan ``sltalign data synth`` would draw for it
    (sentence, speed, Kokoro blend), rendered by the package's renderer (its record beside the audio)."""
    from sltalign.data.synth.backends import make_backend, default_voices
    from sltalign.data.synth.corpus import _render_all
    from sltalign.data.synth.plan import plan_clips
    from sltalign.data.synth.sentences import load_sentences

    out = args.out / "audio" / "clean" / voice
    todo_ix = [i for i in indices if not is_done(clip_path(args.out, voice, "", i))]
    if not todo_ix:
        return
    cfg = synth_config(args, train_backends={voice: 1.0})
    sentences = [en for en, _ in load_sentences(cfg.sentences, min_words=cfg.min_words, max_words=cfg.max_words)]
    plans = {p.id: p for p in plan_clips(cfg, sentences, default_voices("espeak"), {voice: make_backend(voice).name})
             if p.split == "train"}  # fmt: skip
    todo = [plans[f"train-{i:06d}"] for i in todo_ix]
    base = [json.loads(ln) for ln in (args.out / "corpus" / "train.jsonl").read_text().splitlines() if ln.strip()]
    for p in todo:  # the same sentence as the base clip i (same seed and split sizes: the same pools)
        if p.sentences != (base[int(p.id[6:])]["transcript"],):
            raise RuntimeError(
                f"{voice} {p.id}: planned {p.sentences!r}, the base clip says {base[int(p.id[6:])]['transcript']!r}"
            )
    (out / "audio" / "train").mkdir(parents=True, exist_ok=True)
    print(f"[audio] {voice}: {len(todo)} clips", flush=True)
    _render_all(todo, "espeak", out, cfg, progress=False)


_BABBLE: dict[str, Any] = {}


def channel_draw(
    i: int, seed: int, sentences: list[str], name: str = "full"
) -> tuple[dict[str, Any] | None, float | None, float]:
    """Clip i's channel (the synth package's ``draw_channel`` with ``CHANNELS[name]``), its coloured-noise SNR
    (None: no noise) and colour: the same for clip i whatever voice speaks it."""
    from sltalign.data.synth import SynthConfig
    from sltalign.data.synth.augment import draw_channel
    from sltalign.data.synth.backends import default_voices

    channel, noise = CHANNELS[name]
    cfg = SynthConfig(**channel)

    def talker(r: np.random.Generator) -> dict[str, Any]:
        b = BABBLE_BACKENDS[int(r.integers(len(BABBLE_BACKENDS)))]
        vs = default_voices(b)
        return {"backend": b, "voice": str(vs[int(r.integers(len(vs)))]), "text": sentences[int(r.integers(len(sentences)))],
                "rate": int(r.integers(130, 201)), "pitch": int(r.integers(30, 71)), "speed": None, "seed": int(r.integers(2**31 - 1))}  # fmt: skip

    ch = draw_channel(cfg, np.random.default_rng([seed, 1, i, 3]), talker)
    nrng = np.random.default_rng([seed, 1, i, 4])
    snr = round(float(nrng.uniform(*noise["snr_db"])), 3) if nrng.random() < noise["prob"] else None
    return ch, snr, float(nrng.choice([0.0, 1.0, 2.0]))


def _channel_one(job: tuple[str, str, int, int, list[str], str]) -> str:
    from sltalign.audio import load_audio, resample, write_audio
    from sltalign.data.synth.augment import apply_channel
    from sltalign.data.synth.backends import make_backend

    src, dst, i, seed, sentences, name = job
    ch, snr, color = channel_draw(i, seed, sentences, name)
    wav = load_audio(src)

    def babble(t: dict[str, Any]) -> np.ndarray:
        if t["backend"] not in _BABBLE:
            _BABBLE[t["backend"]] = make_backend(t["backend"])
        w, sr = _BABBLE[t["backend"]].synth(t["text"], t["voice"], t["rate"], t["pitch"], t["seed"])
        return resample(w, sr, 16000)

    out = apply_channel(wav, 16000, seed=seed * 100003 + i, rng=np.random.default_rng([seed, 1, i, 5]), rt60=None,
                        snr_db=snr, noise_color=color, channel=ch, babble=babble)  # fmt: skip
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    write_audio(dst, out, 16000)
    rec = json.loads(Path(src).with_suffix(".json").read_text())
    rec.update(duration=round(len(out) / 16000, 6), channel=ch, snr_db=snr, noise_color=color if snr is not None else None)
    tmp = Path(dst).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, ensure_ascii=False))
    os.replace(tmp, Path(dst).with_suffix(".json"))
    return dst


def put_through_channel(args: argparse.Namespace, voice: str, indices: tuple[int, ...], name: str = "full") -> None:
    import multiprocessing as mp

    sentences = [
        json.loads(ln)["transcript"] for ln in (args.out / "corpus" / "train.jsonl").read_text().splitlines() if ln.strip()
    ]
    jobs = [(str(clip_path(args.out, voice, "", i)), str(clip_path(args.out, voice, name, i)), i, args.seed, sentences, name)
            for i in indices if not is_done(clip_path(args.out, voice, name, i))]  # fmt: skip
    if not jobs:
        return
    print(f"[audio] {name} channel over {voice}: {len(jobs)} clips", flush=True)
    if args.workers <= 1:
        for j in jobs:
            _channel_one(j)
        return
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_channel_one, jobs, chunksize=8))


def row_dir(args: argparse.Namespace, row: Row) -> Path:
    """OUT/rows/NAME, NAME_TAG with --tag (a recipe variant, --set), then _tS for a training seed S other than
    --seed (same audio, another run)."""
    t = args.seed if args.train_seed is None else args.train_seed
    name = row.name + (f"_{args.tag}" if args.tag else "")
    return args.out / "rows" / (name if t == args.seed else f"{name}_t{t}")


def row_manifest(args: argparse.Namespace, row: Row) -> Path:
    """The row's training manifest: clip i from its voice's audio, clean or through the channel."""
    base = [json.loads(ln) for ln in (args.out / "corpus" / "train.jsonl").read_text().splitlines() if ln.strip()]
    rows = []
    for i, v in enumerate(row_sources(row, args.n_train, args.share, args.seed)):
        path = clip_path(args.out, v, row.channel_id, i)
        rec = json.loads(path.with_suffix(".json").read_text())
        rows.append(json.dumps({"id": f"train-{i:06d}", "audio": str(path.resolve()), "duration": rec["duration"],
                                "transcript": base[i]["transcript"]}, ensure_ascii=False))  # fmt: skip
    d = row_dir(args, row)
    d.mkdir(parents=True, exist_ok=True)
    (d / "train.jsonl").write_text("\n".join(rows) + "\n")
    return d / "train.jsonl"


class AudioPlanner:
    """Makes the audio groups in order, in one background thread; rows wait for the groups they need."""

    def __init__(self, args: argparse.Namespace, rows: list[Row]) -> None:
        self.args = args
        self.groups = needed_audio(rows, args.n_train, args.share, args.seed)
        self.done = [threading.Event() for _ in self.groups]
        self.error: BaseException | None = None
        self.seconds: dict[str, float] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            for k, (voice, channel, ix) in enumerate(self.groups):
                t = time.perf_counter()
                if channel:
                    put_through_channel(self.args, voice, ix, channel)
                elif voice != "base":
                    speak(self.args, voice, ix)
                key = f"{voice}{'+' + channel + ' channel' if channel else ''}"
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t
                self.done[k].set()
        except BaseException as err:  # noqa: BLE001 -- handed to the rows waiting
            self.error = err
            for e in self.done:
                e.set()

    def wait(self, row: Row) -> None:
        for k in groups_of(row, self.groups, self.args.n_train, self.args.share, self.args.seed):
            self.done[k].wait()
            if self.error:
                raise RuntimeError(f"audio for {row.name}: {self.error}") from self.error


# ---------------------------------------------------------------------------------------------------
# training and scoring (through the command line)


def run(cmd: list[str], log: Path, threads: int = 1) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed with exit code {proc.returncode}; see {log}")


def train_overrides(args: argparse.Namespace, row: Row, train: Path, real: Path, real_dev: Path | None = None) -> list[str]:
    corpus = args.out / "corpus"
    # the real-speech dev set is watched (scored at every evaluation, never selecting; the lexicon skips it)
    watch = [f"data.watch.real_dev={real_dev}"] if real_dev is not None else []
    return [*watch,
        f"model.speech_encoder={ASR}", f"model.encoder_engine={row.engine}",
        f"data.train={train}", f"data.dev={corpus / 'dev.jsonl'}", f"data.cache_dir={args.out / 'cache'}",
        "data.max_duration=20",
        f"model.lexicon_exclude=[{corpus / 'test.jsonl'},{real}]",
        "model.lexicon_text=[trans-de-en:sentences,trans-de-en:phrases]",
        # a step budget, not a clock: the same schedule for every row whatever else runs on the machine
        f"stages.0.steps={args.steps}", "stages.0.max_minutes=0", "stages.0.time_decay=false",
        f"stages.0.warmup={args.warmup}", f"eval_every={args.eval_every}", f"save_every={args.eval_every}",
        "time_budget_minutes=0", f"seed={args.seed if args.train_seed is None else args.train_seed}",
        f"num_threads={args.threads}", f"out={row_dir(args, row) / 'run'}",
        *args.set,  # the recipe variant of --tag, last so that it wins
    ]  # fmt: skip


def subset_scores(hyps: Path) -> dict[str, dict[str, float]]:
    """Corpus BLEU / chrF per real-speech subset (bench/score_by_subset.py's subsets)."""
    import sacrebleu

    sys.path.insert(0, str(BENCH))
    from score_by_subset import SUBSETS

    rows = [json.loads(ln) for ln in hyps.read_text().splitlines() if ln.strip()]
    out = {}
    for name, keep in SUBSETS.items():
        sel = [r for r in rows if keep(r["id"])]
        if sel:
            h, r = [x["hyp"] for x in sel], [[x["ref"] for x in sel]]
            out[name] = {
                "bleu": round(sacrebleu.corpus_bleu(h, r).score, 2),
                "chrf": round(sacrebleu.corpus_chrf(h, r).score, 2),
                "n": len(sel),
            }
    return out


def evaluate(args: argparse.Namespace, system: list[str], d: Path, test: Path, real: Path, log: Path) -> dict[str, Any]:
    scores: dict[str, Any] = {}
    for split, manifest in (("test", test), ("real", real)):
        if not (d / split / "metrics.json").is_file():
            run([sys.executable, "-m", "sltalign", "evaluate", *system, "--manifest", str(manifest), "--out", str(d / split),
                 "--beam", str(args.beam), "--threads", str(args.threads)], log, args.threads)  # fmt: skip
        m = json.loads((d / split / "metrics.json").read_text())
        scores[split] = {k: m.get(k) for k in ("bleu", "chrf", "bleu_signature", "chrf_signature", "n", "reference_source")}
    scores["real"]["subsets"] = subset_scores(d / "real" / "hyps.jsonl")
    return scores


def ctc_wer(model: Path, manifests: list[Path], log: Path, threads: int) -> list[float | None]:
    """Greedy CTC WER of the checkpoint's head (bench/ctc_wer.py's table, parsed)."""
    out = log.with_name("ctc_wer.txt")
    if not out.is_file():
        tmp = out.with_suffix(".tmp")
        run([sys.executable, str(BENCH / "ctc_wer.py"), "--model", str(model), "--manifest", *map(str, manifests)], tmp, threads)
        os.replace(tmp, out)
    last = [ln for ln in out.read_text().splitlines() if ln.startswith(f"| {model}")][-1]
    return [float(m) for m in re.findall(r"([0-9.]+)% \(", last)]


def base_row(name: str) -> str:
    """The ROWS entry a result directory's name comes from (NAME, NAME_TAG, NAME_tS, NAME_TAG_tS): the longest
    row name it starts with ("demo_light_sa" is demo_light's, not demo's)."""
    known = [r.name for r in EVERY_ROW if name == r.name or name.startswith(r.name + "_")]
    return max(known, key=len) if known else name


def dev_at_best(run_dir: Path, step: int) -> dict[str, float]:
    f = run_dir / "metrics.csv"
    rows = [r for r in csv.DictReader(f.open()) if r["split"] == "dev" and int(r["step"]) == step] if f.is_file() else []
    return {r["name"]: float(r["value"]) for r in rows}


def one_row(
    args: argparse.Namespace, row: Row, audio: AudioPlanner, corpus: dict[str, Path], real: Path, real_dev: Path | None = None
) -> dict[str, Any]:
    d = row_dir(args, row)
    done = d / "scores.json"
    if done.is_file():
        return json.loads(done.read_text())
    audio.wait(row)
    train = row_manifest(args, row)
    log = d / "log.txt"
    summary_f = d / "run" / "summary.json"
    if not summary_f.is_file() or json.loads(summary_f.read_text()).get("steps", 0) < args.steps:
        print(f"[{row.name}] training {args.steps} steps", flush=True)
        t0 = time.perf_counter()
        run(
            [sys.executable, "-m", "sltalign", "train", str(args.config), *train_overrides(args, row, train, real, real_dev)],
            log,
            args.threads,
        )
        (d / "train_minutes.txt").write_text(f"{(time.perf_counter() - t0) / 60:.2f}\n")
    summary = json.loads(summary_f.read_text())
    minutes = float((d / "train_minutes.txt").read_text()) if (d / "train_minutes.txt").is_file() else None
    print(f"[{row.name}] scoring", flush=True)
    best = d / "run" / "best"
    from sltalign.demo import watched_curve

    scores: dict[str, Any] = {"row": d.name, "added": list(row.added), "channel": row.channel, "engine": row.engine,
                              "share": args.share if row.share is None else row.share, "channel_name": row.channel_id,
                              "steps": summary["steps"], "best_step": summary["best_step"],
                              "best_dev_bleu": summary["best_dev_bleu"], "train_minutes_wall": minutes,
                              "train_loop_minutes": summary.get("minutes"),
                              "train_seed": args.seed if args.train_seed is None else args.train_seed,
                              "variant": {"tag": args.tag, "set": list(args.set)},
                              "dev_at_best": dev_at_best(d / "run", summary["best_step"]),
                              "real_dev_curve": watched_curve(d / "run" / "metrics.csv", "real_dev"),
                              **evaluate(args, ["--model", str(best)], d, corpus["test"], real, log)}  # fmt: skip
    try:
        # the real set only (the synthetic dev's is logged by training): another encoder pass costs minutes here
        w = ctc_wer(best, [real], log, args.threads)
        scores["ctc_wer"] = {
            "real": w[0],
            "dev": 100 * scores["dev_at_best"]["ctc_wer"] if "ctc_wer" in scores["dev_at_best"] else None,
        }
    except (RuntimeError, IndexError) as err:
        scores["ctc_wer"] = {"error": str(err)}
    done.write_text(json.dumps(scores, indent=2))
    print(f"[{row.name}] test {scores['test']['bleu']:.1f}/{scores['test']['chrf']:.1f}, "
          f"real {scores['real']['bleu']:.1f}/{scores['real']['chrf']:.1f}", flush=True)  # fmt: skip
    return scores


def cascade(args: argparse.Namespace, corpus: dict[str, Path], real: Path) -> dict[str, Any]:
    d = args.out / "cascade"
    d.mkdir(parents=True, exist_ok=True)
    if (d / "scores.json").is_file():
        return json.loads((d / "scores.json").read_text())
    print("[cascade] scoring", flush=True)
    scores = {"row": "cascade", **evaluate(args, ["--cascade", "--asr", ASR, "--mt", MT], d, corpus["test"], real, d / "log.txt")}
    (d / "scores.json").write_text(json.dumps(scores, indent=2))
    return scores


# ---------------------------------------------------------------------------------------------------
# report


def voices_label(row: dict[str, Any]) -> str:
    added = row.get("added") or []
    share = f" ({row['share']:.0%})" if added and row.get("share") is not None else ""
    return "eSpeak + Flite" + ("" if not added else " + " + " + ".join(added) + share)


def report(args: argparse.Namespace, results: list[dict[str, Any]], casc: dict[str, Any] | None, missing: list[str]) -> Path:
    subsets = ["pocketsphinx", "ivr", "wz2100", "alsa", "new voices", "all"]
    head = ("| row | voices | channel | engine | steps (best) | train min (loop / command) | synthetic test BLEU / chrF | "
            + " | ".join(f"real {s}" for s in subsets) + " | chrF to cascade (real, all) | CTC WER dev / real | real dev chrF: chosen step / best (step) |")  # fmt: skip
    lines = [
        "# Voices ablation", "",
        f"{args.n_train} training clips per row (the same sentence for clip i in every row); {round(args.n_train * args.share)} "
        f"of them ({args.share:.0%}) in the added voice(s), split equally in the \"all\" rows; {args.steps} steps per row "
        f"(warmup {args.warmup}, dev every {args.eval_every}), seed {args.seed}, {args.threads} thread(s) per run, "
        f"{args.parallel} runs at once; beam {args.beam}. Recipe: {args.config.name} with the demo's overrides.",
        "Synthetic dev/test: eSpeak NG, references are MT output (mt:" + MT + " on the gold transcripts). "
        "Real speech: the real-speech test set, human pt-BR references. Cells: BLEU / chrF, corpus-level.", "",
        head, "|" + "---|" * (head.count("|") - 1),
    ]  # fmt: skip
    cell = lambda s: f"{s['bleu']:.1f} / {s['chrf']:.1f}" if s else "-"  # noqa: E731
    for r in results:
        sub = r["real"]["subsets"]
        gap = r["real"]["chrf"] - casc["real"]["chrf"] if casc else None
        w = r.get("ctc_wer", {})
        wer = (f"{w['dev']:.1f}%" if w.get("dev") is not None else "-") + " / " + (f"{w['real']:.1f}%" if "real" in w else "-")
        loop = r.get("train_loop_minutes")
        if loop is None and (args.out / "rows" / r["row"] / "run" / "summary.json").is_file():
            loop = json.loads((args.out / "rows" / r["row"] / "run" / "summary.json").read_text()).get("minutes")
        mins = (
            (f"{loop:.1f}" if loop else "-") + " / " + (f"{r['train_minutes_wall']:.1f}" if r.get("train_minutes_wall") else "-")
        )
        curve = r.get("real_dev_curve") or []
        at = [c["chrf"] for c in curve if c["step"] == r["best_step"]]
        top = max(curve, key=lambda c: c["chrf"]) if curve else None
        rdev = f"{at[0]:.1f} / {top['chrf']:.1f} ({top['step']})" if at and top else "-"
        lines.append(f"| {r['row']} | {voices_label(r)} | {(r.get('channel_name') or 'yes') if r['channel'] else 'no'} | {r['engine']} | {r['steps']} ({r['best_step']}) | "
                     f"{mins} | {cell(r['test'])} | " + " | ".join(cell(sub.get(s)) for s in subsets)
                     + (f" | {gap:+.1f} | {wer} | {rdev} |" if gap is not None else f" | - | {wer} | {rdev} |"))  # fmt: skip
    if casc:
        sub = casc["real"]["subsets"]
        lines.append("| cascade | faster-whisper base -> Bergamot | - | - | - | - | " + cell(casc["test"]) + " | "
                     + " | ".join(cell(sub.get(s)) for s in subsets) + " | 0 | - | - |")  # fmt: skip
    sig = (results or [casc])[0]
    lines += ["", "Subsets (n): " + ", ".join(f"{k} {v['n']}" for k, v in sig["real"]["subsets"].items()) + ".",
              f"BLEU signature `{sig['test']['bleu_signature']}`, chrF `{sig['test']['chrf_signature']}`.",
              "Channel rows: " + json.dumps(CHANNEL) + f"; coloured noise {json.dumps(NOISE)}; babble talkers {list(BABBLE_BACKENDS)}.",
              "Light channel rows: " + json.dumps(LIGHT_CHANNEL) + f"; coloured noise {json.dumps(LIGHT_NOISE)}.",
              "Real dev: the real-speech dev set (31 clips, human references), watched by training (data.watch: scored at "
              "every evaluation, never selecting); a row NAME_tS trained with seed S on the same audio.",
              "CTC WER: greedy read-out of the phone head through the lexicon; dev: logged by training at the best step, real: "
              "bench/ctc_wer.py on the real-speech test set (clips up to 30 s).",
              "", "![voices ablation](voices_ablation.png)", ""]  # fmt: skip
    if missing:
        lines.append(f"Not run: {', '.join(missing)}.")
    (args.out / "report.md").write_text("\n".join(lines))
    return args.out / "report.md"


def plot(args: argparse.Namespace, results: list[dict[str, Any]], casc: dict[str, Any] | None) -> Path:
    from matplotlib.figure import Figure

    names = [r["row"] for r in results]
    x = np.arange(len(names))
    fig = Figure(figsize=(max(7, 0.8 * len(names) + 3), 4))
    ax = fig.subplots()
    series = [("synthetic test", [r["test"]["chrf"] for r in results]), ("real, all", [r["real"]["chrf"] for r in results]),
              ("real, ivr", [r["real"]["subsets"].get("ivr", {}).get("chrf", 0) for r in results]),
              ("real, new voices", [r["real"]["subsets"].get("new voices", {}).get("chrf", 0) for r in results])]  # fmt: skip
    w = 0.8 / len(series)
    for k, (label, vals) in enumerate(series):
        ax.bar(x + (k - (len(series) - 1) / 2) * w, vals, w, label=label)
    if casc:
        ax.axhline(casc["real"]["chrf"], color="k", ls="--", lw=1, label="cascade, real all")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("chrF")
    ax.set_title(f"Voices ablation: {args.n_train} clips, {args.steps} steps per row")
    ax.legend(fontsize=7, ncols=3)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out / "voices_ablation.png", dpi=110)
    return args.out / "voices_ablation.png"


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n_train", type=int, default=2000)
    ap.add_argument("--n_dev", type=int, default=100)
    ap.add_argument("--n_test", type=int, default=100)
    ap.add_argument("--share", type=float, default=0.25, help="share of the training clips in the added voice(s)")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--warmup", type=int, default=40, help="the demo's 300 of ~1,900 steps, scaled to --steps")
    ap.add_argument("--eval_every", type=int, default=125)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train_seed", type=int, default=None, help="another training seed on the same audio (rows NAME_tS)")
    ap.add_argument("--workers", type=int, default=2, help="synthesis processes")
    ap.add_argument("--threads", type=int, default=1, help="threads per training / evaluation run")
    ap.add_argument("--parallel", type=int, default=2, help="rows trained at once")
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--config", type=Path, default=None, help="the recipe (default: the package's configs/phones.yaml)")
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="training overrides for a recipe variant (needs --tag): rows NAME_TAG on the same audio",
    )
    ap.add_argument("--tag", default="", help="name of the --set variant, appended to the row names")
    ap.add_argument("--only", nargs="*", default=None, help="row names (default: all, in ROWS order)")
    ap.add_argument("--engine_rows", action="store_true", help="also the +hibari clean row on torch fp32 encoder states")
    ap.add_argument("--demo_rows", action="store_true", help="also the demo-mix rows (DEMO_ROWS: light channel, hibari share)")
    ap.add_argument("--no_cascade", action="store_true")
    ap.add_argument("--cascade_after", type=int, default=6, help="score the cascade after this many rows started")
    ap.add_argument("--plan_only", action="store_true", help="print the rows' audio plan and stop")
    args = ap.parse_args(argv)
    if bool(args.set) != bool(args.tag) or not re.fullmatch(r"[A-Za-z0-9]*", args.tag):
        raise SystemExit(
            "--set and --tag go together (--tag: letters and digits), so that a variant's rows never overwrite the recipe's own"
        )
    if args.config is None:
        from sltalign.demo import preset_path

        args.config = preset_path("phones.yaml")
    all_rows = list(ROWS) + (list(ENGINE_ROWS) if args.engine_rows else []) + (list(DEMO_ROWS) if args.demo_rows else [])
    by_name = {r.name: r for r in EVERY_ROW}
    unknown = [n for n in args.only or [] if n not in by_name]
    if unknown:
        raise SystemExit(f"--only: unknown row(s) {unknown}; rows: {list(by_name)}")
    rows = [by_name[n] for n in args.only] if args.only else all_rows
    args.out.mkdir(parents=True, exist_ok=True)
    groups = needed_audio(rows, args.n_train, args.share, args.seed)
    print(
        f"{len(rows)} rows; audio groups: " + ", ".join(f"{v}{'+' + c if c else ''}:{len(ix)}" for v, c, ix in groups), flush=True
    )
    if args.plan_only:
        return
    t_all = time.perf_counter()
    print("[audio] base corpus (eSpeak NG / Flite train, eSpeak dev and test)", flush=True)
    corpus = base_corpus(args)
    from sltalign.data.realspeech import build_realspeech_manifest

    real = build_realspeech_manifest(args.out / "realspeech")
    real_dev = build_realspeech_manifest(args.out / "realspeech_dev", split="dev")
    audio = AudioPlanner(args, rows)
    audio.thread.start()
    results: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    casc: dict[str, Any] | None = None
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        futs, fut_c = {}, None
        for k, r in enumerate(rows):  # the cascade after the --cascade_after first rows
            futs[r.name] = pool.submit(one_row, args, r, audio, corpus, real, real_dev)
            if k == min(args.cascade_after - 1, len(rows) - 1) and not args.no_cascade:
                fut_c = pool.submit(cascade, args, corpus, real)
        for name, f in futs.items():
            try:
                results[name] = f.result()
            except Exception as err:  # noqa: BLE001 -- one failed row leaves the others
                failed[name] = str(err)
                print(f"[{name}] FAILED: {err}", flush=True)
        if fut_c is not None:
            casc = fut_c.result()
    if casc is None and (args.out / "cascade" / "scores.json").is_file():
        casc = json.loads((args.out / "cascade" / "scores.json").read_text())
    # the table holds every row scored in OUT so far (an --only run adds rows to it), other training seeds after
    # their row
    results = {res["row"]: res for res in results.values()}
    for r in EVERY_ROW:
        for f in sorted((args.out / "rows").glob(f"{r.name}*/scores.json")):
            if base_row(f.parent.name) == r.name:
                results.setdefault(f.parent.name, json.loads(f.read_text()))
    order = {r.name: k for k, r in enumerate(EVERY_ROW)}
    ordered = sorted(results.values(), key=lambda res: (order.get(base_row(res["row"]), len(order)), res["row"]))
    missing = [r.name for r in EVERY_ROW if r.name not in results]
    doc = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "channel": CHANNEL, "noise": NOISE,
           "babble_backends": BABBLE_BACKENDS, "audio_seconds": audio.seconds, "wall_minutes": (time.perf_counter() - t_all) / 60,
           "rows": ordered, "cascade": casc, "failed": failed, "missing": missing}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(doc, indent=2))
    if ordered:
        plot(args, ordered, casc)
        print(report(args, ordered, casc, missing).read_text())


if __name__ == "__main__":
    main()
