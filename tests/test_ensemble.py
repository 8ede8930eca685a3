"""Connector ensembles: what several phone connectors hear, combined before one MT input (the medoid transcript,
or frame posteriors averaged), written as one checkpoint directory that every loader reads; refusals name the
checkpoint and what differs."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from sltalign import SpeechTranslator
from sltalign.checkpoint import CheckpointError, load_connector, save_connector
from sltalign.cli import main
from sltalign.connectors import build_connector
from sltalign.connectors.phones import Lexicon, PhoneCTCHead, build_phone_inventory, phonemize
from sltalign.ensemble import MEMBERS_DIR, UNITS_FILE, make_ensemble, medoid_transcripts, vote_transcripts
from sltalign.foundation import load_speech_encoder, load_translator
from sltalign.model import AlignedST
from sltalign.training_state import init_from_checkpoint
from tests.conftest import speechlike

TEXTS = ["the cat sat on the mat", "a dog runs in the park", "we like green tea"]
STE = dict(d=32, layers=1, heads=2, ffn=64, conv_channels=32)


@pytest.fixture(scope="module")
def speech(tiny_whisper_dir):
    return load_speech_encoder(str(tiny_whisper_dir), mode="trim")


@pytest.fixture(scope="module")
def marian(sharp_marian_dir):
    return load_translator(str(sharp_marian_dir))


@pytest.fixture(scope="module")
def lexicon_units():
    phones = phonemize(TEXTS, "en-us")
    return Lexicon.from_text(TEXTS, phones), build_phone_inventory(phones)


def phone_model(speech, marian, lexicon_units, *, seed: int, units=None, d: int = 32) -> AlignedST:
    lexicon, base_units = lexicon_units
    torch.manual_seed(seed)
    conn = build_connector("ste", in_dim=speech.dim, out_dim=marian.embed_dim, **{**STE, "d": d})
    head = PhoneCTCHead(embed_dim=marian.embed_dim, units=units or base_units, lexicon=lexicon)
    return AlignedST(speech_encoder=speech, connector=conn, translator=marian, ctc_head=head, compression="hard").eval()


def member_readings(members, speech, marian, states, mask) -> list[list[str]]:
    """Each member checkpoint loaded alone and its posteriors read by the first member's read-out (its lexicon)."""
    alone = [load_connector(m, speech_encoder=speech, translator=marian)[0] for m in members]
    readings = []
    for m in alone:
        lp, out_mask = log_probs(m, states, mask)
        readings.append(alone[0].ctc_head.read_logits(lp, out_mask, marian))
    return readings


@pytest.fixture(scope="module")
def members(speech, marian, lexicon_units, tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    return [save_connector(phone_model(speech, marian, lexicon_units, seed=s), root / f"seed{s}") for s in range(3)]


def states_of(model: AlignedST):
    return model.encode_audio([speechlike(1.3, seed=1), speechlike(0.8, seed=2)])


def log_probs(model: AlignedST, states, mask) -> torch.Tensor:
    out, out_mask = model.connector(states, mask)
    return torch.log_softmax(model.ctc_head(out).float(), -1), out_mask


def test_medoid_keeps_the_transcript_nearest_the_others():
    readings = [
        ["The cat sat.", "a dog", "one"],
        ["the cat sat", "a frog", "two"],
        ["the hat sat", "a dog runs", "three"],
    ]
    # utterance 0: members 0 and 1 agree (case and punctuation aside); 1: "a dog" is 1 word from each other;
    # 2: all tie, the first member wins
    assert medoid_transcripts(readings) == ["The cat sat.", "a dog", "one"]
    assert medoid_transcripts([["x y"]]) == ["x y"]


def test_vote_takes_each_words_majority():
    readings = [
        ["The cat sat on the mat.", "Mr john dash would had then.", "", "Hello."],
        ["The hat sat on mat.", "At missed John dash would had then.", "Hello there.", ""],
        ["A cat sat on the mat today.", "Mr hardwood had then.", "", "Hello."],
    ]
    assert vote_transcripts(readings) == [
        "The cat sat on the mat.",  # "cat" 2:1, "the" 2:1 kept, "today" 1:2 dropped
        "Mr john dash would had then.",  # each word as the earliest member wrote it inside a sentence
        "",  # two members heard nothing
        "Hello.",
    ]
    # three different words in a slot: the first member's
    assert vote_transcripts([["Red car."], ["Blue car."], ["Green car."]]) == ["Red car."]
    # a word only ever first in its sentence keeps that capital; one seen inside a sentence takes that form
    assert vote_transcripts([["Cat sat."], ["Cat sat."], ["The cat sat."]]) == ["Cat sat."]
    assert vote_transcripts([["Dog ran."], ["The dog."], ["The dog ran."]]) == ["The dog ran."]


@pytest.mark.parametrize("combine, pick", [("medoid", medoid_transcripts), ("vote", vote_transcripts)])
def test_reading_ensembles_translate_their_combined_reading(members, speech, marian, tmp_path, combine, pick):
    ens, cfg = load_connector(make_ensemble(members, tmp_path / "ens", combine=combine), speech_encoder=speech, translator=marian)
    assert cfg["ensemble"]["combine"] == combine == ens.member_combine
    states, mask = states_of(ens)
    assert ens.ctc_transcribe(states, mask) == pick(member_readings(members, speech, marian, states, mask))


def test_medoid_ensemble_translates_each_members_nearest_reading(members, speech, marian, tmp_path):
    ens_dir = make_ensemble(members, tmp_path / "ens")
    ens, cfg = load_connector(ens_dir, speech_encoder=speech, translator=marian)
    assert cfg["ensemble"]["combine"] == "medoid" and ens.member_combine == "medoid"
    states, mask = states_of(ens)
    readings = member_readings(members, speech, marian, states, mask)
    assert len({tuple(r) for r in readings}) == 3 and all(all(r) for r in readings)  # three different hearings
    want = medoid_transcripts(readings)
    assert ens.ctc_transcribe(states, mask) == want
    ids = marian.tokenize_source(want)
    got = ens.bridge(states, mask)
    for b, row in enumerate(ids):
        n = len(row)
        mem = marian.encode_ids(torch.tensor([row]), torch.ones(1, n, dtype=torch.bool))[0]
        torch.testing.assert_close(got.memory[b, :n], mem, atol=1e-5, rtol=1e-5)  # the MT reads the medoid text


def test_posteriors_are_the_log_of_the_members_mean_probability(members, speech, marian, tmp_path):
    ens_dir = make_ensemble(members, tmp_path / "ens", combine="mean_probability")
    ens, cfg = load_connector(ens_dir, speech_encoder=speech, translator=marian)
    assert cfg["ensemble"]["members"] == [f"{MEMBERS_DIR}/1", f"{MEMBERS_DIR}/2"] and len(ens.members) == 2
    alone = [load_connector(m, speech_encoder=speech, translator=marian)[0] for m in members]
    states, mask = states_of(ens)
    parts = [log_probs(m, states, mask) for m in alone]
    want = torch.logsumexp(torch.stack([p for p, _ in parts]), 0) - math.log(3)
    with torch.no_grad():
        _, out_mask, got, _ = ens._connect(states, mask)
    torch.testing.assert_close(got, want)
    assert torch.equal(out_mask, parts[0][1])
    # the members differ (different seeds), so the average is none of them
    assert not torch.allclose(got, parts[0][0], atol=1e-3)
    # what the ensemble hears is the first member's head reading the averaged posteriors
    assert ens.ctc_transcribe(states, mask) == alone[0].ctc_head.read_logits(want, out_mask, marian)


@pytest.mark.parametrize("combine", ["medoid", "mean_probability"])
def test_an_ensemble_of_copies_is_the_connector_alone(members, speech, marian, tmp_path, combine):
    shutil.copytree(members[0], tmp_path / "copy")
    ens, _ = load_connector(
        make_ensemble([members[0], tmp_path / "copy"], tmp_path / "ens", combine=combine),
        speech_encoder=speech,
        translator=marian,
    )
    one, _ = load_connector(members[0], speech_encoder=speech, translator=marian)
    states, mask = states_of(ens)
    with torch.no_grad():
        got = torch.log_softmax(ens._connect(states, mask)[2], -1)  # medoid: the first member's own logits
        torch.testing.assert_close(got, log_probs(one, states, mask)[0], atol=1e-6, rtol=1e-6)
        assert ens.translate_states(states, mask, beam=2, max_len=8) == one.translate_states(states, mask, beam=2, max_len=8)


def test_units_are_matched_by_name(speech, marian, lexicon_units, tmp_path):
    """Heads of one recipe with other seeds differ in a few rare units: a member's classes are moved to the
    first head's order; a unit a member lacks gets no probability from it, one the first head lacks is left out."""
    units = lexicon_units[1]
    first = save_connector(phone_model(speech, marian, lexicon_units, seed=0), tmp_path / "first")
    # the same weights over the same units with one unit renamed and the class order reversed
    j = max(i for i, u in enumerate(units) if u != "|")  # any unit but the word boundary
    renamed = [*units[:j], "zz", *units[j + 1 :]]
    other = phone_model(speech, marian, lexicon_units, seed=0, units=renamed)
    perm = list(reversed(range(len(renamed)))) + [len(renamed)]  # new class k is old class perm[k]; blank stays last
    other.ctc_head.units = [renamed[k] for k in perm[:-1]]
    other.ctc_head.unit_ids = {u: i for i, u in enumerate(other.ctc_head.units)}
    with torch.no_grad():
        other.ctc_head.proj.weight.copy_(other.ctc_head.proj.weight[perm])
        other.ctc_head.proj.bias.copy_(other.ctc_head.proj.bias[perm])
    ens, _ = load_connector(
        make_ensemble([first, save_connector(other, tmp_path / "other")], tmp_path / "ens", combine="mean_probability"),
        speech_encoder=speech,
        translator=marian,
    )
    one, _ = load_connector(first, speech_encoder=speech, translator=marian)
    states, mask = states_of(ens)
    lp, _ = log_probs(one, states, mask)
    with torch.no_grad():
        got = ens._connect(states, mask)[2]
    p = lp.exp()
    member = p.clone()
    member[..., j] = 0  # the member has no class for the first head's unit j
    member = member / member.sum(-1, keepdim=True)  # its "zz" mass is left out and the rest renormalised
    torch.testing.assert_close(got, ((p + member) / 2).log(), atol=1e-5, rtol=1e-5)


def test_members_never_train_and_only_the_first_is_saved(members, speech, marian, tmp_path):
    ens, _ = load_connector(make_ensemble(members, tmp_path / "ens"), speech_encoder=speech, translator=marian)
    before = {k: v.clone() for k, v in ens.members.state_dict().items()}
    ens.train()
    assert ens.connector.training and all(not m.training for m in ens.members.modules())
    assert not any(p.requires_grad for p in ens.members.parameters())
    trainable = {id(p) for p in ens.trainable_parameters()}
    assert trainable == {id(p) for p in [*ens.connector.parameters(), *ens.ctc_head.parameters()]}
    states, mask = states_of(ens)
    ens.bridge(states, mask).connector_out.sum().backward()  # a step's backward reaches no member
    assert all(p.grad is None for p in ens.members.parameters())
    assert all(torch.equal(v, before[k]) for k, v in ens.members.state_dict().items())
    saved, _ = load_connector(save_connector(ens, tmp_path / "resaved"), speech_encoder=speech, translator=marian)
    assert len(saved.members) == 0  # a training checkpoint of the model is its own connector, not the ensemble


def test_the_public_loader_reads_an_ensemble_directory(members, speech, marian, tmp_path):
    ens_dir = make_ensemble(members, tmp_path / "ens")
    st = SpeechTranslator.from_pretrained(ens_dir, speech_encoder=speech, translator=marian, max_len=8)
    assert len(st.model.members) == 2
    wavs = [speechlike(1.1, seed=3), speechlike(0.6, seed=4)]
    ens, _ = load_connector(ens_dir, speech_encoder=speech, translator=marian)
    states, mask = ens.encode_audio(wavs[:1])
    assert st.translate(wavs[:1]) == ens.translate_states(states, mask, beam=st.beam, max_len=8)
    assert "Ensemble of 3 phone connectors" in (ens_dir / "README.md").read_text()
    assert not (ens_dir / "trainer_state.pt").exists()


def test_make_ensemble_refuses_what_cannot_be_averaged(members, speech, marian, lexicon_units, tmp_path):
    with pytest.raises(ValueError, match="two or more"):
        make_ensemble(members[:1], tmp_path / "one")
    with pytest.raises(ValueError, match="named twice"):
        make_ensemble([members[0], members[0]], tmp_path / "twice")
    far = sorted(f"x{i}" for i in range(len(lexicon_units[1]))) + ["|"]
    other_units = save_connector(phone_model(speech, marian, lexicon_units, seed=5, units=far), tmp_path / "units")
    with pytest.raises(CheckpointError, match=r"checkpoint .*units: its phone head shares 1 of the first member's"):
        make_ensemble([members[0], other_units], tmp_path / "e1")
    with pytest.raises(ValueError, match="combine must be one of"):
        make_ensemble(members, tmp_path / "e0", combine="max")
    wider = save_connector(phone_model(speech, marian, lexicon_units, seed=6, d=16), tmp_path / "wider")
    with pytest.raises(CheckpointError, match=r"wider: field 'connector' \(connector sizes\)"):
        make_ensemble([members[0], wider], tmp_path / "e2")
    torch.manual_seed(0)
    tied = AlignedST(
        speech_encoder=speech,
        connector=build_connector("ste", in_dim=speech.dim, out_dim=marian.embed_dim, **STE),
        translator=marian,
    )
    with pytest.raises(CheckpointError, match="averages phone posteriors, but its CTC head is 'none'"):
        make_ensemble([save_connector(tied, tmp_path / "none"), members[0]], tmp_path / "e3")
    ens = make_ensemble(members[:2], tmp_path / "ens")
    with pytest.raises(CheckpointError, match="is an ensemble already"):
        make_ensemble([ens, members[2]], tmp_path / "e4")
    assert not any((tmp_path / f"e{i}").exists() for i in range(5))


def test_a_damaged_ensemble_names_the_member_and_file(members, speech, marian, tmp_path):
    ens_dir = make_ensemble(members, tmp_path / "ens")
    (ens_dir / MEMBERS_DIR / "2" / UNITS_FILE).unlink()
    with pytest.raises(CheckpointError, match=rf"ensemble member .*{MEMBERS_DIR}/2: {UNITS_FILE} is missing"):
        load_connector(ens_dir, speech_encoder=speech, translator=marian)
    cfg = json.loads((ens_dir / "config.json").read_text())
    cfg["ensemble"]["members"] = ["../seed0"]
    (ens_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="'ensemble.members': '../seed0' must be a directory inside the ensemble"):
        load_connector(ens_dir, speech_encoder=speech, translator=marian)


def test_init_from_an_ensemble_is_refused(members, speech, marian, lexicon_units, tmp_path):
    ens = make_ensemble(members, tmp_path / "ens")
    with pytest.raises(ValueError, match="is an ensemble of connectors; name one of its members"):
        init_from_checkpoint(phone_model(speech, marian, lexicon_units, seed=0), ens)


def test_command_line(members, tmp_path, capsys):
    assert main(["ensemble", "--out", str(tmp_path / "ens"), "--combine", "mean_probability", *map(str, members)]) == 0
    assert "ensemble of 3 connectors" in capsys.readouterr().out
    assert main(["info", "--model", str(tmp_path / "ens"), "--json"]) == 0
    block = json.loads(capsys.readouterr().out)["ensemble"]
    assert block["members"] == ["members/1", "members/2"] and block["combine"] == "mean_probability"
    assert main(["ensemble", "--out", str(tmp_path / "e2"), str(members[0]), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sltalign ensemble: error:") and "missing" in err and err.count("\n") == 1
