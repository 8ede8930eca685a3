"""Case 6: hub ids without a network failed after 24-51 s of retries with a traceback; now one line, at once."""

from __future__ import annotations

import json
import time

import pytest

import sltalign.hub as hub
from sltalign.hub import HubUnavailableError, check_hub_specs, hub_id

MISSING = "hf:sltalign-tests/no-such-model"


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_reachable", None)


def test_hub_ids_are_told_from_other_names(tmp_path):
    assert hub_id("hf:openai/whisper-small") == "openai/whisper-small"
    assert hub_id("Helsinki-NLP/opus-mt-en-de") == "Helsinki-NLP/opus-mt-en-de"
    assert hub_id("packaged:whisper-base") is None
    assert hub_id(str(tmp_path)) is None and hub_id("/no/such/dir") is None and hub_id("runs/x/y") is None


def test_offline_fails_at_once_naming_the_local_alternative(offline):
    t0 = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="not available without a network.*local directory"):
        check_hub_specs(["packaged:whisper-base", MISSING])
    assert time.perf_counter() - t0 < 2.0
    check_hub_specs(["packaged:whisper-base", "/some/dir"])  # no hub id: nothing to check


def test_an_unreachable_hub_is_probed_once_without_retries(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_reachable", None)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    t0 = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="the model hub cannot be reached"):
        check_hub_specs([MISSING])
    assert time.perf_counter() - t0 < 4.0 and hub._reachable is False


def test_train_checkpoints_and_cli_fail_fast_offline(offline, tmp_path, capsys):
    from sltalign.checkpoint import CheckpointError, load_connector
    from sltalign.cli import main
    from sltalign.config import load_config
    from sltalign.train import train

    with pytest.raises(HubUnavailableError, match=MISSING):
        train(load_config(None, [f"model.translator={MISSING}", f"out={tmp_path / 'run'}"]), progress=False)
    assert not (tmp_path / "run").exists()  # nothing was started
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(
        json.dumps(
            {
                "format": "sltalign-connector",
                "translator": {"spec": MISSING},
                "speech_encoder": None,
                "connector": {"name": "mlp", "in_dim": 8, "out_dim": 8},
                "arrangement": "eced",
            }
        )
    )
    with pytest.raises(CheckpointError, match=f"checkpoint {ckpt}: .*not available without a network"):
        load_connector(ckpt)
    (tmp_path / "m.jsonl").write_text("")
    for argv in (
        ["translate", "--model", str(ckpt), "a.wav"],
        ["evaluate", "--cascade", "--asr", MISSING, "--manifest", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "e")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not available without a network" in err and "Traceback" not in err
