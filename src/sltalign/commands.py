"""Implementations of the CLI subcommands (cli.py parses; this module does the work with library calls)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def demo(args: Any) -> int:
    from .demo import run_demo

    results = run_demo(Path(args.out), quick=args.quick, minutes=args.minutes, workers=args.workers, recipe=args.recipe)
    aligned, cascade = results["aligned"], results["cascade"]
    print(
        f"aligned  BLEU {aligned['bleu']:.1f} chrF {aligned['chrf']:.1f}   cascade BLEU {cascade['bleu']:.1f} chrF {cascade['chrf']:.1f}"
    )
    print(f"report: {Path(args.out) / 'report.md'}   connector: {Path(args.out) / 'connector'}")
    return 0


def data(source: str, args: Any) -> int:
    from .data.manifest import write_manifest

    out = Path(args.out)
    if source == "synth":
        from .data.synth import SynthConfig, synthesize_corpus

        translate_fn = None
        if not args.translations:
            from .foundation import load_translator

            mt = load_translator(args.mt)
            translate_fn = lambda texts: mt.translate_text(texts, beam=1)  # noqa: E731
        from .data.synth.config import cli_fields

        # the command's options are SynthConfig's fields (cli._synth_parser builds them from the class)
        cfg = SynthConfig(
            **{f.name: getattr(args, f.name) for f in cli_fields()},
            translation_source=None if args.translations else f"mt:{args.mt}",
        )
        paths = synthesize_corpus(cfg, out, translate_fn=translate_fn)
        for split, p in paths.items():
            print(f"{split}: {p}")
        return 0
    if source == "realspeech":
        from .data.realspeech import build_realspeech_manifest

        print(build_realspeech_manifest(out, subsets=args.subsets, split=getattr(args, "split", "test")))
        return 0
    if source == "acted":
        from .data.acted import LabelFilter, build_acted_manifest

        if args.clips < 1:
            raise ValueError(f"--clips: expected a number of clips >= 1, got {args.clips}")
        manifest = build_acted_manifest(
            out,
            clips=args.clips,
            seed=args.seed,
            asr=args.asr,
            table=args.table,
            label_filter=LabelFilter(min_logprob=args.min_logprob),
        )
        print(manifest)
        return 0
    if source == "gettext":
        from .data.gettext_corpus import gettext_pairs, write_parallel

        pairs = gettext_pairs(args.root, args.locale, domains=args.domains)
        paths = write_parallel(pairs, out, target_lang=args.target_lang)
        n_domains = len({p.domain for p in pairs})
        print(f"{len(pairs)} pairs from {n_domains} catalogs -> {paths['en']}, {paths[args.target_lang]}")
        print(f"next: sltalign data synth --sentences {paths['en']} --translations {paths[args.target_lang]} --out CORPUS")
        return 0
    from .data import corpora

    if source in ("kaldi", "how2"):
        utts = corpora.kaldi_to_manifest(Path(args.data_dir), source_text=args.source_text, target_text=args.target_text)
    elif source == "mustc":
        utts = corpora.mustc_to_manifest(Path(args.split_dir), target_lang=args.target_lang)
    elif source == "covost":
        utts = corpora.covost_to_manifest(Path(args.tsv), clips_dir=Path(args.clips))
    else:  # pragma: no cover - the parser only offers the sources above
        raise ValueError(f"unknown data source {source!r}")
    path = write_manifest(out / "manifest.jsonl", utts)
    print(f"{len(utts)} utterances -> {path}")
    return 0


def train(args: Any) -> int:
    from .config import load_config
    from .train import train as run

    cfg = load_config(None if args.config == "defaults" else args.config, list(args.overrides or []))
    if getattr(args, "show_config", False):
        import yaml

        from .config import to_dict

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True), end="")
        return 0
    summary = run(cfg)
    print(json.dumps({k: v for k, v in summary.items() if k != "parameters"}, indent=2))
    return 0


def _decoding_overrides(args: Any) -> dict[str, Any]:
    """Decoding options given on the command line (None: keep the checkpoint's)."""
    out: dict[str, Any] = {}
    if args.max_piece_seconds is not None:
        out["max_piece_seconds"] = args.max_piece_seconds or None
    pause = getattr(args, "sentence_pause_seconds", None)
    if pause is not None:
        out["sentence_pause_seconds"] = pause if pause >= 0 else None
    return out


def evaluate(args: Any) -> int:
    from .data.manifest import read_manifest
    from .evaluate import write_results
    from .systems import run_aligned, run_cascade, run_mt_on_gold

    chosen = [bool(args.model), args.cascade, args.mt_on_gold]
    if sum(chosen) != 1:
        raise ValueError("evaluate: give exactly one of --model CKPT, --cascade or --mt-on-gold")
    utts = read_manifest(args.manifest, require=("translation",))
    refs = [u.translation for u in utts]
    extra: dict[str, Any] = {
        "manifest": str(args.manifest),
        "reference_source": sorted({u.translation_source or "unknown" for u in utts}),
    }
    _apply_threads(args)
    if args.model:
        from .api import SpeechTranslator

        st = SpeechTranslator.from_pretrained(args.model, device=args.device, **_decoding_overrides(args))
        hyps, timings = run_aligned(st, utts, beam=args.beam, batch_size=args.batch_size)
        extra.update(system="aligned", model=str(args.model))
    elif args.cascade:
        from .cascade import Cascade
        from .foundation import load_translator

        from .api import resolve_device

        dev = resolve_device(args.device)  # faster-whisper runs on "cpu" or "cuda"; the MT stays on the CPU
        cascade = Cascade(
            args.asr, load_translator(args.mt), device=dev.type, **({"cpu_threads": args.threads} if args.threads else {})
        )
        if args.beam:
            cascade.beam = args.beam
        hyps, timings, _ = run_cascade(cascade, utts)
        extra.update(system="cascade", asr=args.asr, mt=args.mt)
    else:
        from .foundation import load_translator

        hyps, timings = run_mt_on_gold(load_translator(args.mt), utts, beam=args.beam or 4)
        extra.update(system="mt_on_gold", mt=args.mt)
    extra["timings"] = timings
    metrics = write_results(
        Path(args.out), extra["system"], [u.id for u in utts], hyps, refs, [u.duration for u in utts], extra=extra
    )
    print(f"BLEU {metrics['bleu']:.2f}  chrF {metrics['chrf']:.2f}  n={metrics['n']}  -> {Path(args.out) / 'metrics.json'}")
    return 0


def _apply_threads(args: Any) -> None:
    """--threads: torch's intra-op CPU threads for this process."""
    n = getattr(args, "threads", None)
    if n is not None:
        if n < 1:
            raise ValueError(f"--threads: expected a number >= 1, got {n}")
        import torch

        torch.set_num_threads(n)


#: what a directory argument's audio files end with (what soundfile and PyAV decode); other files are skipped
AUDIO_SUFFIXES = (
    ".wav",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
    ".m4a",
    ".aac",
    ".webm",
    ".mp4",
    ".mka",
    ".aif",
    ".aiff",
    ".au",
    ".sph",
    ".wma",
    ".raw",
    ".pcm",
)


def expand_audio_args(items: list[str]) -> list[Path]:
    """Audio arguments -> files, in order: a file as given, a directory's audio files (sorted, not recursive,
    other files skipped), a glob's matches (sorted; ``**`` recurses). A directory or glob that finds nothing is
    a clear error, and so are file names none of which exists; a missing file beside others that exist stays in
    the list, so that translate translates the rest and names it among the inputs it could not read."""
    import glob

    out: list[Path] = []
    missing: list[str] = []
    for a in items:
        p = Path(a).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no audio files in {a} (looked for {', '.join(AUDIO_SUFFIXES)})")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        elif glob.has_magic(a):
            found = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
            if not found:
                raise FileNotFoundError(f"no file matches {a}")
            out.extend(found)
        else:
            missing.append(a)
            out.append(p)
    if missing and len(missing) == len(out):
        raise FileNotFoundError(f"audio file(s) not found: {', '.join(missing)}")
    return out


def _output_stems(paths: list[Path]) -> list[str]:
    """DIR/<stem>.<fmt> names as whisper writes them; two inputs that would write the same file are an error."""
    stems = [p.stem for p in paths]
    seen: dict[str, Path] = {}
    for p, s in zip(paths, stems):
        if s in seen and seen[s] != p:
            raise ValueError(f"{seen[s]} and {p} would both write {s}.*: translate them into separate --output_dir")
        seen[s] = p
    return stems


def translate(args: Any) -> int:
    from .api import SpeechTranslator
    from .outputs import parse_formats, write_outputs

    if bool(args.audio) == bool(args.manifest):
        raise ValueError("translate: give audio files or --manifest M.jsonl (not both)")
    if args.out and not args.manifest:
        raise ValueError("translate: --out is for --manifest (hyps.jsonl); for audio files use -o/--output_dir DIR")
    if args.output_format and not args.output_dir:
        raise ValueError(
            "translate: --output_format needs --output_dir DIR (without it, one translation per line goes to stdout)"
        )
    if args.output_dir and args.manifest:
        raise ValueError("translate: -o/--output_dir is for audio files; with --manifest use --out hyps.jsonl")
    formats = parse_formats(args.output_format or "all") if args.output_dir else []
    _apply_threads(args)
    # the model first: a wrong --model or decoding option is named before the inputs are looked at
    st = SpeechTranslator.from_pretrained(args.model, device=args.device, **_decoding_overrides(args))
    paths = expand_audio_args(list(args.audio)) if args.audio else []
    stems = _output_stems(paths) if formats else []
    if paths and not formats:  # today's behaviour: one line per input on stdout (an empty one for a bad input)
        with _skipped_reported_below():
            hyps = st.translate([str(p) for p in paths], beam=args.beam, batch_size=args.batch_size, progress=True, errors="skip")
        for h in hyps:
            print(h if h is not None else "")
        return _report_skipped(paths, st.last_errors)
    if paths:
        with _skipped_reported_below():
            results = st.translate_segments(
                [str(p) for p in paths], beam=args.beam, batch_size=args.batch_size, progress=True, errors="skip"
            )
        described = st.describe()
        written = []
        for p, stem, tr in zip(paths, stems, results):
            if tr is not None:
                written += write_outputs(tr, args.output_dir, stem, formats, {"audio": str(p), **described})
        print(f"wrote {len(written)} file(s) for {len(paths)} input(s) to {args.output_dir}", file=sys.stderr)
        return _report_skipped(paths, st.last_errors)
    from .data.manifest import read_manifest
    from .systems import run_aligned

    utts = read_manifest(args.manifest, require=())
    hyps, _ = run_aligned(st, utts, beam=args.beam, batch_size=args.batch_size)
    lines = [json.dumps({"id": u.id, "hyp": h}, ensure_ascii=False) for u, h in zip(utts, hyps)]
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
    else:
        print("\n".join(lines))
    return 0


@contextlib.contextmanager
def _skipped_reported_below() -> Iterator[None]:
    """The API's warning for a skipped input, silenced where _report_skipped names it as an error line."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"input \d+ .* skipped: ")
        yield


def _report_skipped(paths: list, errors: dict[int, str]) -> int:
    """Inputs translate(errors="skip") could not read: one stderr line each, naming it; exit status 1 if any
    (every good input was still translated)."""
    for i in sorted(errors):
        print(f"sltalign translate: error: {errors[i]}", file=sys.stderr)
    if errors:
        print(
            f"sltalign translate: {len(errors)} of {len(paths)} input(s) could not be translated (named above)", file=sys.stderr
        )
    return 1 if errors else 0


def ensemble(args: Any) -> int:
    from .ensemble import make_ensemble

    out = make_ensemble(list(args.checkpoints), args.out, combine=args.combine)
    print(f"ensemble of {len(args.checkpoints)} connectors: {out}")
    return 0


def info(args: Any) -> int:
    from .checkpoint import read_config
    from .model_card import read_model_card, render_card

    cfg = read_config(args.model)
    keys = (
        "sltalign_version",
        "speech_encoder",
        "translator",
        "connector",
        "arrangement",
        "prompt",
        "ctc",
        "ctc_head",
        "compression",
        "decoding",
        "parameters",
        "training",
        "ensemble",
    )
    summary = {k: cfg.get(k) for k in keys if k != "ensemble" or cfg.get(k)}
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
        return 0
    card = read_model_card(args.model)
    if card is None:  # written before checkpoints carried cards: the same card from config.json alone
        card = (
            render_card(cfg, name=Path(args.model).name)
            + "\n(no README.md in the checkpoint: this card is made from its config.json)\n"
        )
    print(card.rstrip("\n"))
    print("\n## config.json (summary)\n```json\n" + json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n```")
    return 0


def serve(args: Any) -> int:
    from .serve import _require_server_extra, serve as run

    try:
        _require_server_extra()
    except ImportError as e:
        raise ValueError(str(e)) from None  # a missing extra is the user's to fix: one line
    if not 0 < args.port < 65536:
        raise ValueError(f"--port: expected 1-65535, got {args.port}")
    if args.max_queue < 0 or args.max_upload_mb <= 0 or args.max_seconds <= 0:
        raise ValueError("--max_queue must be >= 0, --max_upload_mb and --max_seconds > 0")
    _apply_threads(args)
    decoding = _decoding_overrides(args)
    if args.beam is not None:
        decoding["beam"] = args.beam
    run(
        args.model,
        host=args.host,
        port=args.port,
        device=args.device,
        language=args.language,
        max_upload_mb=args.max_upload_mb,
        max_seconds=args.max_seconds,
        max_queue=args.max_queue,
        **decoding,
    )
    return 0
