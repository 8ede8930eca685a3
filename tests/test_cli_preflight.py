"""Bad paths on the command line fail before any model code is imported: fast, one line, exit status 2."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from sltalign import preflight
from sltalign.cli import main


def test_missing_checkpoint_fails_fast_in_a_fresh_process():
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "sltalign", "translate", "--model", "/nonexistent", "x.wav"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    wall = time.perf_counter() - t0
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "sltalign translate: error: checkpoint /nonexistent is not a directory "
        "(expected a directory with config.json and connector.safetensors)"
    )
    # ~0.4 s on a 2-core machine (interpreter, argument parser, the check); 3 s is generous for a loaded CI box.
    # Importing the model code first, as before, took ~7-17 s.
    assert wall < 3.0, f"{wall:.1f} s"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["translate", "--model", "/nonexistent", "x.wav"], "checkpoint /nonexistent is not a directory"),
        (["translate", "--model", "{ckpt}", "{tmp}/missing.wav"], "audio file(s) not found: {tmp}/missing.wav"),
        (["translate", "--model", "{ckpt}", "--manifest", "{tmp}/m.jsonl"], "manifest not found: {tmp}/m.jsonl"),
        (
            ["evaluate", "--model", "{ckpt}", "--manifest", "{tmp}/m.jsonl", "--out", "{tmp}/o"],
            "manifest not found: {tmp}/m.jsonl",
        ),
        (
            ["evaluate", "--model", "{tmp}/none", "--manifest", "{tmp}/ok.jsonl", "--out", "{tmp}/o"],
            "checkpoint {tmp}/none is not a directory",
        ),
        (["info", "--model", "{tmp}"], "checkpoint {tmp} has no config.json"),
        (["train", "{tmp}/c.yaml", "data.train={tmp}/t.jsonl", "out={tmp}/run"], "manifest not found: {tmp}/t.jsonl"),
        (["train", "{tmp}/c.yaml"], "manifest not found: {tmp}/dev.jsonl"),  # the file's own data.dev
        (
            ["train", "{tmp}/c.yaml", "data.dev={tmp}/ok.jsonl", "data.watch.people={tmp}/people.jsonl"],
            "manifest not found: {tmp}/people.jsonl",
        ),
        (
            ["train", "{tmp}/c.yaml", "data.dev={tmp}/ok.jsonl", "data.watch={{a: {tmp}/ok.jsonl, b: {tmp}/b.jsonl}}"],
            "manifest not found: {tmp}/b.jsonl",
        ),
        (
            ["train", "{tmp}/c.yaml", "data.dev={tmp}/ok.jsonl", "data.more_train.acted={tmp}/acted.jsonl"],
            "manifest not found: {tmp}/acted.jsonl",
        ),
        (
            ["train", "{tmp}/c.yaml", "data.dev={tmp}/ok.jsonl", "data.more_train={{a: {tmp}/ok.jsonl, b: {tmp}/b.jsonl}}"],
            "manifest not found: {tmp}/b.jsonl",
        ),
        (["train", "{tmp}/nope.yaml"], "config file {tmp}/nope.yaml does not exist"),
        (["data", "synth", "--sentences", "{tmp}/en.txt", "--out", "{tmp}/o"], "sentences file not found: {tmp}/en.txt"),
        (["data", "kaldi", "{tmp}/kaldi", "--out", "{tmp}/o"], "Kaldi data directory not found: {tmp}/kaldi"),
        (["data", "covost", "{tmp}/x.tsv", "--clips", "{tmp}", "--out", "{tmp}/o"], "CoVoST TSV not found: {tmp}/x.tsv"),
    ],
)
def test_bad_paths_are_named_before_any_model_code_loads(argv, message, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(
        '{"format": "sltalign-connector", "translator": {}, "connector": {}, "arrangement": "eced"}'
    )
    (tmp_path / "ok.jsonl").write_text("")
    (tmp_path / "c.yaml").write_text(f"data:\n  train: {tmp_path / 'ok.jsonl'}\n  dev: {tmp_path / 'dev.jsonl'}\n")
    argv = [a.format(ckpt=ckpt, tmp=tmp_path) for a in argv]
    # a fresh interpreter, so that what is imported can be seen: neither torch nor transformers
    code = (
        "import sys; from sltalign.cli import main; rc = main(sys.argv[1:]); "
        "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["2", "False", "False"], out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message.format(tmp=tmp_path) in errors[0], out.stderr
    assert not (tmp_path / "run").exists()  # train created nothing


def test_messages_are_the_loaders_own(tmp_path):
    """The early checks say exactly what the loaders would have said later."""
    from sltalign import api, checkpoint
    from sltalign.data.manifest import read_manifest

    assert (preflight.CHECKPOINT_CONFIG, preflight.CHECKPOINT_WEIGHTS) == (checkpoint.CONFIG, checkpoint.WEIGHTS)
    assert preflight.MIN_PIECE_SECONDS == api.MIN_PIECE_SECONDS
    (tmp_path / "empty").mkdir()
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "config.json").write_text("{")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"format": "x"}')
    for name in ("none", "empty", "badjson", "other"):
        with pytest.raises(ValueError) as early:
            preflight.check_checkpoint_dir(tmp_path / name)
        with pytest.raises(checkpoint.CheckpointError) as late:
            checkpoint.read_config(tmp_path / name)
        assert str(early.value) == str(late.value)
    with pytest.raises(FileNotFoundError) as early:
        preflight.check_manifest(tmp_path / "m.jsonl")
    with pytest.raises(FileNotFoundError) as late:
        read_manifest(tmp_path / "m.jsonl")
    assert str(early.value) == str(late.value)


def test_a_wrong_option_is_still_named_before_the_inputs(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(
        '{"format": "sltalign-connector", "translator": {}, "connector": {}, "arrangement": "eced"}'
    )
    assert main(["translate", "--model", str(ckpt), "--max_piece_seconds", "0.5", "x.wav"]) == 2
    assert "max_piece_seconds must be >= 2.0 (or None); got 0.5" in capsys.readouterr().err
