"""Connector-only checkpoints: exact round trip, fingerprints of the foundations, clear errors."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import torch

from sltalign import SpeechTranslator
from sltalign.checkpoint import WEIGHTS, CheckpointError, load_connector, read_config, save_connector
from sltalign.connectors import TiedCTCHead, build_connector
from sltalign.foundation import load_speech_encoder, load_translator
from sltalign.model import AlignedST
from tests.conftest import speechlike


@pytest.fixture(scope="module")
def model(tiny_whisper_dir, sharp_marian_dir):
    speech = load_speech_encoder(str(tiny_whisper_dir), mode="trim")
    mt = load_translator(str(sharp_marian_dir))
    torch.manual_seed(1)
    conn = build_connector("ste", in_dim=speech.dim, out_dim=mt.embed_dim, d=32, layers=1, heads=2, ffn=64, conv_channels=32)
    m = AlignedST(
        speech_encoder=speech,
        connector=conn,
        translator=mt,
        arrangement="eced",
        ctc_head=TiedCTCHead(embed_dim=mt.embed_dim),
        compression="posterior",
    )
    with torch.no_grad():  # make the CTC head non-trivial so the round trip has something to carry
        m.ctc_head.blank_bias.fill_(0.3)
    return m.eval()


def test_round_trip_bit_identical(model, tmp_path):
    wavs = [speechlike(1.1, seed=5), speechlike(0.5, seed=6)]
    states, mask = model.encode_audio(wavs)
    target = torch.tensor([model.translator.tokenize_target(["the cat"])[0]] * 2)
    with torch.no_grad():
        before, _ = model(states, mask, target)
    ckpt = save_connector(model, tmp_path / "ckpt")
    loaded, cfg = load_connector(ckpt)
    assert not loaded.training
    with torch.no_grad():
        s2, m2 = loaded.encode_audio(wavs)
        after, _ = loaded(s2, m2, target)
    assert torch.equal(before, after)
    assert cfg["arrangement"] == "eced" and cfg["compression"] == "posterior" and cfg["ctc"] is True
    assert cfg["parameters"]["connector"] == model.parameter_report()["connector"]
    # The weights file holds only trainable tensors (no frozen foundation weights).
    from safetensors.torch import load_file

    keys = load_file(str(ckpt / WEIGHTS)).keys()
    assert keys and all(k.startswith(("connector.", "ctc_head.")) for k in keys)
    assert model.generate(states, mask, beam=2, max_len=6) == loaded.generate(s2, m2, beam=2, max_len=6)


def test_encoder_precision_is_recorded_and_restored(model, tmp_path):
    model.speech_encoder.set_precision("bf16")
    try:
        ckpt = save_connector(model, tmp_path / "ckpt")
    finally:
        model.speech_encoder.set_precision("fp32")
    assert read_config(ckpt)["speech_encoder"]["precision"] == "bf16"
    loaded, _ = load_connector(ckpt)
    assert loaded.speech_encoder.precision == "bf16"
    # a checkpoint written before precision existed loads as fp32
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg["speech_encoder"]["precision"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    assert load_connector(ckpt)[0].speech_encoder.precision == "fp32"


def test_speech_translator_from_pretrained(model, tmp_path):
    import soundfile as sf

    ckpt = save_connector(model, tmp_path / "ckpt", decoding={"beam": 2, "max_len": 6, "length_penalty": 1.0})
    paths = []
    for i, sec in enumerate((0.8, 1.3)):
        p = tmp_path / f"clip{i}.wav"
        sf.write(p, speechlike(sec, seed=10 + i), 16000)
        paths.append(str(p))
    st = SpeechTranslator.from_pretrained(ckpt)
    assert st.beam == 2 and st.max_len == 6
    out = st.translate(paths)
    assert isinstance(out, list) and len(out) == 2 and all(isinstance(t, str) for t in out)
    # A single input gives a single string, and equals the batched result (padding invariance end to end).
    assert st.translate(paths[1]) == out[1]
    # Arrays work as inputs too, and an empty clip is a defined result with a warning.
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = st.translate([np.zeros(0, dtype=np.float32), speechlike(0.8, seed=10)])
    assert res[0] == "" and res[1] == out[0]
    assert any("no audio" in str(x.message) for x in w)


def test_mismatched_foundation_fails_clearly(model, tmp_path, tiny_marian_dir):
    ckpt = save_connector(model, tmp_path / "ckpt")
    other = load_translator(str(tiny_marian_dir))  # same architecture, different weights
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_connector(ckpt, translator=other)


def test_bad_checkpoint_dirs(model, tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        read_config(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        read_config(tmp_path / "empty")
    ckpt = save_connector(model, tmp_path / "ckpt")
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_config(ckpt)
    ckpt = save_connector(model, tmp_path / "ckpt2")
    (ckpt / WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_connector(ckpt)
    ckpt = save_connector(model, tmp_path / "ckpt3")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["connector"]["d"] = 48
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match"):
        load_connector(ckpt)


def test_atomic_overwrite_keeps_previous_on_crash(model, tmp_path, monkeypatch):
    ckpt = save_connector(model, tmp_path / "ckpt")
    before = (ckpt / WEIGHTS).read_bytes()
    import sltalign.checkpoint as ck

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    # a failed write is one error naming the checkpoint (the CLI prints it as one line), not the writer's own
    with pytest.raises(ck.CheckpointWriteError, match=f"cannot write checkpoint {ckpt}.*disk full"):
        save_connector(model, ckpt)
    assert (ckpt / WEIGHTS).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary directory left behind


def test_disk_full_names_the_checkpoint_and_keeps_the_previous_one(model, tmp_path, monkeypatch):
    """Case 14: safetensors' own error on a full disk named no path; now an OSError naming the checkpoint."""
    from safetensors import SafetensorError

    import sltalign.checkpoint as ck

    ckpt = save_connector(model, tmp_path / "last", extra={"v": "A"})

    def full(*a, **k):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(ck, "save_file", full)
    with pytest.raises(OSError, match=f"cannot write checkpoint {ckpt}"):
        save_connector(model, ckpt, extra={"v": "B"})
    assert read_config(ckpt)["training"] == {"v": "A"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


class _Killed(BaseException):
    """A simulated SIGKILL: nothing after it runs, cleanup handlers included."""


def _kill_at(step: int, monkeypatch) -> dict:
    """Make the filesystem steps of a checkpoint write count themselves and die at step ``step``: from then on
    every such step raises ``_Killed``, so no ``except``/``finally`` can tidy up, as with a real kill."""
    import os
    import shutil
    import tempfile

    import sltalign.checkpoint as ck

    state = {"n": 0, "dead": False}

    def wrap(fn):
        def step_fn(*a, **k):
            if state["dead"]:
                raise _Killed()
            state["n"] += 1
            if state["n"] == step:
                state["dead"] = True
                raise _Killed()
            return fn(*a, **k)

        return step_fn

    for mod, name in (
        (os, "rename"),
        (os, "replace"),
        (os, "fsync"),
        (os, "mkdir"),
        (shutil, "rmtree"),
        (tempfile, "mkdtemp"),
        (ck, "save_file"),
        (torch, "save"),
    ):
        monkeypatch.setattr(mod, name, wrap(getattr(mod, name)))
    return state


def test_a_kill_between_any_two_filesystem_steps_of_a_write_loses_nothing(model, tmp_path, monkeypatch):
    """Cases 16 and 18 and item 2: a checkpoint write killed after any of its filesystem steps leaves a whole
    version (``NAME`` or ``.NAME.old``); ``recover_dir`` (what ``train`` runs on start) puts it back and removes
    every temporary; and the next write works from any such state. Every step is tried, not random moments."""
    from sltalign.checkpoint import recover_dir

    seen_b = False
    k = 0
    while True:
        k += 1
        root = tmp_path / f"k{k}"
        save_connector(model, root / "last", extra={"v": "A"}, trainer_state={"step": 1})
        _kill_at(k, monkeypatch)
        try:
            save_connector(model, root / "last", extra={"v": "B"}, trainer_state={"step": 2})
            killed = False
        except _Killed:
            killed = True
        monkeypatch.undo()
        if not killed:
            break
        # right after the kill: a whole version under one of the two names
        survivor = root / "last" if (root / "last").is_dir() else root / ".last.old"
        assert read_config(survivor)["training"]["v"] in ("A", "B"), k
        recover_dir(root / "last")
        assert sorted(p.name for p in root.iterdir()) == ["last"], (k, sorted(p.name for p in root.iterdir()))
        v = read_config(root / "last")["training"]["v"]
        assert v == "B" or not seen_b, f"kill at step {k}: went back from B to A"
        seen_b |= v == "B"
        loaded, _ = load_connector(root / "last")  # weights whole too
        assert torch.load(root / "last" / "trainer_state.pt")["step"] == (1 if v == "A" else 2)
        # the next write from the killed state, without recover_dir, keeps working and tidies up
        save_connector(model, root / "last", extra={"v": "C"})
        assert read_config(root / "last")["training"]["v"] == "C"
        assert sorted(p.name for p in root.iterdir()) == ["last"]
    assert k > 8, f"only {k - 1} filesystem steps were tried"
    assert seen_b and read_config(root / "last")["training"]["v"] == "B"


def test_a_write_killed_between_its_renames_is_restored_not_deleted(model, tmp_path):
    """Case 16: only ``.last.old`` left (the kill fell between the renames): the next write must not delete the
    only good copy; ``recover_dir`` renames it back."""
    import os

    from sltalign.checkpoint import recover_dir

    save_connector(model, tmp_path / "last", extra={"v": "A"})
    os.rename(tmp_path / "last", tmp_path / ".last.old")
    (tmp_path / ".last.tmp-x1").mkdir()
    (tmp_path / ".last.tmp-x1" / "connector.safetensors").write_bytes(b"half")
    done = recover_dir(tmp_path / "last")
    assert any("restored" in line for line in done)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert read_config(tmp_path / "last")["training"] == {"v": "A"}


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("arrangement", 3, "field 'arrangement': expected 'ecd' or 'eced'"),
        ("arrangement", ["eced"], "field 'arrangement'"),
        ("decoding", {"beam": "4"}, "field 'decoding.beam': expected an integer >= 1"),
        ("decoding", {"beam": 2.5}, "field 'decoding.beam'"),
        ("decoding", [1, 2], "field 'decoding': expected an object"),
        ("speech_encoder", "tiny", "field 'speech_encoder': expected an object"),
        ("speech_encoder", {"spec": 7}, "field 'speech_encoder.spec'"),
        ("translator", {"spec": None}, "field 'translator.spec'"),
        ("prompt", 5, "field 'prompt'"),
        ("ctc", "yes", "field 'ctc': expected true or false"),
        ("compression", "zip", "field 'compression'"),
    ],
)
def test_wrong_field_types_in_config_json_are_named(model, tmp_path, field, value, expected):
    """Case 5: a hand-edited config.json with a wrong type gave AttributeError/TypeError tracebacks."""
    ckpt = save_connector(model, tmp_path / "ckpt")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg[field] = value
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=re.escape(f"{ckpt / 'config.json'}: {expected}")):
        load_connector(ckpt)


def test_connector_over_another_encoder_width_names_the_checkpoint(model, tmp_path, tiny_dir):
    """Case 19: "connector in_dim 32 != speech encoder dim 48" did not say which checkpoint."""
    from tests.conftest import _tiny_whisper

    ckpt = save_connector(model, tmp_path / "ckpt")
    wide = load_speech_encoder(str(_tiny_whisper(tiny_dir, d_model=48)), mode="trim")
    with pytest.raises(CheckpointError, match=rf"checkpoint {re.escape(str(ckpt))}: its connector takes 32-dim .* gives 48-dim"):
        load_connector(ckpt, speech_encoder=wide)
    # the same through the config: a checkpoint whose config names the wider encoder
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["speech_encoder"]["spec"] = str(_tiny_whisper(tiny_dir, d_model=48))
    cfg["speech_encoder"]["fingerprint"] = None
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError, match=rf"checkpoint {re.escape(str(ckpt))}: its connector takes 32-dim .* gives 48-dim states"
    ):
        load_connector(ckpt)


def test_translate_bad_and_silent_inputs(model, tmp_path):
    st = SpeechTranslator(model, beam=1, max_len=4)
    # Silence is a defined result: a (possibly empty) string, no error.
    assert isinstance(st.translate(np.zeros(16000, dtype=np.float32)), str)
    # An empty audio file gives "" with a warning; a corrupt or missing one is a clear error naming it.
    import soundfile as sf

    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.warns(UserWarning, match="no audio"):
        assert st.translate([str(tmp_path / "empty.wav")]) == [""]
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF not really a wav file")
    with pytest.raises(ValueError, match="corrupt.wav"):
        st.translate(str(tmp_path / "corrupt.wav"))
    with pytest.raises(FileNotFoundError, match="missing.flac"):
        st.translate(str(tmp_path / "missing.flac"))
    with pytest.raises(ValueError, match="1-D"):
        st.translate(np.zeros((2, 3, 4), dtype=np.float32))


def test_output_limit_follows_each_clips_duration(model, monkeypatch):
    """Long audio gets a longer output limit; batches never mix limits, so batching cannot change results."""
    st = SpeechTranslator(model, beam=1, max_len=4, tokens_per_second=1.0, batch_size=8)
    assert [st.max_len_for(n) for n in (8000, 160000, 160001, 320000)] == [4, 4, 20, 20]
    assert SpeechTranslator(model, max_len=150).max_len_for(28 * 16000) == 240  # the default 8 tokens/s
    calls = []
    real = model.translate_states

    def spy(states, mask, **kw):
        calls.append((states.shape[0], kw["max_len"]))
        return real(states, mask, **kw)

    monkeypatch.setattr(model, "translate_states", spy)
    clips = [speechlike(0.6, seed=1), speechlike(12.0, seed=2), speechlike(0.9, seed=3)]
    out = st.translate(clips)
    assert calls == [(1, 20), (2, 4)]  # the 12-s clip alone with its own limit, the short ones together
    calls.clear()
    assert [st.translate(c) for c in clips] == out  # one by one: the same limits, the same translations
    assert sorted(calls) == [(1, 4), (1, 4), (1, 20)]
    with pytest.raises(ValueError, match="tokens_per_second"):
        SpeechTranslator(model, tokens_per_second=-1.0)


def test_long_audio_translated_in_pieces_of_max_piece_seconds(model, tmp_path, monkeypatch):
    """Audio longer than max_piece_seconds is split at the VAD's pauses; each piece is translated alone and
    the translations are joined in order. The checkpoint's value is applied by from_pretrained."""
    from sltalign import segment

    sr = 16000
    parts = [speechlike(2.5, seed=s) for s in (1, 2, 3)]
    gap = np.zeros(sr // 2, dtype=np.float32)
    wav = np.concatenate([parts[0], gap, parts[1], gap, parts[2]])  # 8.5 s: three 2.5-s regions
    starts = [0, 3 * sr, 6 * sr]
    monkeypatch.setattr(segment, "detect_speech", lambda *a, **k: [(s, s + int(2.5 * sr)) for s in starts])
    seen = []
    real = model.translate_states

    def spy(states, mask, **kw):
        seen.extend(int(n) for n in mask.sum(1))
        return real(states, mask, **kw)

    monkeypatch.setattr(model, "translate_states", spy)
    whole = SpeechTranslator(model, beam=1, max_len=4)  # None: split only past the encoder's window
    assert whole.translate(wav) == whole.translate([wav])[0]
    assert len(seen) == 2  # one piece, twice
    seen.clear()
    st = SpeechTranslator(model, beam=1, max_len=4, max_piece_seconds=3.0)
    out = st.translate(wav)
    assert len(seen) == 3  # three pieces of 2.5 s, each under the 3-s limit
    expected = " ".join(t for t in (st.translate(wav[s : s + int(2.5 * sr)]) for s in starts) if t)
    assert out == expected
    seen.clear()
    # the 0.5-s silences are sentence pauses (>= sentence_pause_seconds, 0.2 by default): each ends a piece
    assert SpeechTranslator(model, beam=1, max_len=4, max_piece_seconds=6.0).translate(wav) == out
    assert len(seen) == 3
    seen.clear()
    greedy = SpeechTranslator(model, beam=1, max_len=4, max_piece_seconds=6.0, sentence_pause_seconds=None)
    assert greedy.translate(wav) is not None
    assert len(seen) == 2  # packed: 2.5 + 0.5 + 2.5 s fit in 6 s, the third region alone
    seen.clear()
    assert SpeechTranslator(model, beam=1, max_len=4, max_piece_seconds=6.0, sentence_pause_seconds=0.6).translate(wav)
    assert len(seen) == 2  # 0.5-s pauses are below this threshold: packed as greedy packing does
    # Stored in the checkpoint's decoding defaults; a keyword overrides it (None: window only).
    ckpt = save_connector(model, tmp_path / "ckpt", decoding={"beam": 1, "max_len": 4, "max_piece_seconds": 3.0})
    assert SpeechTranslator.from_pretrained(ckpt).max_piece_seconds == 3.0
    assert SpeechTranslator.from_pretrained(ckpt, max_piece_seconds=None).max_piece_seconds is None
    assert SpeechTranslator.from_pretrained(ckpt).sentence_pause_seconds == 0.2  # not stored: the default
    assert SpeechTranslator.from_pretrained(ckpt, sentence_pause_seconds=None).sentence_pause_seconds is None
    with pytest.raises(ValueError, match="sentence_pause_seconds"):
        SpeechTranslator(model, sentence_pause_seconds=-0.1)
    with pytest.raises(ValueError, match="max_piece_seconds"):
        SpeechTranslator(model, max_piece_seconds=0.5)


def test_piece_seconds_for_training_durations():
    from sltalign.api import piece_seconds_for

    durations = [1.0] * 50 + [3.2] * 149 + [25.0]  # one outlier does not count
    assert piece_seconds_for(durations) == 10.0  # the floor
    assert piece_seconds_for(durations, floor=2.0) == 4.0  # rounded up to whole seconds
    assert piece_seconds_for([12.1] * 10) == 13.0
    assert piece_seconds_for(list(np.linspace(1, 30, 300))) == 30.0
    with pytest.raises(ValueError, match="no training durations"):
        piece_seconds_for([])


def test_silence_noise_and_empty_files_give_empty_strings_with_warnings(model, tmp_path, monkeypatch):
    """Case 3: 5 s of silence or noise gave '' without the warning the docstring promises; a 0-byte file raised
    although the docstring says ''."""
    import soundfile as sf

    st = SpeechTranslator(model, beam=1, max_len=4)
    sf.write(tmp_path / "silent.wav", np.zeros(5 * 16000, dtype=np.float32), 16000)
    (tmp_path / "zero.wav").write_bytes(b"")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = st.translate([str(tmp_path / "silent.wav"), str(tmp_path / "zero.wav"), np.full(8000, 1e-5, dtype=np.float32)])
    assert out == ["", "", ""]
    msgs = [str(x.message) for x in w]
    assert any("silent.wav) has no audio to translate: it is silent (peak all zeros)" in m for m in msgs)
    assert any("zero.wav) has no audio to translate" in m for m in msgs)
    assert any("input 2 (array) has no audio to translate: it is silent (peak -100 dBFS)" in m for m in msgs)
    # noise the model makes nothing of: '' with a warning (the tiny model's output is forced empty here)
    monkeypatch.setattr(model, "translate_states", lambda states, mask, **kw: [""] * states.shape[0])
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 5 * 16000).astype(np.float32)
    with pytest.warns(UserWarning, match=r"input 0 \(array\): no speech was recognised \(noise\?\)"):
        assert st.translate(noise) == ""


def test_mixed_good_and_bad_inputs(model, tmp_path):
    """Case 4: one bad file among good ones used to lose every translation; errors="skip" keeps the good ones."""
    import soundfile as sf

    st = SpeechTranslator(model, beam=1, max_len=4)
    good = [tmp_path / "a.wav", tmp_path / "b.wav"]
    for i, p in enumerate(good):
        sf.write(p, speechlike(0.8, seed=20 + i), 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really a wav file")
    inputs = [str(good[0]), str(tmp_path / "bad.wav"), str(tmp_path / "missing.wav"), str(good[1])]
    with pytest.raises(ValueError, match="bad.wav"):  # the default is still to raise
        st.translate(inputs)
    alone = st.translate([str(p) for p in good])
    with pytest.warns(UserWarning, match=r"input 1 \(.*bad.wav\) skipped: cannot decode"):
        out = st.translate(inputs, errors="skip")
    assert out == [alone[0], None, None, alone[1]]
    assert sorted(st.last_errors) == [1, 2] and "missing.wav" in st.last_errors[2]
    segs = st.translate_segments(inputs, errors="skip")
    assert segs[1] is None and segs[0].text == alone[0]
    with pytest.raises(ValueError, match="errors: expected one of"):
        st.translate(inputs, errors="ignore")


def test_cli_translate_reports_each_bad_input_and_exits_non_zero(model, tmp_path, capsys):
    import soundfile as sf

    from sltalign.cli import main

    ckpt = save_connector(model, tmp_path / "ckpt", decoding={"beam": 1, "max_len": 4, "length_penalty": 1.0})
    sf.write(tmp_path / "a.wav", speechlike(0.8, seed=30), 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really a wav file")
    args = ["translate", "--model", str(ckpt), str(tmp_path / "a.wav"), str(tmp_path / "bad.wav"), str(tmp_path / "gone.wav")]
    assert main(args) == 1
    cap = capsys.readouterr()
    lines = cap.out.splitlines()
    assert len(lines) == 3 and lines[0] == SpeechTranslator.from_pretrained(ckpt).translate(str(tmp_path / "a.wav"))
    assert lines[1:] == ["", ""]  # a file that cannot be decoded and one that does not exist: named below
    assert any(ln.startswith("sltalign translate: error:") and "gone.wav" in ln for ln in cap.err.splitlines()), cap.err
    # (only our lines: after other tests, transformers may log into a closed captured stream, with a traceback)
    named = [ln for ln in cap.err.splitlines() if ln.startswith("sltalign translate: error:") and "bad.wav" in ln]
    assert len(named) == 1 and named[0].startswith("sltalign translate: error: cannot decode"), cap.err
    assert "Traceback" not in cap.err.replace("--- Logging error ---\nTraceback", ""), cap.err
    assert "skipped:" not in cap.err  # the API's warning is not repeated beside the error line
