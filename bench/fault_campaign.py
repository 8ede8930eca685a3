"""The bad-input and fault campaign: tries each case that once failed and prints a table (case, outcome).

    python3 bench/fault_campaign.py            # about 2-3 minutes on 2 CPU cores (tiny random models)
    python3 bench/fault_campaign.py --kills 3  # also SIGKILL 3 real `sltalign train` processes at random moments

Everything runs on tiny random foundations written to a temporary directory (the same builders the tests use),
through the command line (``sltalign.cli.main``: exit status and stderr as a user sees them) or the public API.
A case passes when the outcome is the defined one: a clear one-line error (exit 2) naming the file, line, field
or key, or a defined result with a warning; never a traceback, never lost training. Exit status: 0 when every
case passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.foundation.tiny_models: the tiny model builders

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HF_MISSING = "hf:sltalign-campaign/no-such-model"
TEXTS = [
    ("the cat sat on the mat", "o gato está na casa"),
    ("a dog runs in the park", "o cão corre no parque"),
    ("we like green tea", "nós gostamos de chá verde"),
    ("the house is very old", "a casa é muito velha"),
]


def speechlike(seconds: float, seed: int = 0, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wav = 0.3 * np.sin(2 * np.pi * (180 + 40 * seed) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (wav + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


class Campaign:
    """Tiny foundations, a tiny corpus and a tiny trained checkpoint, shared by the cases."""

    def __init__(self, work: Path) -> None:
        from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

        from sltalign.data.manifest import Utterance, write_manifest
        from tests.foundation.tiny_models import make_tiny_marian

        self.work = work
        torch.manual_seed(0)
        self.whisper = work / "whisper"
        wcfg = WhisperConfig(
            vocab_size=100,
            num_mel_bins=80,
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_source_positions=1500,
            max_target_positions=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        )
        WhisperForConditionalGeneration(wcfg).save_pretrained(self.whisper)
        WhisperFeatureExtractor(feature_size=80).save_pretrained(self.whisper)
        self.wide_whisper = work / "whisper48"
        WhisperForConditionalGeneration(WhisperConfig(**{**wcfg.to_dict(), "d_model": 48})).save_pretrained(self.wide_whisper)
        WhisperFeatureExtractor(feature_size=80).save_pretrained(self.wide_whisper)
        self.marian = make_tiny_marian(work)
        corpus = work / "corpus"
        corpus.mkdir()
        utts = []
        for i in range(8):
            wav = speechlike(0.6 + 0.1 * (i % 4), seed=i)
            sf.write(corpus / f"u{i}.wav", wav, 16000)
            en, pt = TEXTS[i % 4]
            utts.append(
                Utterance(
                    id=f"u{i}",
                    audio=str(corpus / f"u{i}.wav"),
                    duration=len(wav) / 16000,
                    transcript=en,
                    translation=pt,
                    translation_source="human",
                )
            )
        self.train_m = write_manifest(corpus / "train.jsonl", utts)
        self.dev_m = write_manifest(corpus / "dev.jsonl", utts[:3])
        self.good_wav = corpus / "u1.wav"
        self.config = work / "tiny.yaml"
        self.config.write_text(
            json.dumps(
                {  # JSON is YAML
                    "model": {
                        "speech_encoder": str(self.whisper),
                        "translator": str(self.marian),
                        "connector": "ste",
                        "connector_preset": None,
                        "ctc": True,
                        "connector_args": {"d": 32, "layers": 1, "heads": 2, "ffn": 64, "conv_channels": 32, "dropout": 0.0},
                    },
                    "data": {
                        "train": str(self.train_m),
                        "dev": str(self.dev_m),
                        "cache_dir": str(work / "cache"),
                        "batch_size": 2,
                        "max_frames": 100000,
                    },
                    "num_threads": 1,
                    "eval_every": 100,
                    "save_every": 2,
                    "log_every": 1,
                    "max_len": 8,
                    "ctc_sampled_vocab": 16,
                    "stages": [
                        {"name": "ctc", "steps": 4, "lr": 0.003, "warmup": 1, "objectives": {"ctc": 1.0}, "evaluate": False},
                        {"name": "translate", "steps": 5, "lr": 0.003, "warmup": 1, "objectives": {"ce": 1.0, "ctc": 0.3}},
                    ],
                }
            )
        )
        code, err, _ = cli("train", str(self.config), f"out={work / 'base'}")
        assert code == 0, err
        self.ckpt = work / "base" / "best"

    def fresh_ckpt(self, name: str) -> Path:
        dst = self.work / name
        shutil.copytree(self.ckpt, dst)
        return dst


def cli(*argv: str) -> tuple[int, str, float]:
    """Run the command line in this process: (exit status, stderr, seconds); an escaping exception is a
    traceback, as the user would see it."""
    from sltalign.cli import main

    err, out = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - what the user would see
            traceback.print_exc()
            code = -1
    text = err.getvalue()
    cli.stdout = out.getvalue()
    return code, text, time.perf_counter() - t0


def one_line_error(code: int, err: str, *needles: str) -> tuple[bool, str]:
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    ok = code == 2 and "Traceback" not in err and len(lines) == 1 and all(n in lines[0] for n in needles)
    shown = lines[0].split("error: ", 1)[-1] if lines else (err.strip().splitlines() or ["(nothing)"])[-1]
    return ok, f"exit {code}: {shorten(shown)}"


_WORK = ["\0"]  # the campaign's work directory, shown as $WORK


def shorten(text: str, n: int = 110) -> str:
    text = " ".join(text.replace(_WORK[0], "$WORK").split())
    return text if len(text) <= n else text[: n - 3] + "..."


def caught_warnings(fn: Callable[[], object]) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(x.message) for x in w if not issubclass(x.category, (DeprecationWarning, FutureWarning, ResourceWarning))]


# --- the cases ---------------------------------------------------------------------------------------------


def case_truncated_wav(c: Campaign) -> tuple[bool, str]:
    from sltalign import SpeechTranslator

    data = c.good_wav.read_bytes()
    cut = c.work / "cut.wav"
    cut.write_bytes(data[: 44 + (len(data) - 44) // 3])
    st = SpeechTranslator.from_pretrained(c.ckpt)
    _, ws = caught_warnings(lambda: st.translate(str(cut)))
    hit = [w for w in ws if "declares" in w]
    return bool(hit), "warning: " + shorten(hit[0].split(": ", 1)[1]) if hit else f"no warning ({ws})"


def case_float_peak(c: Campaign) -> tuple[bool, str]:
    from sltalign.audio import load_audio

    loud = c.work / "loud.wav"
    sf.write(loud, 3.0 * np.clip(speechlike(1.0) / 0.35, -1, 1), 16000, subtype="FLOAT")
    wav, ws = caught_warnings(lambda: load_audio(loud))
    hit = [w for w in ws if "beyond [-1, 1]" in w]
    ok = bool(hit) and float(np.abs(wav).max()) <= 1.0
    return ok, (
        f"clipped to peak {np.abs(wav).max():.2f}; warning: " + shorten(hit[0].split(": ", 1)[1])
    ) if hit else "not flagged"


def case_silence_noise_empty(c: Campaign) -> tuple[bool, str]:
    from sltalign import SpeechTranslator

    st = SpeechTranslator.from_pretrained(c.ckpt)
    silent, empty = c.work / "silent.wav", c.work / "empty.wav"
    sf.write(silent, np.zeros(5 * 16000, dtype=np.float32), 16000)
    empty.write_bytes(b"")
    outs, ws = caught_warnings(lambda: st.translate([str(silent), str(empty)]))
    ok = outs == ["", ""] and any("silent" in w for w in ws) and any("empty.wav" in w for w in ws)
    return ok, f"{outs!r}, {len(ws)} warnings: " + shorten("; ".join(w.split(": ", 1)[-1] for w in ws), 90)


def case_noise(c: Campaign) -> tuple[bool, str]:
    """The tiny random model writes words for anything, so noise comes out as text here; the check is that
    a real connector's empty output for noise is flagged (its translate_states made to return nothing)."""
    from sltalign import SpeechTranslator

    st = SpeechTranslator.from_pretrained(c.ckpt)
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 5 * 16000).astype(np.float32)
    st.model.translate_states = lambda states, mask, **kw: [""] * states.shape[0]
    out, ws = caught_warnings(lambda: st.translate(noise))
    hit = [w for w in ws if "no speech was recognised" in w]
    return out == "" and bool(hit), f"{out!r}; warning: " + (shorten(hit[0]) if hit else "none")


def case_mixed_batch(c: Campaign) -> tuple[bool, str]:
    bad = c.work / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav")
    code, err, _ = cli("translate", "--model", str(c.ckpt), str(c.good_wav), str(bad))
    out_lines = cli.stdout.splitlines()
    named = [ln for ln in err.splitlines() if "bad.wav" in ln]
    ok = code == 1 and "Traceback" not in err and len(named) == 1 and len(out_lines) == 2 and out_lines[1] == ""
    return ok, f"exit {code}; stdout: the good file's translation and an empty line; stderr: " + shorten(
        named[0] if named else err, 70
    )


def case_config_json_types(c: Campaign) -> tuple[bool, str]:
    results = []
    for field, value in (("arrangement", 3), ("decoding", {"beam": "4"}), ("speech_encoder", "tiny")):
        ck = c.fresh_ckpt(f"types_{field}")
        cfg = json.loads((ck / "config.json").read_text())
        cfg[field] = value
        (ck / "config.json").write_text(json.dumps(cfg))
        results.append(one_line_error(*cli("translate", "--model", str(ck), str(c.good_wav))[:2], "config.json", "field"))
    return all(ok for ok, _ in results), f"3 fields; e.g. {results[1][1]}"


def case_hub_offline(c: Campaign) -> tuple[bool, str]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        ck = c.fresh_ckpt("hub")
        cfg = json.loads((ck / "config.json").read_text())
        cfg["translator"]["spec"] = HF_MISSING
        (ck / "config.json").write_text(json.dumps(cfg))
        runs = [
            cli("translate", "--model", str(ck), str(c.good_wav)),
            cli("evaluate", "--cascade", "--asr", HF_MISSING, "--manifest", str(c.dev_m), "--out", str(c.work / "ev_hub")),
            cli("train", str(c.config), f"model.translator={HF_MISSING}", f"out={c.work / 'hub_run'}"),
            cli("data", "synth", "--out", str(c.work / "synth_hub"), "--mt", HF_MISSING, "--n_train", "1"),
        ]
    finally:
        del os.environ["HF_HUB_OFFLINE"]
    checks = [one_line_error(code, err, "without a network", "local directory") for code, err, _ in runs]
    slowest = max(t for *_, t in runs)
    return all(ok for ok, _ in checks) and slowest < 10, f"4 commands, slowest {slowest:.1f} s; {checks[0][1]}"


def case_non_utf8_manifest(c: Campaign) -> tuple[bool, str]:
    m = c.work / "latin1.jsonl"
    m.write_bytes(b'{"id": "a", "audio": "%s", "duration": 1.0, "translation": "ol\xe1"}\n' % str(c.good_wav).encode())
    code, err, _ = cli("evaluate", "--model", str(c.ckpt), "--manifest", str(m), "--out", str(c.work / "ev_latin1"))
    # a manifest error lists each bad line under the error line, as path:line: problem
    named = [ln.strip() for ln in err.splitlines() if f"{m}:1:" in ln]
    ok = code == 2 and "Traceback" not in err and len(named) == 1 and "not valid UTF-8" in named[0]
    return ok, f"exit {code}: " + shorten(named[0] if named else err)


def _override_case(override: str, *needles: str) -> Callable[[Campaign], tuple[bool, str]]:
    def run(c: Campaign) -> tuple[bool, str]:
        code, err, t = cli("train", str(c.config), override, f"out={c.work / 'cfg_run'}")
        ok, shown = one_line_error(code, err, *needles)
        return ok and t < 5, shown + f" ({t:.1f} s, before any model loads)"

    return run


def case_out_is_a_file(c: Campaign) -> tuple[bool, str]:
    taken = c.work / "taken"
    taken.write_text("a file")
    results = [
        one_line_error(*cli("train", str(c.config), f"out={taken}")[:2], str(taken)),
        one_line_error(*cli("evaluate", "--model", str(c.ckpt), "--manifest", str(c.dev_m), "--out", str(taken))[:2], str(taken)),
    ]
    (c.work / "en.txt").write_text("".join(f"{en}\n" for en, _ in TEXTS))
    (c.work / "pt.txt").write_text("".join(f"{pt}\n" for _, pt in TEXTS))
    results.append(
        one_line_error(
            *cli(
                "data",
                "synth",
                "--out",
                str(taken),
                "--sentences",
                str(c.work / "en.txt"),
                "--translations",
                str(c.work / "pt.txt"),
                "--n_train",
                "1",
                "--n_dev",
                "1",
                "--n_test",
                "1",
            )[:2],
            str(taken),
        )
    )
    return all(ok for ok, _ in results), f"train, evaluate and data synth; {results[1][1]}"


def _train_cli(c: Campaign, out: Path, *extra: str) -> tuple[int, str, float]:
    return cli("train", str(c.config), f"out={out}", *extra)


def _metrics_keys(out: Path) -> list[tuple[str, str, str]]:
    return [(r["step"], r["split"], r["name"]) for r in csv.DictReader((out / "metrics.csv").open())]


def _kill_training_at_step(step: int) -> Callable[[], None]:
    """KeyboardInterrupt as training step ``step`` starts (an in-process stand-in for a kill); returns undo."""
    from sltalign.objectives import Objectives

    original, calls = Objectives.__call__, {"n": 0}

    def crash(self, model, batch):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt("killed")
        return original(self, model, batch)

    Objectives.__call__ = crash

    def undo() -> None:
        Objectives.__call__ = original

    return undo


def case_disk_full(c: Campaign) -> tuple[bool, str]:
    import sltalign.checkpoint as ck
    from safetensors import SafetensorError

    out = c.work / "full"
    original, calls = ck.save_file, {"n": 0}

    def fill_up(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the second save of OUT/last (step 4): the disk is full
            raise SafetensorError(
                'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
            )
        return original(*a, **k)

    ck.save_file = fill_up
    try:
        code, err, _ = _train_cli(c, out)
    finally:
        ck.save_file = original
    ok, shown = one_line_error(code, err, str(out / "last"))
    step = json.loads((out / "last" / "config.json").read_text())["training"]["loop"]["global_step"]
    code2, err2, _ = _train_cli(c, out)
    ok2 = code2 == 0 and json.loads((out / "last" / "config.json").read_text())["training"]["loop"]["global_step"] == 9
    return ok and step == 2 and ok2, f"{shown}; last kept step {step}; rerun resumed to step 9" if ok2 else shown


def case_two_runs(c: Campaign) -> tuple[bool, str]:
    out = c.work / "shared"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from sltalign.train import lock_out\n"
                "with lock_out(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(600)"
            ),
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        holder.stdout.readline()
        code, err, t = _train_cli(c, out)
        ok, shown = one_line_error(code, err, f"in use by pid {holder.pid}")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    code2, _, _ = _train_cli(c, out)  # the killed holder's lock is taken over
    return ok and t < 5 and code2 == 0, f"{shown} ({t:.1f} s); after SIGKILL of the holder the next run trains (exit {code2})"


def case_kill_between_renames(c: Campaign) -> tuple[bool, str]:
    out = c.work / "renames"
    undo = _kill_training_at_step(6)
    try:
        _train_cli(c, out)
    finally:
        undo()
    os.rename(out / "last", out / ".last.old")  # what a kill between the write's two renames leaves
    from sltalign.objectives import Objectives

    original, calls = Objectives.__call__, {"n": 0}

    def counted(self, model, batch):
        calls["n"] += 1
        return original(self, model, batch)

    Objectives.__call__ = counted
    try:
        code, err, _ = _train_cli(c, out)
    finally:
        Objectives.__call__ = original
    ok = code == 0 and calls["n"] == 5 and not (out / ".last.old").exists()
    return ok, f"rerun restored .last.old, resumed at step 4 ({calls['n']} steps to 9), exit {code}"


def case_every_kill_point(c: Campaign) -> tuple[bool, str]:
    """Kill a checkpoint write after each of its filesystem steps in turn; recover; check nothing is lost."""
    import sltalign.checkpoint as ck
    from sltalign.checkpoint import load_connector, read_config, recover_dir, save_connector

    model, _ = load_connector(c.ckpt)

    class Killed(BaseException):
        pass

    names = [
        (os, "rename"),
        (os, "replace"),
        (os, "fsync"),
        (os, "mkdir"),
        (shutil, "rmtree"),
        (tempfile, "mkdtemp"),
        (ck, "save_file"),
        (torch, "save"),
    ]
    saved = {(m, n): getattr(m, n) for m, n in names}
    k, good = 0, 0
    while True:
        k += 1
        root = c.work / "kills" / f"k{k}"
        save_connector(model, root / "last", extra={"v": "A"}, trainer_state={"s": 1})
        state = {"n": 0, "dead": False}

        def wrap(fn):
            def step(*a, **kw):
                if state["dead"]:
                    raise Killed()
                state["n"] += 1
                if state["n"] == k:
                    state["dead"] = True
                    raise Killed()
                return fn(*a, **kw)

            return step

        for (m, n), fn in saved.items():
            setattr(m, n, wrap(fn))
        try:
            save_connector(model, root / "last", extra={"v": "B"}, trainer_state={"s": 2})
            killed = False
        except Killed:
            killed = True
        finally:
            for (m, n), fn in saved.items():
                setattr(m, n, fn)
        if not killed:
            break
        recover_dir(root / "last")
        left = sorted(p.name for p in root.iterdir())
        if left == ["last"] and read_config(root / "last")["training"]["v"] in ("A", "B"):
            load_connector(root / "last")
            good += 1
    return good == k - 1, f"killed after each of {k - 1} filesystem steps: {good} recovered a whole checkpoint, no temporaries"


def case_resume_metrics(c: Campaign) -> tuple[bool, str]:
    out = c.work / "metrics"
    undo = _kill_training_at_step(6)
    try:
        _train_cli(c, out)
    finally:
        undo()
    code, err, _ = _train_cli(c, out)
    keys = _metrics_keys(out)
    dup = len(keys) - len(set(keys))
    return code == 0 and dup == 0, f"killed at step 6 (saved at 4), resumed: {dup} duplicated rows of {len(keys)}"


def case_stale_temporaries(c: Campaign) -> tuple[bool, str]:
    out = c.work / "stale"
    undo = _kill_training_at_step(6)
    try:
        _train_cli(c, out)
    finally:
        undo()
    for name in (".last.tmp-killed1", ".best.tmp-killed2", ".last.trash-killed3"):
        (out / name).mkdir()
        (out / name / "connector.safetensors").write_bytes(b"\0" * 4096)
    code, _, _ = _train_cli(c, out)
    left = sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".lock")
    return code == 0 and not left, f"3 killed writes' directories; after the rerun left: {left or 'none'}"


def case_other_width(c: Campaign) -> tuple[bool, str]:
    ck = c.fresh_ckpt("wide")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["speech_encoder"]["spec"] = str(c.wide_whisper)
    cfg["speech_encoder"]["fingerprint"] = None
    (ck / "config.json").write_text(json.dumps(cfg))
    return one_line_error(*cli("translate", "--model", str(ck), str(c.good_wav))[:2], str(ck))


def case_sigkill(c: Campaign, kills: int) -> tuple[bool, str]:
    """Real SIGKILLs of `sltalign train` processes at random moments, each followed by a rerun to the end;
    the final connector must equal an uninterrupted run's, bit for bit."""
    from sltalign.checkpoint import load_connector

    ref, _ = load_connector(c.work / "base" / "last")
    rng = random.Random(0)
    same, at = 0, []
    for i in range(kills):
        out = c.work / f"sigkill{i}"
        cmd = [sys.executable, "-m", "sltalign", "train", str(c.config), f"out={out}"]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # a random moment inside training: once step `target` is logged, a random fraction of a second later
        target, deadline = rng.randint(1, 8), time.time() + 300
        while p.poll() is None and time.time() < deadline:
            try:
                steps = [int(s) for s, _, _ in _metrics_keys(out)]
            except (OSError, ValueError, KeyError):
                steps = []
            if steps and max(steps) >= target:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.4))
        p.send_signal(signal.SIGKILL)
        p.wait()
        saved = out / "last" / "config.json"
        at.append(json.loads(saved.read_text())["training"]["loop"]["global_step"] if saved.is_file() else 0)
        code, _, _ = _train_cli(c, out)
        got, _ = load_connector(out / "last")
        if code == 0 and all(
            torch.equal(a, b) for a, b in zip(ref.connector.state_dict().values(), got.connector.state_dict().values())
        ):
            same += 1
    return same == kills, (
        f"{kills} runs killed at random moments (OUT/last then at steps {at} of 9, saved every 2) and rerun: {same} "
        "bit-identical to an uninterrupted run"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=0, help="also SIGKILL this many real training processes at random moments")
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import logging

    logging.disable(logging.WARNING)  # the table is the output; each case checks stderr itself
    work = Path(tempfile.mkdtemp(prefix="sltalign-faults-"))
    _WORK[0] = str(work)
    t0 = time.perf_counter()
    c = Campaign(work)
    cases: list[tuple[str, str, Callable[[Campaign], tuple[bool, str]]]] = [
        ("1", "WAV whose data chunk is cut to a third", case_truncated_wav),
        ("2", "float WAV with peak 3.0", case_float_peak),
        ("3", "5 s of silence; a 0-byte file", case_silence_noise_empty),
        ("3b", "5 s of white noise", case_noise),
        ("4", "one good and one bad file in one translate", case_mixed_batch),
        ("5", "checkpoint config.json with wrong field types", case_config_json_types),
        ("6", "hf: ids without a network (translate, evaluate, train, data synth)", case_hub_offline),
        ("7", "non-UTF-8 manifest", case_non_utf8_manifest),
        ("8", "stages.x.steps=3", _override_case("stages.x.steps=3", "stages.x.steps")),
        ("9", "stages.2.steps=3 on a two-stage preset", _override_case("stages.2.steps=3", "stages.2.steps")),
        ("10", "log_every=0", _override_case("log_every=0", "log_every")),
        ("11", "log_every=-3", _override_case("log_every=-3", "log_every")),
        ("12", "stages.0.max_minutes=nan", _override_case("stages.0.max_minutes=nan", "stages.0.max_minutes")),
        ("13", "out= / --out naming an existing file", case_out_is_a_file),
        ("14", "disk full while a checkpoint is written", case_disk_full),
        ("15", "two train runs on one OUT", case_two_runs),
        ("16", "kill between the two renames of a checkpoint write", case_kill_between_renames),
        ("16b", "kill after every filesystem step of a checkpoint write", case_every_kill_point),
        ("17", "resume after a kill: metrics rows", case_resume_metrics),
        ("18", "killed writes' temporaries", case_stale_temporaries),
        ("19", "connector over a speech encoder of another width", case_other_width),
    ]
    if args.kills:
        cases.append(("k", "SIGKILL of `sltalign train` at random moments", lambda c: case_sigkill(c, args.kills)))
    rows = []
    for num, name, fn in cases:
        try:
            ok, outcome = fn(c)
        except BaseException as e:  # noqa: BLE001 - a case that crashes the campaign is a failed case
            ok, outcome = False, f"campaign crashed: {type(e).__name__}: {shorten(str(e), 80)}"
        rows.append((num, name, "ok" if ok else "FAIL", outcome.replace(str(work), "$WORK")))
        print(f"{num:>4} {'ok' if ok else 'FAIL':4} {name}", file=sys.stderr, flush=True)
    print("| # | case | result | outcome |")
    print("|---|---|---|---|")
    for num, name, res, outcome in rows:
        print(f"| {num} | {name} | {res} | {outcome.replace('|', '/')} |")
    passed = sum(r[2] == "ok" for r in rows)
    print(f"\n{passed}/{len(rows)} cases behave as defined ({time.perf_counter() - t0:.0f} s)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work directory: {work}", file=sys.stderr)
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
