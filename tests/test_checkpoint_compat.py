"""Checkpoints written before ``model.ctc_head`` (tests/fixtures/compat, made by the older code with
make_checkpoints.py there) load with today's code and translate exactly as they did: the phone head with its
lexicon, the tied head, and the oldest format ("ctc": true without a head kind). Saved again by today's code
they round-trip exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sltalign import SpeechTranslator
from sltalign.checkpoint import ctc_head_kind, load_connector, read_config, save_connector
from sltalign.connectors import PhoneCTCHead, TiedCTCHead
from tests.conftest import speechlike

FIXTURES = Path(__file__).parent / "fixtures" / "compat"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def placed(name: str, tmp: Path) -> Path:
    """The fixture checkpoint ``name`` copied to ``tmp``, its foundation specs pointed at the fixture's tiny
    models wherever this checkout lies (they were written as absolute paths)."""
    out = tmp / name
    shutil.copytree(FIXTURES / name, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["speech_encoder"]["spec"] = str(FIXTURES / "whisper")
    cfg["translator"]["spec"] = str(FIXTURES / "marian")
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.mark.parametrize(
    "name, kind, head", [("phones", "phones", PhoneCTCHead), ("tied", "tied", TiedCTCHead), ("tied_oldest", "tied", TiedCTCHead)]
)
def test_checkpoints_from_before_ctc_head_translate_as_they_did(tmp_path, name, kind, head):
    path = placed(name, tmp_path)
    assert ctc_head_kind(read_config(path)) == kind
    st = SpeechTranslator.from_pretrained(path, beam=1)
    assert type(st.model.ctc_head) is head
    waves = [speechlike(0.9, seed=5), speechlike(1.3, seed=6)]
    assert st.translate(waves) == EXPECTED[name]["translations"]
    states, mask = st.model.encode_audio(waves)
    assert st.model.ctc_transcribe(states, mask) == EXPECTED[name]["heard"]

    # written again by today's code (the head's kind and data as they are), read back: the same weights and outputs
    again = save_connector(st.model, tmp_path / f"{name}-again", decoding=read_config(path)["decoding"])
    assert json.loads((again / "config.json").read_text())["ctc_head"]["kind"] == kind
    model, _ = load_connector(again)
    for a, b in zip(st.model.connector.state_dict().values(), model.connector.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(st.model.ctc_head.state_dict().values(), model.ctc_head.state_dict().values()):
        assert torch.equal(a, b)
    assert model.ctc_head.data() == st.model.ctc_head.data()
    assert SpeechTranslator.from_pretrained(again, beam=1).translate(waves) == EXPECTED[name]["translations"]


def test_the_fixture_foundations_are_the_ones_the_checkpoints_name():
    """The tiny models beside the fixtures are the ones their fingerprints name (a replaced model would make
    the test above fail for the wrong reason)."""
    from sltalign.foundation import load_speech_encoder, load_translator

    cfg = read_config(FIXTURES / "phones")
    assert load_speech_encoder(str(FIXTURES / "whisper")).fingerprint() == cfg["speech_encoder"]["fingerprint"]
    assert load_translator(str(FIXTURES / "marian")).fingerprint() == cfg["translator"]["fingerprint"]
