"""Orchestration: render every planned clip (in worker processes, resumably) and write the manifests.

Output of ``synthesize_corpus(config, DIR)``::

    DIR/synth_config.json                 the settings that fix the audio (a rerun must match them)
    DIR/audio/<split>/<id>.flac           16 kHz mono, 16-bit
    DIR/audio/<split>/<id>.json           what the clip holds (sentences, backend, voice or blend, rate or
                                          speed, pitch, noise, room, channel steps)
    DIR/<split>.jsonl                     manifests: id, audio, duration, transcript, translation, translation_source
    DIR/<split>.clips.jsonl               line-parallel to the manifest: each clip's backend, voice, blend
                                          (weights), speed and channel (the manifest schema holds none of these)
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ...audio import resample, write_audio
from ..manifest import Utterance, write_manifest
from .augment import apply_channel
from .backends import NEURAL, check_voices, default_voices, make_backend
from .backends.kokoro import parse_blend
from .config import NEW_DEFAULTS, SPLITS, SynthConfig
from .plan import ClipPlan, plan_clips
from .sentences import load_sentences

__all__ = ["synthesize_corpus", "render_clip"]

log = logging.getLogger(__name__)

_GAP_SECONDS = (0.2, 0.6)  # pause between the sentences of a long clip
_FORMAT = 1  # bump when the rendering changes, so that old directories are not silently mixed


# ---------------------------------------------------------------------------------------------------
# rendering one clip


def _speak(backend: Any, text: str, voice: str, rate: int, pitch: int, seed: int, speed: float | None) -> tuple[np.ndarray, int]:
    if speed is not None and backend.name in NEURAL:
        return backend.synth(text, voice, rate, pitch, seed, speed=speed)
    return backend.synth(text, voice, rate, pitch, seed)


def render_clip(
    plan: ClipPlan,
    backend: Any,
    audio_path: Path,
    sample_rate: int,
    backend_for: Callable[[str | None], Any] | None = None,
) -> dict[str, Any]:
    """Speak the plan, put it through its channel, write the FLAC; returns the clip's record (its .json).

    ``backend_for(name)`` gives the backend of a babble talker (None: the corpus's main backend)."""
    rng = np.random.default_rng(plan.seed)
    pieces: list[np.ndarray] = []
    used: list[str] = []
    total = 0.0
    tts_rate = 0
    for k, text in enumerate(plan.sentences):
        wav, tts_rate = _speak(backend, text, plan.voice, plan.rate, plan.pitch, plan.seed + k, plan.speed)
        gap = float(rng.uniform(*_GAP_SECONDS)) if pieces else 0.0
        seconds = len(wav) / tts_rate + gap
        if plan.long and total + seconds > plan.max_seconds:
            continue  # this sentence would overshoot: try a shorter one
        if gap:
            pieces.append(np.zeros(int(round(gap * tts_rate)), dtype=np.float32))
        pieces.append(wav)
        used.append(text)
        total += seconds
        if not plan.long or total >= plan.target_seconds:
            break
    if not used:
        raise RuntimeError(f"clip {plan.id}: no sentence fits {plan.max_seconds} s")
    if total < plan.min_seconds:
        log.warning("clip %s: %.1f s, shorter than %.1f s (its sentences ran out)", plan.id, total, plan.min_seconds)
    wav = resample(np.concatenate(pieces), tts_rate, sample_rate)

    def babble(t: dict[str, Any]) -> np.ndarray:
        b = backend_for(t["backend"]) if backend_for is not None else backend
        w, sr = _speak(b, t["text"], t["voice"], t["rate"], t["pitch"], t["seed"], t["speed"])
        return resample(w, sr, sample_rate)

    wav = apply_channel(
        wav,
        sample_rate,
        seed=plan.seed,
        rng=rng,
        rt60=plan.rt60,
        snr_db=plan.snr_db,
        noise_color=plan.noise_color,
        channel=plan.channel,
        babble=babble,
    )
    write_audio(audio_path, wav, sample_rate)  # atomic: temporary name, then rename
    record = {
        "id": plan.id,
        "split": plan.split,
        "sentences": used,
        "duration": round(len(wav) / sample_rate, 6),
        "voice": plan.voice,
        "rate": plan.rate,
        "pitch": plan.pitch,
        "snr_db": plan.snr_db,
        "noise_color": plan.noise_color if plan.snr_db is not None else None,
        "rt60": plan.rt60,
        "backend": backend.name,
    }
    # only where they apply, so the records of a corpus without them read as before
    if plan.speed is not None:
        record["speed"] = plan.speed
    if backend.name == "kokoro":
        record["blend"] = parse_blend(plan.voice)
    if plan.channel:
        record["channel"] = plan.channel
    return record


def _write_json(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
    os.replace(tmp, path)


class _Renderer:
    """Owns the backends (one of each per process, made when first needed) and renders plans into ``out_dir``."""

    def __init__(self, backend_name: str, out_dir: Path, sample_rate: int) -> None:
        self.backend = make_backend(backend_name)
        self.others: dict[str, Any] = {}
        self.out_dir = out_dir
        self.sample_rate = sample_rate

    def _backend_for(self, name: str | None) -> Any:
        if name is None or name == self.backend.name:
            return self.backend
        if name not in self.others:
            self.others[name] = make_backend(name)
        return self.others[name]

    def __call__(self, plan: ClipPlan) -> dict[str, Any]:
        audio = self.out_dir / "audio" / plan.split / f"{plan.id}.flac"
        record = render_clip(plan, self._backend_for(plan.backend), audio, self.sample_rate, self._backend_for)
        _write_json(audio.with_suffix(".json"), record)  # after the audio: marks the clip finished
        return record


_WORKER: _Renderer | None = None


def _worker_init(backend_name: str, out_dir: str, sample_rate: int) -> None:
    global _WORKER
    _WORKER = _Renderer(backend_name, Path(out_dir), sample_rate)


def _worker_render(plan: ClipPlan) -> dict[str, Any]:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER(plan)


# ---------------------------------------------------------------------------------------------------
# the corpus


def _fingerprint(cfg: SynthConfig, backend: str, pool_sha: str) -> dict[str, Any]:
    d = asdict(cfg)
    for speed_only in ("workers", "translate_batch_size", "translation_source", "translations", "sentences", "mt_splits"):
        d.pop(speed_only)
    if tuple(d["augment_splits"]) == SPLITS:
        del d["augment_splits"]  # the default: corpora made before the setting existed still resume
    if d["train_backends"] is None:
        del d["train_backends"]  # likewise
    for name, default in NEW_DEFAULTS.items():  # the voices' and channel's settings, off or at their defaults
        if getattr(cfg, name) == default:
            del d[name]
    d = json.loads(json.dumps(d))  # tuples -> lists, as they come back from the file
    d.update(format=_FORMAT, resolved_backend=backend, sentences_sha256=pool_sha)
    return d


_CLIP_KEYS = ("id", "backend", "voice", "blend", "speed", "rate", "pitch", "snr_db", "noise_color", "rt60", "channel")


def _write_clips(path: Path, records: list[dict[str, Any]]) -> None:
    """How each clip of a manifest was made, one JSON line per manifest line (same order): backend, voice
    or Kokoro blend with its weights, speed or rate, pitch, noise, room and the channel steps applied."""
    lines = [json.dumps({k: r[k] for k in _CLIP_KEYS if k in r}, ensure_ascii=False) for r in records]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


def _check_or_write_state(out_dir: Path, state: dict[str, Any]) -> None:
    path = out_dir / "synth_config.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(old) | set(state) if old.get(k) != state.get(k))
        if diff:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {state.get(k)!r}" for k in diff[:6])
            raise ValueError(
                f"{out_dir} holds a corpus made with other settings ({details}); resuming would mix the two. "
                f"Use another output directory or the same settings."
            )
        return
    _write_json(path, state)


def synthesize_corpus(
    config: SynthConfig,
    out_dir: str | os.PathLike,
    *,
    translate_fn: Callable[[list[str]], list[str]] | None = None,
    mt_spec: str | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Render the corpus into ``out_dir`` (resuming a previous run) and write one manifest per split.

    Targets: ``config.translations`` (human, line-parallel to ``config.sentences``), or ``translate_fn``
    (a frozen MT: list of English sentences -> list of translations, called ``translate_batch_size``
    sentences at a time; each sentence is translated alone, a long clip's translation is its sentences'
    joined), or none (manifests with transcripts only). ``mt_spec`` names the MT in translation_source
    ("mt:<mt_spec>"); by default ``config.translation_source`` or ``translate_fn.spec``.
    Returns {split: manifest path} for the splits with clips.
    """
    cfg = config
    out = Path(out_dir).expanduser().resolve()
    if cfg.translations and translate_fn is not None:
        raise ValueError("synthesize_corpus: give human translations (config.translations) or translate_fn, not both")
    pairs = load_sentences(cfg.sentences, translations=cfg.translations, min_words=cfg.min_words, max_words=cfg.max_words)
    sentences = [en for en, _ in pairs]
    human = {en: tr for en, tr in pairs if tr is not None}
    backend = make_backend(cfg.backend).name  # what the workers will run: the library and the program sound different
    voices = cfg.voices or default_voices(backend)
    pool_sha = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()
    out.mkdir(parents=True, exist_ok=True)
    # resolved now, in this process: a mix backend whose program is missing fails before any clip is rendered
    mix_names = {name: make_backend(name).name for name in (cfg.train_backends or {}) if (cfg.train_backends or {})[name] > 0}
    check_voices(backend, voices)
    for name, resolved in mix_names.items():
        check_voices(resolved, (cfg.train_voices or {}).get(name) or default_voices(resolved))
    state = _fingerprint(cfg, backend, pool_sha)
    if mix_names:  # what renders the mixed clips (e.g. eSpeak's library or its program) decides their sound
        state["resolved_train_backends"] = mix_names
    _check_or_write_state(out, state)
    plans = plan_clips(cfg, sentences, voices, mix_names)
    for split in SPLITS:
        d = out / "audio" / split
        d.mkdir(parents=True, exist_ok=True)
        for stale in d.glob(".*.tmp"):  # half-written files of an interrupted run
            stale.unlink(missing_ok=True)
    records: dict[str, dict[str, Any]] = {}
    todo: list[ClipPlan] = []
    for plan in plans:
        audio = out / "audio" / plan.split / f"{plan.id}.flac"
        meta = audio.with_suffix(".json")
        if audio.is_file() and meta.is_file():
            records[plan.id] = json.loads(meta.read_text(encoding="utf-8"))
        else:
            todo.append(plan)

    if todo:
        records.update(_render_all(todo, backend, out, cfg, progress))

    # targets
    translations: dict[str, str] = dict(human)
    source: str | None = None
    if cfg.translations:
        source = cfg.translation_source or "human"
    elif translate_fn is not None:
        spec = mt_spec or (cfg.translation_source[3:] if (cfg.translation_source or "").startswith("mt:") else None)
        spec = spec or getattr(translate_fn, "spec", None) or getattr(translate_fn, "__name__", "unknown")
        source = cfg.translation_source or f"mt:{spec}"
        needed = list(dict.fromkeys(s for p in plans if p.split in cfg.mt_splits for s in records[p.id]["sentences"]))
        translations.update(_translate(needed, translate_fn, cfg.translate_batch_size, progress))

    paths: dict[str, Path] = {}
    for split in SPLITS:
        split_plans = [p for p in plans if p.split == split]
        if not split_plans:
            continue
        utts = []
        for p in split_plans:
            rec = records[p.id]
            has_target = source is not None and (cfg.translations or split in cfg.mt_splits)
            target = " ".join(translations[s] for s in rec["sentences"]) if has_target else None
            utts.append(
                Utterance(
                    id=p.id,
                    audio=str(out / "audio" / split / f"{p.id}.flac"),
                    duration=float(rec["duration"]),
                    transcript=" ".join(rec["sentences"]),
                    translation=target,
                    translation_source=source if has_target else None,
                )
            )
        paths[split] = write_manifest(out / f"{split}.jsonl", utts)
        _write_clips(out / f"{split}.clips.jsonl", [records[p.id] for p in split_plans])
    return paths


def _render_all(todo: list[ClipPlan], backend: str, out: Path, cfg: SynthConfig, progress: bool) -> dict[str, dict[str, Any]]:
    """Render the clips (``cfg.workers`` processes, or this one for 0); returns their records by id."""
    from ...progress import progress_bar

    t0 = time.perf_counter()
    records: dict[str, dict[str, Any]] = {}
    bar = progress_bar(total=len(todo), unit="clip", desc="synthesising", enabled=progress)
    if cfg.workers == 0:
        renderer = _Renderer(backend, out, cfg.sample_rate)
        for plan in todo:
            records[plan.id] = renderer(plan)
            bar.update()
    else:
        # spawn: a clean interpreter per worker (the caller may hold torch/OpenMP threads, which fork copies
        # badly); an executor, unlike mp.Pool, fails instead of hanging when a worker cannot start
        ctx, initargs = mp.get_context("spawn"), (backend, str(out), cfg.sample_rate)
        with ProcessPoolExecutor(
            min(cfg.workers, len(todo)), mp_context=ctx, initializer=_worker_init, initargs=initargs
        ) as pool:
            futures = [pool.submit(_worker_render, plan) for plan in todo]
            try:
                for fut in as_completed(futures):
                    rec = fut.result()
                    records[rec["id"]] = rec
                    bar.update()
            except BrokenProcessPool as err:
                raise RuntimeError(
                    "a synthesis worker process died; when calling synthesize_corpus from a script, put the call "
                    "under `if __name__ == '__main__':` (worker processes are spawned and import the main module)"
                ) from err
            finally:
                for fut in futures:
                    fut.cancel()
    bar.close()
    wall = time.perf_counter() - t0
    audio_s = sum(r["duration"] for r in records.values())
    log.info(
        "synthesised %d clips (%.1f s of audio) in %.1f s: %.1f clips/s, %.0fx real time",
        len(records),
        audio_s,
        wall,
        len(records) / wall,
        audio_s / wall,
    )
    return records


def _translate(texts: list[str], fn: Callable[[list[str]], list[str]], batch_size: int, progress: bool) -> dict[str, str]:
    from ...progress import progress_bar

    out: dict[str, str] = {}
    for i in progress_bar(range(0, len(texts), batch_size), desc="translating", unit="batch", enabled=progress):
        batch = texts[i : i + batch_size]
        result = list(fn(batch))
        if len(result) != len(batch) or not all(isinstance(r, str) for r in result):
            raise ValueError(f"translate_fn returned {len(result)} items for a batch of {len(batch)}; expected one string each")
        out.update(zip(batch, result))
    return out
