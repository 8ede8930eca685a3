"""Model cards: every checkpoint directory gets a README.md saying what the connector is and where it came from
(foundations with fingerprints, recipe, data, dev scores with signatures, versions, seed, use and limits);
`sltalign info` shows it; checkpoint files get the user's umask, not tempfile's 0700/0600."""

from __future__ import annotations

import os
import stat

import pytest
import torch
import yaml

from sltalign.checkpoint import read_config, save_connector
from sltalign.cli import main
from sltalign.connectors import build_connector
from sltalign.foundation import load_speech_encoder, load_translator
from sltalign.model import AlignedST
from sltalign.model_card import CARD, read_model_card, render_card, write_model_card


@pytest.fixture(scope="module")
def model(tiny_whisper_dir, sharp_marian_dir):
    speech = load_speech_encoder(str(tiny_whisper_dir), mode="trim")
    mt = load_translator(str(sharp_marian_dir))
    torch.manual_seed(0)
    conn = build_connector("mlp", in_dim=speech.dim, out_dim=mt.embed_dim, stack=4, hidden=32)
    return AlignedST(speech_encoder=speech, connector=conn, translator=mt, arrangement="ecd")


DEV = {
    "n": 100,
    "bleu": 31.25,
    "chrf": 58.5,
    "ctc_wer": 0.21,
    "bleu_signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.5.1",
    "chrf_signature": "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.5.1",
}


def test_a_trained_checkpoint_carries_its_card(model, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    recipe = {
        "seed": 7,
        "out": str(run),
        "data": {"train": "corpus/train.jsonl", "dev": "corpus/dev.jsonl"},
        "stages": [{"name": "ctc", "objectives": {"ctc": 1.0}, "steps": 5000, "lr": 0.001, "max_minutes": 16}],
    }
    (run / "config.yaml").write_text(yaml.safe_dump(recipe))  # what `sltalign train` writes beside OUT/best
    ckpt = save_connector(
        model, run / "best", decoding={"beam": 4, "max_len": 150, "length_penalty": 1.0}, extra={"step": 1200, "dev": DEV}
    )
    card = read_model_card(ckpt)
    assert card is not None and card.startswith("# best: English speech to")
    cfg = read_config(ckpt)
    for must in (
        cfg["speech_encoder"]["fingerprint"],
        cfg["translator"]["fingerprint"],
        "seed: 7",
        "corpus/train.jsonl",
        "corpus/dev.jsonl",
        "stage 0 `ctc`: ctc 1.0; 5000 steps, at most 16 min",
        "saved at step 1200",
        "31.25",
        "58.50",
        DEV["bleu_signature"],
        DEV["chrf_signature"],
        "beam 4",
        f"torch {torch.__version__}",
        "## Intended use and limits",
        "synthetic (TTS) speech",
    ):
        assert must in card, must


def test_files_are_readable_by_others_under_a_normal_umask(model, tmp_path):
    old = os.umask(0o022)
    try:
        ckpt = save_connector(model, tmp_path / "ckpt", trainer_state={"loop": {}})
    finally:
        os.umask(old)
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o755
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in ckpt.iterdir()}
    assert modes and all(m == 0o644 for m in modes.values()), modes
    assert CARD in modes and "trainer_state.pt" in modes


def test_a_card_without_recipe_or_scores_says_so(model, tmp_path):
    ckpt = save_connector(model, tmp_path / "plain")
    card = read_model_card(ckpt)
    assert "recipe: not recorded" in card and "No scores recorded" in card


def test_a_failing_card_never_costs_the_checkpoint(model, tmp_path, monkeypatch, caplog):
    import sltalign.model_card as mc

    def boom(*a, **k):
        raise RuntimeError("card trouble")

    monkeypatch.setattr(mc, "render_card", boom)
    ckpt = save_connector(model, tmp_path / "ckpt")
    assert (ckpt / "config.json").is_file() and not (ckpt / CARD).exists()
    assert "could not write the model card" in caplog.text
    assert write_model_card(tmp_path, {}) is None


def test_info_shows_the_card(model, tmp_path, capsys):
    ckpt = save_connector(model, tmp_path / "ckpt", extra={"step": 3, "dev": DEV})
    assert main(["info", "--model", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# ckpt: English speech to") and "## config.json (summary)" in out and '"step": 3' in out
    (ckpt / CARD).unlink()  # an older checkpoint: the card is made from config.json
    assert main(["info", "--model", str(ckpt)]) == 0
    assert "this card is made from its config.json" in capsys.readouterr().out
    assert render_card(read_config(ckpt), name="x").startswith("# x:")
