"""The command-line contract (README) on tiny models: train, evaluate, translate, info, and clear
one-line errors (exit status 2, no traceback) for input a user can fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from sltalign.checkpoint import save_connector
from sltalign.cli import main
from sltalign.config import ConfigError, load_config
from sltalign.connectors import build_connector
from sltalign.data.manifest import Utterance, write_manifest
from sltalign.foundation import load_speech_encoder, load_translator
from sltalign.model import AlignedST
from tests.conftest import speechlike


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_whisper_dir, sharp_marian_dir) -> Path:
    speech = load_speech_encoder(str(tiny_whisper_dir))
    mt = load_translator(str(sharp_marian_dir))
    torch.manual_seed(0)
    conn = build_connector("mlp", in_dim=speech.dim, out_dim=mt.embed_dim, stack=4, hidden=32)
    model = AlignedST(speech_encoder=speech, connector=conn, translator=mt, arrangement="ecd")
    return save_connector(
        model, tmp_path_factory.mktemp("cli") / "ckpt", decoding={"beam": 1, "max_len": 5, "length_penalty": 1.0}
    )


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-data")
    utts = []
    for i, (en, pt) in enumerate([("the cat sat", "o gato"), ("a dog runs", "o cão corre"), ("we like tea", "gostamos de chá")]):
        wav = speechlike(0.5 + 0.2 * i, seed=i)
        sf.write(root / f"{i}.wav", wav, 16000)
        utts.append(
            Utterance(
                id=f"u{i}",
                audio=str(root / f"{i}.wav"),
                duration=len(wav) / 16000,
                transcript=en,
                translation=pt,
                translation_source="human",
            )
        )
    return write_manifest(root / "m.jsonl", utts)


def test_evaluate_writes_metrics_with_signatures(ckpt, manifest, tmp_path, capsys):
    assert main(["evaluate", "--model", str(ckpt), "--manifest", str(manifest), "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n"] == 3 and "tok:13a" in metrics["bleu_signature"] and "nc:6" in metrics["chrf_signature"]
    assert metrics["system"] == "aligned" and metrics["reference_source"] == ["human"]
    assert set(metrics["buckets"]) == {"<5s", "5-10s", "10-20s", ">20s"}
    hyps = [json.loads(line) for line in (tmp_path / "ev" / "hyps.jsonl").read_text().splitlines()]
    assert [h["id"] for h in hyps] == ["u0", "u1", "u2"]


def test_mt_on_gold(sharp_marian_dir, manifest, tmp_path):
    assert (
        main(
            ["evaluate", "--mt-on-gold", "--mt", str(sharp_marian_dir), "--manifest", str(manifest), "--out", str(tmp_path / "g")]
        )
        == 0
    )
    assert json.loads((tmp_path / "g" / "metrics.json").read_text())["system"] == "mt_on_gold"


def test_translate_files_and_manifest(ckpt, manifest, tmp_path, capsys):
    wavs = sorted(str(p) for p in manifest.parent.glob("*.wav"))
    assert main(["translate", "--model", str(ckpt), *wavs]) == 0
    lines = capsys.readouterr().out.strip("\n").split("\n")
    assert len(lines) == len(wavs)
    out = tmp_path / "hyps.jsonl"
    assert main(["translate", "--model", str(ckpt), "--manifest", str(manifest), "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["u0", "u1", "u2"]
    assert [r["hyp"] for r in rows] == lines  # same audio, same order, same outputs
    # Clips shorter than any piece limit are translated whole, whatever the limit.
    assert main(["translate", "--model", str(ckpt), "--max_piece_seconds", "2", *wavs]) == 0
    assert capsys.readouterr().out.strip("\n").split("\n") == lines
    assert main(["translate", "--model", str(ckpt), "--max_piece_seconds", "2", "--sentence_pause_seconds", "-1", *wavs]) == 0
    assert capsys.readouterr().out.strip("\n").split("\n") == lines


def test_decoding_overrides_from_the_command_line():
    from types import SimpleNamespace

    from sltalign.commands import _decoding_overrides

    def ov(piece, pause):
        return _decoding_overrides(SimpleNamespace(max_piece_seconds=piece, sentence_pause_seconds=pause))

    assert ov(None, None) == {}  # the checkpoint's own values
    assert ov(0.0, None) == {"max_piece_seconds": None}  # 0: the encoder's window only
    assert ov(8.0, 0.3) == {"max_piece_seconds": 8.0, "sentence_pause_seconds": 0.3}
    assert ov(None, -1.0) == {"sentence_pause_seconds": None}  # negative: greedy packing


def test_info(ckpt, capsys):
    assert main(["info", "--model", str(ckpt), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arrangement"] == "ecd" and info["parameters"]["trainable"] > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["translate", "--model", "{ckpt}", "missing.wav"], "not found: missing.wav"),
        (["translate", "--model", "/nonexistent/ckpt", "x.wav"], "not a directory"),
        (["translate", "--model", "{ckpt}", "--max_piece_seconds", "0.5", "x.wav"], "max_piece_seconds must be >= 2"),
        (["evaluate", "--manifest", "{manifest}", "--out", "{tmp}/x"], "exactly one of"),
        (["train", "{tmp}/nope.yaml"], "does not exist"),
        (["train", "{tmp}/bad.yaml"], "model.arrangement"),
        (["data", "realspeech", "--out", "/proc/forbidden"], "error"),
    ],
)
def test_user_errors_are_one_line(argv, message, ckpt, manifest, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("model:\n  arrangement: ecde\n")
    argv = [a.format(ckpt=ckpt, manifest=manifest, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err


def test_config_overrides_and_errors(tmp_path):
    cfg = load_config(None, ["data.batch_size=8", "stages.0.objectives={ctc: 1.0}", "model.ctc_head=tied", "stages.0.lr=1e-3"])
    assert cfg.data.batch_size == 8 and cfg.stages[0].objectives == {"ctc": 1.0} and cfg.stages[0].lr == 1e-3
    with pytest.raises(ConfigError, match="data.batch_size: expected int"):
        load_config(None, ["data.batch_size=many"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['bogus'\]"):
        load_config(None, ["model.bogus=1"])
    with pytest.raises(ConfigError, match="the ctc objective needs a CTC head: model.ctc_head"):
        load_config(None, ["stages.0.objectives={ctc: 1.0}"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["data.batch_size"])
    # translation losses alone cannot reach the connector through hard compression: said before training starts
    with pytest.raises(ConfigError, match=r"stages.1.objectives: \['ce'\] cannot train the connector through hard compression"):
        load_config(
            None,
            [
                "model.ctc_head=tied",
                "model.compression=hard",
                "stages=[{name: a, objectives: {ctc: 1.0}}, {name: b, objectives: {ce: 1.0}}]",
            ],
        )


def test_shipped_presets_are_valid():
    for preset in sorted((Path(__file__).parents[1] / "src" / "sltalign" / "configs").glob("*.yaml")):
        load_config(preset)


def test_python_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "sltalign", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "demo" in out.stdout and "train" in out.stdout


def test_data_synth_exposes_the_corpus_settings(tmp_path):
    """Noise, room, backend, voices and the train split's long share reach SynthConfig from the command line."""
    en = [f"the {w} cat sat on the mat number {i}" for i, w in enumerate(["red", "big", "old", "new"])]
    (tmp_path / "en.txt").write_text("\n".join(en) + "\n")
    (tmp_path / "pt.txt").write_text("\n".join(f"frase {i}" for i in range(4)) + "\n")
    out = tmp_path / "corpus"
    argv = [
        "data",
        "synth",
        "--out",
        str(out),
        "--sentences",
        str(tmp_path / "en.txt"),
        "--translations",
        str(tmp_path / "pt.txt"),
        "--n_train",
        "2",
        "--n_dev",
        "1",
        "--n_test",
        "1",
        "--long_fraction",
        "0",
        "--workers",
        "0",
        "--voices",
        "[en-us+f3, en-gb-x-rp+m3]",
        "--noise_snr_db",
        "[10, 20]",
        "--noise_prob",
        "1",
        "--reverb_prob",
        "1",
    ]
    assert main(argv) == 0
    cfg = json.loads((out / "synth_config.json").read_text())
    assert cfg["noise_snr_db"] == [10.0, 20.0] and cfg["noise_prob"] == 1.0 and cfg["reverb_prob"] == 1.0
    assert cfg["voices"] == ["en-us+f3", "en-gb-x-rp+m3"] and cfg["backend"] == "espeak"
    clips = [json.loads(p.read_text()) for p in sorted((out / "audio").rglob("*.json"))]
    assert len(clips) == 4 and all(10 <= c["snr_db"] <= 20 and c["rt60"] is not None for c in clips)
    assert {c["voice"] for c in clips} <= {"en-us+f3", "en-gb-x-rp+m3"}
