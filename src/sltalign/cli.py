"""The command line: thin subcommands over library functions of the same names.

    sltalign demo [--out DIR] [--quick]
    sltalign data synth --out DIR [--n_train N ...] | kaldi | mustc | covost | realspeech | gettext
    sltalign train CONFIG [key=value ...]
    sltalign ensemble --out DIR CKPT CKPT [CKPT ...] [--combine medoid|vote|mean_probability]   (one checkpoint)
    sltalign evaluate --model CKPT --manifest M.jsonl --out DIR
    sltalign evaluate --cascade --asr NAME --mt NAME --manifest M.jsonl --out DIR
    sltalign evaluate --mt-on-gold --mt NAME --manifest M.jsonl --out DIR
    sltalign translate --model CKPT AUDIO|DIR|GLOB... [-o DIR -f txt|json|srt|vtt|tsv|all] | --manifest M.jsonl --out hyps.jsonl
    sltalign serve --model CKPT [--host 127.0.0.1 --port 8000]   (OpenAI-compatible HTTP API and a web page)
    sltalign info --model CKPT            (model card and parameter report of a checkpoint)

-v/--verbose, -q/--quiet and --progress may stand anywhere on the command line.

Errors a user can fix (bad paths, bad configs, bad manifests) print one clear line and exit with status 2;
they are never a traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

from jsonargparse import ArgumentParser

from . import __version__

#: ``sltalign demo --recipe`` names (demo.RECIPES holds them; repeated here so that --help imports no model code)
DEMO_RECIPE_HELP = {
    "phones": "a connector on the Whisper encoder, phone CTC read through a lexicon (the paper's arrangement; default)",
    "soft_cascade": "a connector on the Whisper decoder's states along its own hypothesis: the cascade plus learned corrections",
}
DEMO_RECIPES = tuple(DEMO_RECIPE_HELP)
PIECE_HELP = "split audio longer than this at pauses (default: the checkpoint's; 0: only at the encoder's window)"
PAUSE_HELP = (
    "where audio is split, a pause this long (s) always ends a piece and longer pauses are cut first "
    "(default: the checkpoint's, else 0.2; a negative value packs pieces up to the limit instead)"
)


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="sltalign", description="End-to-end speech translation from frozen pretrained models.", version=__version__
    )
    # -v/-q/--progress are also accepted after the subcommand (main takes them out of argv before parsing)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level: model loading and compute timings")
    p.add_argument("-q", "--quiet", action="store_true", help="errors only: no warnings, no progress")
    p.add_argument(
        "--progress",
        action="store_true",
        help="progress bars even when stderr is not a terminal (default there: a plain line every 30 s)",
    )
    sub = p.add_subcommands(dest="command")

    demo = ArgumentParser(description="Offline end-to-end run on the packaged models: synthesise, cache, train, evaluate.")
    demo.add_argument("--out", type=str, default="runs/demo", help="output directory")
    demo.add_argument("--quick", action="store_true", help="whisper-tiny.en and a few steps (about 5 minutes)")
    demo.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="training budget in minutes (default: what ~27 minutes leave after synthesis and encoding, capped; quick: 1.5)",
    )
    demo.add_argument("--workers", type=int, default=2, help="processes for speech synthesis")
    demo.add_argument(
        "--recipe",
        type=Literal[DEMO_RECIPES],
        default="phones",  # type: ignore[valid-type]
        help="what to train: " + "; ".join(f"{k}: {v}" for k, v in DEMO_RECIPE_HELP.items()),
    )
    sub.add_subcommand("demo", demo, help="offline end-to-end demo")

    data = ArgumentParser(description="Build manifests (JSONL: audio, duration, transcript, translation) from a source below.")
    sub.add_subcommand(
        "data", data, help="build manifests: synthesise speech or convert a corpus"
    )  # jsonargparse: parents before their subcommands
    _add_data_sources(data)

    train = ArgumentParser(description="Train a connector. CONFIG is YAML (see configs/); overrides are dotted key=value.")
    train.add_argument("config", type=str, help="a YAML preset (configs/*.yaml) or 'defaults' for the built-in defaults alone")
    train.add_argument(
        "overrides", type=str, nargs="*", default=[], help="dotted key=value overrides, e.g. stages.0.lr=3e-4 out=runs/x"
    )
    train.add_argument(
        "--show_config",
        action="store_true",
        help="print every config key with its value (the preset, the overrides, the defaults of the rest) and exit",
    )
    sub.add_subcommand("train", train, help="train a connector (resumable)")

    ens = ArgumentParser(
        description="Join phone connectors of one recipe (other seeds or data, same foundations) into one checkpoint "
        "directory that combines what they hear before the first one's MT input."
    )
    ens.add_argument("checkpoints", type=str, nargs="+", help="two or more connector checkpoint directories (phone heads)")
    ens.add_argument("--out", type=str, required=True, help="the ensemble's directory (a checkpoint: translate, evaluate, serve)")
    ens.add_argument(
        "--combine",
        type=Literal["medoid", "vote", "mean_probability"],
        default="medoid",
        help="medoid: each member's transcript read, the one nearest the others kept (any members); vote: a word-by-word "
        "majority of the members' transcripts (ROVER); mean_probability: "
        "frame posteriors averaged (snapshots of one training run only: other seeds' CTC spikes fall on other frames)",
    )
    sub.add_subcommand("ensemble", ens, help="join phone connectors into one checkpoint that combines what they hear")

    sub.add_subcommand("evaluate", _evaluate_parser(), help="score a system on a manifest")
    sub.add_subcommand("translate", _translate_parser(), help="translate audio (txt/json/srt/vtt/tsv outputs)")
    sub.add_subcommand("info", _info_parser(), help="describe a checkpoint")
    sub.add_subcommand("serve", _serve_parser(), help="OpenAI-compatible HTTP server and web page")
    return p


def _add_data_sources(data: ArgumentParser) -> None:
    """``data``'s subcommands: one per source of manifests."""
    dsub = data.add_subcommands(dest="source")
    synth = _synth_parser()
    dsub.add_subcommand("synth", synth, help="synthesise an English speech corpus with TTS voices (train/dev/test)")
    # How2 is usually prepared as Kaldi data dirs: `data how2` is `data kaldi` under the corpus's name.
    dsub.add_subcommand("kaldi", _kaldi_parser(), help="a Kaldi-style data dir (wav.scp, segments, text files)")
    dsub.add_subcommand("how2", _kaldi_parser(), help="How2, prepared as Kaldi data dirs (same as kaldi)")
    mustc = ArgumentParser(description="MuST-C split dir (wav/, txt/<split>.yaml, .en, .<tgt>).")
    mustc.add_argument("split_dir", type=str, help="the split directory (e.g. en-pt/data/dev)")
    mustc.add_argument("--out", type=str, required=True, help="directory for manifest.jsonl")
    mustc.add_argument("--target_lang", type=str, default="pt", help="suffix of the target text file (.pt)")
    dsub.add_subcommand("mustc", mustc, help="a MuST-C split (talks with segment YAML and text)")
    covost = ArgumentParser(description="CoVoST 2 TSV + clips dir.")
    covost.add_argument("tsv", type=str, help="a CoVoST 2 split TSV (path, sentence, translation)")
    covost.add_argument("--clips", type=str, required=True, help="the Common Voice clips directory")
    covost.add_argument("--out", type=str, required=True, help="directory for manifest.jsonl")
    dsub.add_subcommand("covost", covost, help="CoVoST 2 (a TSV and its clips directory)")
    real = ArgumentParser(description="The project's real-speech test set, or its small dev set (human pt-BR references).")
    real.add_argument("--out", type=str, required=True, help="directory for the manifest and its audio")
    real.add_argument(
        "--subsets",
        type=list[str] | None,
        default=None,
        help="among librivox, cards, commands, digits, ivr, wz2100, alsa (default: all in the split)",
    )
    real.add_argument(
        "--split",
        type=Literal["test", "dev"],
        default="test",
        help="test (default), or dev: disjoint recordings for checkpoint selection, never training audio",
    )
    dsub.add_subcommand("realspeech", real, help="the project's real recordings (121 test, 31 dev) with human pt-BR references")
    acted = ArgumentParser(
        description="People's voices to train on: the voiced dialogue of the freeware game Flight of the Amazon Queen "
        "(Debian flight-of-the-amazon-queen: 6,745 lines, 278 min, its cast of voice actors), transcribed by Whisper "
        "and filtered by Whisper's confidence. Training data only (pseudo-labels), never scoring references. Resumable."
    )
    acted.add_argument("--out", type=str, required=True, help="directory for manifest.jsonl, labels.jsonl and audio/")
    acted.add_argument("--clips", type=int, default=2000, help="how many clips to label (a seeded random choice)")
    acted.add_argument("--seed", type=int, default=0, help="which clips: the choice's seed")
    acted.add_argument("--asr", type=str, default="packaged:whisper-base", help="the recogniser that transcribes them")
    acted.add_argument("--min_logprob", type=float, default=-0.7, help="drop transcripts Whisper is less sure of than this")
    acted.add_argument("--table", type=str, default=None, help="the game's queen.1c (default: where Debian installs it)")
    dsub.add_subcommand("acted", acted, help="people's voices to train on: a voiced game's dialogue, transcribed by Whisper")
    gt = ArgumentParser(
        description="English -> target pairs from installed gettext catalogs (software UI strings, human translations)."
    )
    gt.add_argument("--out", type=str, required=True, help="directory for en.txt, <lang>.txt and sources.tsv")
    gt.add_argument("--locale", type=str, default="pt_BR", help="the catalogs' locale directory name")
    gt.add_argument("--root", type=str, default="/usr/share/locale", help="where the locale directories are")
    gt.add_argument("--domains", type=list[str] | None, default=None, help="only these catalogs (file stems)")
    gt.add_argument("--target_lang", type=str, default="pt", help="name of the target file: <target_lang>.txt")
    dsub.add_subcommand("gettext", gt, help="en/pt-BR text pairs from installed gettext catalogs (for data synth)")


def _synth_parser() -> ArgumentParser:
    """``data synth``: --out, --mt, and one option per ``SynthConfig`` field marked for the command line (type,
    default and help from the dataclass)."""
    import typing

    from .data.synth.config import SynthConfig, cli_fields

    q = ArgumentParser(description="Synthesise an English speech corpus with TTS; targets by the frozen MT or a parallel file.")
    q.add_argument("--out", type=str, required=True, help="directory for the corpus (resumable: a rerun continues it)")
    q.add_argument("--mt", type=str, default="packaged:bergamot-en-pt", help="MT for distilled targets when no --translations")
    hints = typing.get_type_hints(SynthConfig)
    for f in cli_fields():
        default = list(f.default) if isinstance(f.default, tuple) and "..." in str(hints[f.name]) else f.default
        q.add_argument(f"--{f.name}", type=hints[f.name], default=default, help=f.metadata["cli"])
    return q


def _evaluate_parser() -> ArgumentParser:
    ev = ArgumentParser(description="Corpus BLEU/chrF (sacrebleu) of a connector, the cascade, or MT on gold transcripts.")
    ev.add_argument("--model", type=str | None, default=None, help="connector checkpoint directory (score the aligned model)")
    ev.add_argument("--cascade", action="store_true", help="score the cascade instead: --asr transcribes, --mt translates")
    ev.add_argument(
        "--mt_on_gold",
        "--mt-on-gold",
        action="store_true",
        help="score --mt on the manifest's gold transcripts (the ceiling of anything built on that MT)",
    )
    ev.add_argument("--asr", type=str, default="packaged:whisper-base", help="the cascade's speech recogniser (a model name)")
    ev.add_argument(
        "--mt", type=str, default="packaged:bergamot-en-pt", help="the cascade's or MT-on-gold's translator (a model name)"
    )
    ev.add_argument("--manifest", type=str, required=True, help="JSONL manifest with audio and reference translations")
    ev.add_argument("--out", type=str, required=True, help="directory for metrics.json and hyps.jsonl")
    ev.add_argument("--beam", type=int | None, default=None, help="beam size (default: the checkpoint's; cascade and MT: 4)")
    ev.add_argument("--batch_size", type=int, default=8, help="pieces translated together")
    ev.add_argument("--max_piece_seconds", type=float | None, default=None, help=PIECE_HELP)
    ev.add_argument("--sentence_pause_seconds", type=float | None, default=None, help=PAUSE_HELP)
    _add_compute_flags(ev)
    return ev


def _translate_parser() -> ArgumentParser:
    tr = ArgumentParser(
        description="Translate audio files, directories, globs or a manifest. Without -o: one line per "
        "input on stdout; with -o DIR: one file per input and format (whisper's names)."
    )
    tr.add_argument("--model", type=str, required=True, help="connector checkpoint directory")
    tr.add_argument(
        "audio",
        type=str,
        nargs="*",
        default=[],
        help="audio files, directories (their audio files) or quoted globs ('talks/*.mp3')",
    )
    tr.add_argument(
        "--manifest", type=str | None, default=None, help="translate a JSONL manifest's entries instead (writes id + hyp)"
    )
    tr.add_argument("--out", type=str | None, default=None, help="with --manifest: hyps.jsonl to write (default: stdout)")
    tr.add_argument(
        "-o",
        "--output_dir",
        type=str | None,
        default=None,
        help="write DIR/<input name>.<format> for each input (timestamps per segment)",
    )
    tr.add_argument(
        "-f",
        "--output_format",
        type=str | None,
        default=None,
        help="txt, json, srt, vtt, tsv, all, or several comma-separated (default with -o: all)",
    )
    tr.add_argument("--beam", type=int | None, default=None, help="beam size (default: the checkpoint's)")
    tr.add_argument("--batch_size", type=int, default=8, help="pieces translated together")
    tr.add_argument("--max_piece_seconds", type=float | None, default=None, help=PIECE_HELP)
    tr.add_argument("--sentence_pause_seconds", type=float | None, default=None, help=PAUSE_HELP)
    _add_compute_flags(tr)
    return tr


def _info_parser() -> ArgumentParser:
    info = ArgumentParser(
        description="What a connector checkpoint is: its model card (README.md), foundations, "
        "training, dev scores, decoding defaults and parameter counts."
    )
    info.add_argument("--model", type=str, required=True, help="connector checkpoint directory")
    info.add_argument("--json", action="store_true", help="print the config summary as JSON only (no model card)")
    return info


def _serve_parser() -> ArgumentParser:
    sv = ArgumentParser(
        description="Serve a connector over HTTP: POST /v1/audio/translations (OpenAI-compatible: json, text, "
        "srt, vtt, verbose_json), GET /health, and a web page at / (upload or record, "
        "segments, SRT/VTT downloads). Needs the server extra: pip install 'sltalign[server]'."
    )
    sv.add_argument("--model", type=str, required=True, help="connector checkpoint directory (loaded once)")
    sv.add_argument(
        "--host",
        type=str,
        default="127.0.0.1",
        help="address to bind (default: this machine only; 0.0.0.0 exposes it to the network)",
    )
    sv.add_argument("--port", type=int, default=8000, help="TCP port")
    sv.add_argument(
        "--language",
        type=str | None,
        default=None,
        help="the model's target language code, where the checkpoint's translator name does not say it",
    )
    sv.add_argument("--max_upload_mb", type=float, default=25.0, help="largest upload accepted (MB; OpenAI's limit is 25)")
    sv.add_argument("--max_seconds", type=float, default=600.0, help="longest audio accepted per request (s)")
    sv.add_argument("--max_queue", type=int, default=32, help="requests that may wait for the model; more get 503")
    sv.add_argument("--beam", type=int | None, default=None, help="beam size (default: the checkpoint's)")
    sv.add_argument("--max_piece_seconds", type=float | None, default=None, help=PIECE_HELP)
    sv.add_argument("--sentence_pause_seconds", type=float | None, default=None, help=PAUSE_HELP)
    _add_compute_flags(sv)
    return sv


def _add_compute_flags(q: ArgumentParser) -> None:
    """--device and --threads, the same on every subcommand that runs models."""
    q.add_argument("--device", type=str, default="cpu", help="where the model runs: cpu, cuda, cuda:N, mps or auto")
    q.add_argument("--threads", type=int | None, default=None, help="CPU threads for torch (default: torch's choice)")


def _kaldi_parser() -> ArgumentParser:
    q = ArgumentParser(description="Kaldi-style data dir (How2): wav.scp, optional segments, text files per language.")
    q.add_argument("data_dir", type=str, help="the data directory (wav.scp, optional segments, text files)")
    q.add_argument("--out", type=str, required=True, help="directory for manifest.jsonl")
    q.add_argument("--source_text", type=str, default="text.en", help="file of English transcripts (utt-id text)")
    q.add_argument("--target_text", type=str, default="text.pt", help="file of translations (utt-id text)")
    return q


GLOBAL_FLAGS = {"-v": "verbose", "--verbose": "verbose", "-q": "quiet", "--quiet": "quiet", "--progress": "progress"}


def _take_global_flags(argv: list[str]) -> tuple[list[str], set[str]]:
    """Take -v/-q/--progress out of argv wherever they stand (before a bare "--"), so that
    `sltalign translate ... -v` works as well as `sltalign -v translate ...`."""
    rest, seen = [], set()
    for i, a in enumerate(argv):
        if a == "--":
            rest.extend(argv[i:])
            break
        if a in GLOBAL_FLAGS:
            seen.add(GLOBAL_FLAGS[a])
        else:
            rest.append(a)
    return rest, seen


def main(argv: list[str] | None = None) -> int:
    argv, flags = _take_global_flags(list(sys.argv[1:] if argv is None else argv))
    args = _parser().parse_args(argv)
    verbose, quiet = "verbose" in flags or args.verbose, "quiet" in flags or args.quiet
    level = logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("sltalign").setLevel(level)  # also where logging was set up before (an embedding program, tests)
    from . import progress

    progress.set_mode("off" if quiet else "bar" if ("progress" in flags or args.progress) else "auto")
    if quiet:
        import warnings

        warnings.filterwarnings("ignore")

    try:
        cmd = args.command
        sub = args[cmd]
        # paths first, before any model code is imported (transformers alone takes ~2 s, a checkpoint's
        # foundations ~10 s): a mistyped path fails in well under a second, with the loader's own message
        from .preflight import check_command_paths

        check_command_paths(cmd, sub)
        _check_hub_models(sub)
        from transformers.utils import logging as hf_logging

        from . import commands

        hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars would bury our own progress
        if cmd == "data":
            return commands.data(sub.source, sub[sub.source])
        return getattr(commands, cmd)(sub)
    except (ValueError, FileNotFoundError, LookupError) as e:
        # Errors about the user's input: one clear line, no traceback.
        print(f"sltalign {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # The machine's refusals (a full disk, a file where a directory should be, permissions): one line
        # naming the path, never a traceback.
        print(f"sltalign {args.command}: error: {_os_error(e)}", file=sys.stderr)
        return 2


def _check_hub_models(ns) -> None:
    """Hub ids given as --asr/--mt fail at once without a network (one line), not after a minute of retries;
    checkpoints' own models are checked where they load (checkpoint.build_model), train's in train()."""
    from .hub import check_hub_specs

    def walk(node) -> list:
        if hasattr(node, "as_dict"):
            node = node.as_dict()
        found = []
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("asr", "mt") and isinstance(v, str):
                    found.append(v)
                elif isinstance(v, dict) or hasattr(v, "as_dict"):
                    found.extend(walk(v))
        return found

    check_hub_specs(walk(ns))


def _os_error(e: OSError) -> str:
    """An OSError as '<path>: <what the system said>; <what was expected>' where it names a path."""
    import errno

    what = e.strerror or str(e) or type(e).__name__
    path = e.filename if e.filename is not None else None
    hint = {
        errno.EEXIST: "expected a directory or a new path, not an existing file",
        errno.ENOTDIR: "a path component is a file; expected a directory",
        errno.ENOSPC: "free some space; the previous checkpoint, if any, is intact",
        errno.EACCES: "check the permissions",
    }.get(e.errno or -1)
    if path is None:
        return " ".join(str(e).split()) + (f"; {hint}" if hint else "")
    return f"{path}: {what}" + (f"; {hint}" if hint else "")


if __name__ == "__main__":
    sys.exit(main())
