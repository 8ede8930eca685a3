"""The training loop on tiny foundations: stages, logs, best checkpoint, exact resume after a crash,
and 2 gloo processes agreeing with 1 process on the same global batch."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import socket
from pathlib import Path

import pytest
import soundfile as sf
import torch
import torch.multiprocessing as mp

from sltalign.checkpoint import load_connector
from sltalign.config import load_config
from sltalign.data.manifest import Utterance, write_manifest
from sltalign.objectives import Objectives
from sltalign.train import train
from tests.conftest import speechlike

TEXTS = [
    ("the cat sat on the mat", "o gato está na casa"),
    ("a dog runs in the park", "o cão corre no parque"),
    ("we like green tea", "nós gostamos de chá verde"),
    ("the house is very old", "a casa é muito velha"),
]


def make_corpus(root: Path, n: int = 8) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    utts = []
    for i in range(n):
        wav = speechlike(0.6 + 0.1 * (i % 4), seed=i)
        path = root / f"u{i}.wav"
        sf.write(path, wav, 16000)
        en, pt = TEXTS[i % len(TEXTS)]
        utts.append(
            Utterance(
                id=f"u{i}", audio=str(path), duration=len(wav) / 16000, transcript=en, translation=pt, translation_source="human"
            )
        )
    return write_manifest(root / "train.jsonl", utts), write_manifest(root / "dev.jsonl", utts[:3])


#: a CTC head over 40 word pieces, read by the MT as text
PIECES = {"model.ctc_head": "pieces", "model.ctc_vocab_size": "40", "model.compression": "hard"}


def config(tmp: Path, whisper: Path, marian: Path, out: str, **extra: str):
    train_m, dev_m = make_corpus(tmp / "corpus")
    overrides = [
        f"model.speech_encoder={whisper}",
        f"model.translator={marian}",
        "model.connector=ste",
        "model.connector_preset=null",
        "model.connector_args={d: 32, layers: 1, heads: 2, ffn: 64, conv_channels: 32, dropout: 0.0}",
        "model.ctc_head=tied",
        f"data.train={train_m}",
        f"data.dev={dev_m}",
        f"data.cache_dir={tmp / 'cache'}",
        "data.batch_size=2",
        "data.max_frames=100000",
        f"out={tmp / out}",
        "eval_every=3",
        "save_every=2",
        "log_every=1",
        "max_len=8",
        "ctc_sampled_vocab=16",
        "stages=[{name: ctc, steps: 4, lr: 0.003, warmup: 1, objectives: {ctc: 1.0}, evaluate: false},"
        " {name: translate, steps: 5, lr: 0.003, warmup: 1, objectives: {ce: 1.0, kd: 0.5, ctc: 0.3}}]",
    ]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return load_config(None, overrides)


def test_train_stages_logs_and_best(tmp_path, tiny_whisper_dir, sharp_marian_dir):
    cfg = config(tmp_path, tiny_whisper_dir, sharp_marian_dir, "run")
    summary = train(cfg, progress=False)
    out = Path(cfg.out)
    assert summary["steps"] == 9
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    names = {(r["split"], r["name"]) for r in rows}
    assert {("train", "loss_ctc"), ("train", "loss_ce"), ("train", "loss_kd"), ("train", "loss_total"), ("dev", "bleu")} <= names
    # a CTC head and transcribed dev utterances: the dev WER of what the connector hears is logged too
    wers = [float(r["value"]) for r in rows if r["split"] == "dev" and r["name"] == "ctc_wer"]
    assert wers and all(0.0 <= w for w in wers)
    # stage 1 logs ctc only: the MT was never needed there
    first = [r for r in rows if r["split"] == "train" and r["step"] == "1"]
    assert {r["name"] for r in first} == {"loss_ctc", "loss_total", "lr"}
    assert (out / "training.png").stat().st_size > 0
    model, cfg_json = load_connector(out / "best")
    assert cfg_json["training"]["step"] == summary["best_step"]
    # Trained on clips under 1 s: translation splits long audio into pieces of at most 10 s (the floor).
    assert cfg_json["decoding"]["max_piece_seconds"] == 10.0
    n_trainable = sum(p.numel() for p in model.connector.parameters()) + sum(p.numel() for p in model.ctc_head.parameters())
    assert n_trainable == summary["parameters"]["connector"] == summary["parameters"]["trainable"]


def test_watch_sets_are_logged_and_select_nothing(tmp_path, tiny_whisper_dir, sharp_marian_dir):
    """A data.watch set is scored at every dev evaluation under its own name, drawn in training.png, and
    changes neither the checkpoint chosen nor the weights (the same run without it is bit-identical)."""
    utts = []
    for i in range(3):  # clips no other set holds
        wav = speechlike(0.7 + 0.1 * i, seed=100 + i)
        sf.write(tmp_path / f"w{i}.wav", wav, 16000)
        en, pt = TEXTS[(i + 1) % len(TEXTS)]
        utts.append(
            Utterance(id=f"w{i}", audio=str(tmp_path / f"w{i}.wav"), duration=len(wav) / 16000, transcript=en, translation=pt)
        )
    watch_m = write_manifest(tmp_path / "watch.jsonl", utts)
    plain = config(tmp_path / "a", tiny_whisper_dir, sharp_marian_dir, "run")
    watched = config(tmp_path / "b", tiny_whisper_dir, sharp_marian_dir, "run", **{"data.watch": f"{{people: {watch_m}}}"})
    s_plain, s_watched = train(plain, progress=False), train(watched, progress=False)
    rows = list(csv.DictReader((Path(watched.out) / "metrics.csv").open()))
    dev_steps = [r["step"] for r in rows if r["split"] == "dev" and r["name"] == "bleu"]
    people_steps = [r["step"] for r in rows if r["split"] == "people" and r["name"] == "bleu"]
    assert dev_steps and people_steps == dev_steps
    assert {r["name"] for r in rows if r["split"] == "people"} >= {"bleu", "chrf"}
    assert (Path(watched.out) / "training.png").stat().st_size > 0
    assert s_watched["best_step"] == s_plain["best_step"]
    a, _ = load_connector(Path(plain.out) / "best")
    b, _ = load_connector(Path(watched.out) / "best")
    for (name, pa), pb in zip(a.connector.state_dict().items(), b.connector.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_select_on_a_watch_set(tmp_path, tiny_whisper_dir, sharp_marian_dir):
    """``select: people.chrf`` keeps the evaluation with the highest chrF on the watched set in OUT/best (the
    first of equals), records what chose it, and reports the score and dev BLEU there."""
    utts = []
    for i in range(3):
        wav = speechlike(0.7 + 0.1 * i, seed=200 + i)
        sf.write(tmp_path / f"w{i}.wav", wav, 16000)
        en, pt = TEXTS[i % len(TEXTS)]
        utts.append(
            Utterance(id=f"w{i}", audio=str(tmp_path / f"w{i}.wav"), duration=len(wav) / 16000, transcript=en, translation=pt)
        )
    watch_m = write_manifest(tmp_path / "watch.jsonl", utts)
    cfg = config(
        tmp_path,
        tiny_whisper_dir,
        sharp_marian_dir,
        "run",
        **{"data.watch": f"{{people: {watch_m}}}", "select": "people.chrf", "patience": "0"},
    )
    summary = train(cfg, progress=False)
    rows = list(csv.DictReader((Path(cfg.out) / "metrics.csv").open()))
    people = [(int(r["step"]), float(r["value"])) for r in rows if r["split"] == "people" and r["name"] == "chrf"]
    dev = {int(r["step"]): float(r["value"]) for r in rows if r["split"] == "dev" and r["name"] == "bleu"}
    assert len(people) >= 2
    best_step, best = max(people, key=lambda sv: (sv[1], -sv[0]))
    assert summary["select"] == "people.chrf" and summary["best_step"] == best_step
    assert summary["best_score"] == pytest.approx(best, abs=1e-4)
    assert summary["best_dev_bleu"] == pytest.approx(dev[best_step], abs=1e-4)
    _, saved = load_connector(Path(cfg.out) / "best")
    assert saved["training"]["select"] == "people.chrf"
    assert saved["training"]["step"] == best_step
    assert saved["training"]["watched"]["people"]["chrf"] == pytest.approx(best, abs=1e-4)
    card = (Path(cfg.out) / "best" / "README.md").read_text()
    assert "| people |" in card and "chosen on: `people.chrf`" in card


def test_loop_state_from_before_select():
    """A trainer state saved before ``select`` existed resumes with its dev BLEU as the best score."""
    from sltalign.training_state import LoopState

    state = LoopState.from_dict({"global_step": 40, "best_bleu": 12.5, "best_step": 30})
    assert (state.best_score, state.best_dev_bleu, state.best_on, state.best_step) == (12.5, 12.5, "dev.bleu", 30)


def test_watch_needs_dev_and_utterances(tmp_path, tiny_whisper_dir, sharp_marian_dir):
    cfg = config(tmp_path, tiny_whisper_dir, sharp_marian_dir, "run", **{"data.watch": "{people: nowhere.jsonl}"})
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        train(cfg, progress=False)
    too_short = config(
        tmp_path,
        tiny_whisper_dir,
        sharp_marian_dir,
        "run2",
        **{"data.watch": f"{{people: {tmp_path / 'corpus' / 'dev.jsonl'}}}", "data.min_duration": "0.85"},
    )
    with pytest.raises(ValueError, match=r"data.watch.people: .*dev.jsonl has no utterance"):
        train(too_short, progress=False)
    with pytest.raises(Exception, match="data.watch: expected names"):
        config(tmp_path, tiny_whisper_dir, sharp_marian_dir, "run3", **{"data.watch": "{dev: x.jsonl}"})
    with pytest.raises(Exception, match=r"select: expected 'SPLIT.METRIC' .*\['people'\].*got 'others.chrf'"):
        config(
            tmp_path, tiny_whisper_dir, sharp_marian_dir, "run4", **{"data.watch": "{people: x.jsonl}", "select": "others.chrf"}
        )
    with pytest.raises(Exception, match=r"select: .*got 'dev.wer'"):
        config(tmp_path, tiny_whisper_dir, sharp_marian_dir, "run5", **{"select": "dev.wer"})


def train_killed_at_step(cfg, step: int, monkeypatch) -> None:
    """Run ``train(cfg)`` and kill it (KeyboardInterrupt) as it starts training step ``step``."""
    original = Objectives.__call__
    calls = {"n": 0}

    def crash(self, model, batch):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt("killed")
        return original(self, model, batch)

    monkeypatch.setattr(Objectives, "__call__", crash)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.setattr(Objectives, "__call__", original)


def test_resume_after_crash_is_exact(tmp_path, tiny_whisper_dir, sharp_marian_dir, monkeypatch):
    ref_cfg = config(tmp_path / "a", tiny_whisper_dir, sharp_marian_dir, "run")
    train(ref_cfg, progress=False)
    ref, _ = load_connector(Path(ref_cfg.out) / "last")

    cfg = config(tmp_path / "b", tiny_whisper_dir, sharp_marian_dir, "run")
    train_killed_at_step(cfg, 6, monkeypatch)
    # The last good state (step 4) is intact and loadable; the same command resumes from it.
    _, mid = load_connector(Path(cfg.out) / "last")
    assert mid["training"]["loop"]["global_step"] == 4
    summary = train(cfg, progress=False)
    assert summary["steps"] == 9
    got, _ = load_connector(Path(cfg.out) / "last")
    for (k, a), (_, b) in zip(ref.connector.state_dict().items(), got.connector.state_dict().items()):
        assert torch.equal(a, b), k
    for (k, a), (_, b) in zip(ref.ctc_head.state_dict().items(), got.ctc_head.state_dict().items()):
        assert torch.equal(a, b), k


def test_worker_processes_collate_the_same_batches(tmp_path, tiny_whisper_dir, sharp_marian_dir):
    """data.num_workers > 0 prepares batches in other processes (a GPU's data loading); the run is the same."""
    stages = "[{name: ctc, steps: 3, lr: 0.003, warmup: 0, objectives: {ctc: 1.0}, evaluate: false}]"
    runs = []
    for workers in (0, 2):
        cfg = config(
            tmp_path / str(workers),
            tiny_whisper_dir,
            sharp_marian_dir,
            "run",
            stages=stages,
            **{"data.num_workers": str(workers)},
        )
        train(cfg, progress=False)
        runs.append(load_connector(Path(cfg.out) / "last")[0])
    for (k, a), (_, b) in zip(runs[0].connector.state_dict().items(), runs[1].connector.state_dict().items()):
        assert torch.equal(a, b), k


def test_init_from_starts_from_a_checkpoint_and_refuses_another_architecture(tmp_path, tiny_whisper_dir, sharp_marian_dir):
    from sltalign.checkpoint import build_model, model_config_of, read_config
    from sltalign.train import init_from_checkpoint

    a = config(tmp_path / "a", tiny_whisper_dir, sharp_marian_dir, "run")
    train(a, progress=False)
    src, _ = load_connector(Path(a.out) / "last")
    # Through train(): one step at a negligible learning rate leaves the initial weights in place, so OUT/last
    # equals the checkpoint it started from (a random start would differ everywhere).
    b = config(
        tmp_path / "b",
        tiny_whisper_dir,
        sharp_marian_dir,
        "run",
        init_from=str(Path(a.out) / "last"),
        max_piece_seconds="12",
        stages="[{name: ctc, steps: 1, lr: 1.0e-12, warmup: 0, objectives: {ctc: 1.0}, evaluate: false}]",
    )
    train(b, progress=False)
    got, got_cfg = load_connector(Path(b.out) / "last")
    assert got_cfg["decoding"]["max_piece_seconds"] == 12.0  # set in the config, not derived from the clips
    for (k, x), (_, y) in zip(src.connector.state_dict().items(), got.connector.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-8), k
    # Another connector size is refused, naming the checkpoint, not half-copied.
    m = model_config_of(read_config(Path(a.out) / "last"))
    other = build_model(
        dataclasses.replace(m, connector_args={**m.connector_args, "ffn": 128}),
        speech_encoder=src.speech_encoder,
        translator=src.translator,
    )
    with pytest.raises(ValueError, match=r"init_from .*last.*differs"):
        init_from_checkpoint(other, Path(a.out) / "last")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        ACCELERATE_USE_CPU="true",
    )
    torch.set_num_threads(1)
    train(cfg, progress=False)


@pytest.mark.slow
def test_two_processes_match_one_on_the_same_global_batch(tmp_path, tiny_whisper_dir, sharp_marian_dir):
    # CE only and no dropout: per-process randomness would otherwise differ from one process's.
    common = dict(stages="[{name: t, steps: 3, lr: 0.003, warmup: 1, objectives: {ce: 1.0}, evaluate: false}]", save_every=100)
    one = config(tmp_path / "one", tiny_whisper_dir, sharp_marian_dir, "run", grad_accum="2", **common)
    two = config(tmp_path / "two", tiny_whisper_dir, sharp_marian_dir, "run", grad_accum="1", **common)
    # Both runs read one cache, built here, so neither process has to encode.
    train(
        config(tmp_path / "one", tiny_whisper_dir, sharp_marian_dir, "warm", **{**common, "stages": "[{steps: 0}]"}),
        progress=False,
    )
    two.data.cache_dir = one.data.cache_dir
    train(one, progress=False)
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, two)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    a, _ = load_connector(Path(one.out) / "last", load_speech=False)
    b, _ = load_connector(Path(two.out) / "last", load_speech=False)
    init, _ = load_connector(Path(tmp_path / "one" / "warm" / "last"), load_speech=False)
    # Compare what the connectors compute, not raw weights: parameters with a mathematically zero gradient
    # (the attention key bias) get float-noise gradients that Adam scales up, differently per reduction order.
    states = torch.randn(3, 40, a.connector.in_dim, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 40, dtype=torch.bool)
    mask[1, 25:] = False
    with torch.no_grad():
        out_a, _ = a.connector(states, mask)
        out_b, _ = b.connector(states, mask)
        out_0, _ = init.connector(states, mask)
    assert (out_a - out_0).abs().max() > 1e-2  # training moved the connector ...
    torch.testing.assert_close(out_a, out_b, atol=1e-4, rtol=1e-4)  # ... the same way in both set-ups


def test_time_scale_decays_linearly_over_the_limit():
    from sltalign.train import time_scale

    assert [time_scale(t, 10.0) for t in (0.0, 2.5, 5.0, 10.0, 12.0)] == [1.0, 0.75, 0.5, 0.0, 0.0]
    assert time_scale(3.0, 0.0) == 1.0  # no limit: no decay


def test_time_decay_needs_a_time_limit_and_ends_near_zero(tmp_path, tiny_whisper_dir, sharp_marian_dir):
    from sltalign.config import ConfigError

    stage = "[{name: ctc, steps: 100000, lr: 0.003, warmup: 2, objectives: {ctc: 1.0}, evaluate: false, time_decay: true%s}]"
    with pytest.raises(ConfigError, match="time_decay: needs a time limit"):
        config(tmp_path, tiny_whisper_dir, sharp_marian_dir, "a", stages=stage % "")
    # 6 s of clock: enough logged steps even when other jobs load the machine (3 s once gave a single row)
    cfg = config(tmp_path, tiny_whisper_dir, sharp_marian_dir, "b", stages=stage % ", max_minutes: 0.1")
    summary = train(cfg, progress=True)  # progress on: the clock-driven bar (seconds, not steps) runs too
    assert summary["steps"] < 100000  # the clock ended the stage
    rows = list(csv.DictReader((Path(cfg.out) / "metrics.csv").open()))
    lrs = [float(r["value"]) for r in rows if r["name"] == "lr"][2:]  # after the warmup
    assert len(lrs) >= 3
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))  # the clock only moves forward
    assert lrs[-1] < 0.5 * 0.003  # most of the decay happened: the schedule followed the clock, not the steps


@pytest.mark.parametrize("value", ["1.5", "-3"])
def test_max_piece_seconds_is_validated(tmp_path, value):
    from sltalign.config import ConfigError

    with pytest.raises(ConfigError, match="max_piece_seconds: expected null"):
        load_config(None, [f"max_piece_seconds={value}"])
    assert load_config(None, ["max_piece_seconds=0"]).max_piece_seconds == 0.0


def test_ctc_only_recipe_trains_without_translations(tmp_path, tiny_whisper_dir, sharp_marian_dir):
    """CTC alone learns from transcripts: the training split may be speech recognition data (no translations);
    a recipe with a translation objective refuses such a split, naming the field."""
    from sltalign.data.manifest import read_manifest

    stages = "[{name: ctc, steps: 2, lr: 0.003, warmup: 0, objectives: {ctc: 1.0}}]"
    cfg = config(tmp_path, tiny_whisper_dir, sharp_marian_dir, "run", stages=stages)
    asr_only = [dataclasses.replace(u, translation=None, translation_source=None) for u in read_manifest(cfg.data.train)]
    cfg.data.train = str(write_manifest(tmp_path / "asr.jsonl", asr_only))
    assert train(cfg, progress=False)["steps"] == 2
    ce = config(
        tmp_path / "ce",
        tiny_whisper_dir,
        sharp_marian_dir,
        "run",
        stages="[{name: t, steps: 2, lr: 0.003, warmup: 0, objectives: {ce: 1.0}}]",
    )
    ce.data.train = cfg.data.train
    with pytest.raises(ValueError, match="translation"):
        train(ce, progress=False)


def test_encoder_precision_auto_resolves_per_device_and_is_recorded(tmp_path, tiny_whisper_dir, sharp_marian_dir, monkeypatch):
    """ "auto" picks bf16 only where the CPU has AMX tiles (elsewhere bf16 is emulated and slow); the checkpoint
    records the precision actually used, so translation encodes the way training did."""
    from sltalign.config import ConfigError
    from sltalign.foundation.base import resolve_precision

    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("half")
    with pytest.raises(ConfigError, match="model.encoder_precision"):
        load_config(None, ["model.encoder_precision=fp16"])
    stages = "[{name: ctc, steps: 2, lr: 0.003, warmup: 0, objectives: {ctc: 1.0}}]"
    cfg = config(tmp_path, tiny_whisper_dir, sharp_marian_dir, "run", stages=stages, **{"model.encoder_precision": "auto"})
    train(cfg, progress=False)
    model, cfg_json = load_connector(Path(cfg.out) / "best")
    assert cfg_json["speech_encoder"]["precision"] == "bf16" == model.speech_encoder.precision


def test_ctc_over_pieces_trains_saves_its_pieces_and_restarts_from_them(tmp_path, tiny_whisper_dir, sharp_marian_dir):
    """model.ctc_head=pieces: the run learns word pieces from its transcripts, trains the head on them, and every
    checkpoint carries the pieces: loading, resuming and init_from spell with the same ones; a checkpoint
    without them, or an init_from with another kind of head, is refused by name."""
    import shutil

    from sltalign.checkpoint import CheckpointError
    from sltalign.connectors.pieces import PIECES_FILE, PieceCTCHead

    stages = "[{name: ctc, steps: 3, lr: 0.003, warmup: 0, objectives: {ctc: 1.0}}]"
    cfg = config(tmp_path, tiny_whisper_dir, sharp_marian_dir, "run", stages=stages, **PIECES)
    summary = train(cfg, progress=False)
    assert summary["steps"] == 3
    out = Path(cfg.out)
    names = {(r["split"], r["name"]) for r in csv.DictReader((out / "metrics.csv").open())}
    assert {("train", "loss_ctc"), ("dev", "bleu"), ("dev", "ctc_wer")} <= names
    pieces = PieceCTCHead.read_data(out / "best")
    assert pieces == PieceCTCHead.read_data(out / "last")
    model, ckpt_cfg = load_connector(out / "best")
    assert isinstance(model.ctc_head, PieceCTCHead) and model.ctc_head.model_proto == pieces
    assert ckpt_cfg["ctc_head"] == {
        "kind": "pieces",
        "embed_dim": model.translator.embed_dim,
        "vocab_size": model.ctc_head.vocab_size,
    }
    # the pieces spell the training transcripts exactly
    assert model.ctc_head.decode(model.ctc_head.encode(["the cat sat on the mat"])) == ["the cat sat on the mat"]

    # init_from: the new run starts from the same pieces, not ones learned again
    again = config(
        tmp_path / "b", tiny_whisper_dir, sharp_marian_dir, "run2", stages=stages, init_from=str(out / "best"), **PIECES
    )
    train(again, progress=False)
    assert PieceCTCHead.read_data(Path(again.out) / "best") == pieces
    tied = config(tmp_path / "c", tiny_whisper_dir, sharp_marian_dir, "run3", stages=stages, init_from=str(out / "best"))
    with pytest.raises(ValueError, match="CTC head is 'pieces'"):
        train(tied, progress=False)
    tied.init_from = None
    train(tied, progress=False)  # and the other way round: a tied head cannot start a run over pieces
    from_tied = config(
        tmp_path / "d",
        tiny_whisper_dir,
        sharp_marian_dir,
        "run4",
        stages=stages,
        init_from=str(Path(tied.out) / "best"),
        **PIECES,
    )
    with pytest.raises(ValueError, match="CTC head is 'tied', the configured one is 'pieces'"):
        train(from_tied, progress=False)

    broken = tmp_path / "broken"
    shutil.copytree(out / "best", broken)
    (broken / PIECES_FILE).unlink()
    with pytest.raises(CheckpointError, match=PIECES_FILE):
        load_connector(broken)


def test_ctc_over_phones_trains_saves_its_lexicon_and_restarts_from_it(tmp_path, tiny_whisper_dir, sharp_marian_dir):
    """model.ctc_head=phones: the run phonemises its transcripts (targets) and the lexicon text minus the dev
    sentences, trains the head on the phones, and every checkpoint carries units and lexicon; init_from keeps
    them; a checkpoint without them is refused by name."""
    import json
    import shutil

    from sltalign.checkpoint import CheckpointError
    from sltalign.connectors.phones import PHONES_FILE, PhoneCTCHead

    text = tmp_path / "lexicon.txt"
    text.write_text("My brother bought a red bicycle.\nThe cat sat on the mat\nWhere is the railway station?\n")
    stages = "[{name: ctc, steps: 3, lr: 0.003, warmup: 0, objectives: {ctc: 1.0}}]"
    phones = {
        "model.ctc_head": "phones",
        "model.compression": "hard",
        "model.lexicon_text": f"[{text}]",
        # one conv stage: 25 outputs/s, what a phone head needs (two stages are refused, below)
        "model.connector_args": "{d: 32, layers: 1, heads: 2, ffn: 64, conv_channels: 32, dropout: 0.0, conv_stages: 1}",
    }
    cfg = config(tmp_path, tiny_whisper_dir, sharp_marian_dir, "run", stages=stages, **phones)
    summary = train(cfg, progress=False)
    assert summary["steps"] == 3
    out = Path(cfg.out)
    names = {(r["split"], r["name"]) for r in csv.DictReader((out / "metrics.csv").open())}
    assert {("train", "loss_ctc"), ("dev", "bleu"), ("dev", "ctc_wer")} <= names
    state = PhoneCTCHead.read_data(out / "best")
    assert state == PhoneCTCHead.read_data(out / "last")
    model, ckpt_cfg = load_connector(out / "best")
    head = model.ctc_head
    assert isinstance(head, PhoneCTCHead) and json.loads(json.dumps(head.state())) == state
    assert ckpt_cfg["ctc_head"] == {"kind": "phones", "embed_dim": model.translator.embed_dim, "vocab_size": head.vocab_size}
    words = set(head.lexicon.table.values())
    assert {"bicycle", "railway"} <= words  # from the lexicon text
    # the read-out: the default lexicon search, its word LM over the same text, both in the checkpoint and card
    from sltalign.connectors.phones import LM_FILE

    assert state["search"]["beam"] > 0 and state["search"]["lm_weight"] > 0 and (out / "best" / LM_FILE).is_file()
    assert "Where is the railway station?" in head.lm_text
    assert "(read-out: lexicon search (beam" in (out / "best" / "README.md").read_text()
    assert "dog" in words  # from the training transcripts (dev is part of train in this tiny corpus)
    assert head.decode(head.encode(["a red bicycle"])) == ["A red bicycle."]
    # the public API loads and translates through the phones (the MT path itself: test_model.py)
    from sltalign import SpeechTranslator

    st = SpeechTranslator.from_pretrained(out / "best", beam=1)
    assert isinstance(st.model.ctc_head, PhoneCTCHead) and st.model.compression == "hard"
    out_texts = st.translate([speechlike(0.9, seed=5), speechlike(1.3, seed=6)])
    assert len(out_texts) == 2 and all(isinstance(t, str) for t in out_texts)

    again = config(
        tmp_path / "b",
        tiny_whisper_dir,
        sharp_marian_dir,
        "run2",
        stages=stages,
        init_from=str(out / "best"),
        **{**phones, "model.lexicon_text": "[trans-de-en:nothing]"},
    )  # init_from: never built again
    train(again, progress=False)
    assert PhoneCTCHead.read_data(Path(again.out) / "best") == state
    pieces = config(
        tmp_path / "c", tiny_whisper_dir, sharp_marian_dir, "run3", stages=stages, init_from=str(out / "best"), **PIECES
    )
    with pytest.raises(ValueError, match="CTC head is 'phones', the configured one is 'pieces'"):
        train(pieces, progress=False)

    broken = tmp_path / "broken"
    shutil.copytree(out / "best", broken)
    (broken / PHONES_FILE).unlink()
    with pytest.raises(CheckpointError, match=PHONES_FILE):
        load_connector(broken)
    bad = config(
        tmp_path / "d",
        tiny_whisper_dir,
        sharp_marian_dir,
        "run4",
        stages=stages,
        **{**phones, "model.lexicon_text": "[trans-de-en:nothing]"},
    )
    with pytest.raises(ValueError, match="unknown source 'trans-de-en:nothing'"):
        train(bad, progress=False)
    coarse = config(
        tmp_path / "e",
        tiny_whisper_dir,
        sharp_marian_dir,
        "run5",
        stages=stages,
        **{**phones, "model.connector_args": "{d: 32, layers: 1, heads: 2, ffn: 64, conv_channels: 32, conv_stages: 2}"},
    )
    with pytest.raises(ValueError, match=r"needs >= 15 connector outputs per second; 'ste' as configured gives 12.5/s"):
        train(coarse, progress=False)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"model.ctc_head": "pieces", "model.ctc_vocab_size": "4"},
            "ctc_vocab_size: a CTC head over pieces needs a number of pieces >= 8",
        ),
        ({"model.ctc_head": "pieces"}, "ctc_vocab_size: a CTC head over pieces needs"),
        ({"model.ctc_head": "phones", "model.ctc_vocab_size": "64"}, "ctc_vocab_size: applies to model.ctc_head=pieces only"),
        ({"model.ctc_head": "tokens"}, "ctc_head: expected one of none, tied, pieces, phones, got 'tokens'"),
        ({"model.ctc_head": "none", "model.compression": "soft"}, "compression needs a CTC head"),
        (
            {"model.ctc_head": "pieces", "model.ctc_vocab_size": "64", "model.compression": "posterior"},
            "pieces reaches the MT as text, so 'hard' or null",
        ),
        ({"model.ctc_head": "phones", "model.compression": "soft"}, "phones reaches the MT as text, so 'hard' or null"),
        # the older flags: read into ctc_head, their contradictions named
        ({"model.ctc": "true", "model.ctc_pieces": "4"}, "ctc_vocab_size: a CTC head over pieces needs"),
        ({"model.ctc_pieces": "64", "model.ctc": "false"}, "ctc_pieces needs model.ctc: true"),
        ({"model.ctc_phones": "true", "model.ctc": "false"}, "ctc_phones needs model.ctc: true"),
        ({"model.ctc_phones": "true", "model.ctc_pieces": "64"}, "exclude each other"),
        ({"model.ctc": "yes please"}, "model.ctc: expected true or false"),
        ({"model.lexicon_text": "text.txt"}, "model.lexicon_text: expected list, got text.txt"),
    ],
)
def test_ctc_head_is_validated(overrides, message):
    from sltalign.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"{k}={v}" for k, v in overrides.items()])


@pytest.mark.parametrize(
    "flags, kind, size",
    [
        ({"ctc": True}, "tied", 0),
        ({"ctc": False}, "none", 0),
        ({"ctc": True, "ctc_phones": True}, "phones", 0),
        ({"ctc": True, "ctc_pieces": 64}, "pieces", 64),
        ({"ctc_phones": True}, "phones", 0),
        ({"ctc": True, "ctc_phones": False, "ctc_pieces": 0}, "tied", 0),
    ],
)
def test_older_ctc_flags_are_read_into_ctc_head(tmp_path, flags, kind, size):
    """Configs written before ``ctc_head`` (``ctc``, ``ctc_phones``, ``ctc_pieces``) train the same head; a
    command-line ``model.ctc=true`` on a preset that names a phone head keeps that head."""
    import yaml

    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"model": {**flags, "compression": None}, "stages": [{"objectives": {"ce": 1.0}}]}))
    cfg = load_config(path)
    assert (cfg.model.ctc_head, cfg.model.ctc_vocab_size) == (kind, size)
    assert load_config("src/sltalign/configs/phones.yaml", ["model.ctc=true"]).model.ctc_head == "phones"
    assert (
        load_config(
            "src/sltalign/configs/phones.yaml", ["model.ctc=false", "model.compression=null", "stages.0.objectives={ce: 1.0}"]
        ).model.ctc_head
        == "none"
    )


def test_resume_with_pieces_reads_them_from_the_checkpoint(tmp_path, tiny_whisper_dir, sharp_marian_dir, monkeypatch):
    """After a kill, the run resumes with the pieces OUT/last carries; it never learns them again (the
    transcripts could have changed on disk, and other pieces would make the trained head meaningless)."""
    import sltalign.connectors.pieces as pieces_mod
    from sltalign.connectors.pieces import PieceCTCHead

    stages = "[{name: ctc, steps: 5, lr: 0.003, warmup: 0, objectives: {ctc: 1.0}, evaluate: false}]"
    cfg = config(tmp_path, tiny_whisper_dir, sharp_marian_dir, "run", stages=stages, **PIECES)
    train_killed_at_step(cfg, 4, monkeypatch)
    saved = PieceCTCHead.read_data(Path(cfg.out) / "last")

    def no_relearning(*a, **k):
        raise AssertionError("pieces learned again on resume")

    monkeypatch.setattr(pieces_mod, "train_pieces", no_relearning)
    assert train(cfg, progress=False)["steps"] == 5
    assert PieceCTCHead.read_data(Path(cfg.out) / "last") == saved


def _metric_keys(out: Path) -> list[tuple[str, str, str]]:
    return [(r["step"], r["split"], r["name"]) for r in csv.DictReader((out / "metrics.csv").open())]


def test_resume_from_a_write_killed_between_its_renames_logs_each_step_once(
    tmp_path, tiny_whisper_dir, sharp_marian_dir, monkeypatch
):
    """Cases 16, 17, 18: a kill between the two renames of OUT/last left only .last.old and the rerun restarted
    from step 1 (then deleted .last.old); steps between the last save and the kill were logged twice; killed
    writes' temporaries stayed forever. Now the rerun resumes from .last.old, cuts metrics.csv back to the
    save and removes the temporaries, and ends where an uninterrupted run ends."""
    cfg = config(tmp_path, tiny_whisper_dir, sharp_marian_dir, "run", eval_every="100")
    out = Path(cfg.out)
    train_killed_at_step(cfg, 6, monkeypatch)  # saved at step 4, logged steps 1-5
    assert max(int(s) for s, _, _ in _metric_keys(out)) == 5
    os.rename(out / "last", out / ".last.old")  # the state a kill between the renames leaves
    (out / ".last.tmp-dead1").mkdir()
    (out / ".last.tmp-dead1" / "connector.safetensors").write_bytes(b"\0" * 100)
    (out / ".best.tmp-dead2").mkdir()
    original, calls = Objectives.__call__, {"n": 0}

    def counted(self, model, batch):
        calls["n"] += 1
        return original(self, model, batch)

    monkeypatch.setattr(Objectives, "__call__", counted)
    summary = train(cfg, progress=False)
    assert summary["steps"] == 9
    assert calls["n"] == 5, "the rerun did not resume from .last.old (step 4)"
    keys = _metric_keys(out)
    assert len(keys) == len(set(keys)), "a step was logged twice"
    assert sorted({int(s) for s, split, _ in keys if split == "train"}) == list(range(1, 10))
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".lock") == []
    assert load_connector(out / "last")[1]["training"]["loop"]["global_step"] == 9


def test_a_second_run_on_the_same_out_fails_at_once_and_a_stale_lock_is_taken_over(tmp_path):
    """Case 15 and item 3: two runs on one OUT crashed each other; now the second fails before any model loads,
    naming the pid that holds OUT; a lock file left by a killed run does not block."""
    from sltalign.train import OutInUseError, lock_out

    out = tmp_path / "run"
    cfg = load_config(None, [f"out={out}", "model.speech_encoder=/nonexistent/encoder", "model.translator=/nonexistent/mt"])
    out.mkdir()
    with lock_out(out):
        with pytest.raises(OutInUseError, match=f"out: {out} is in use by pid {os.getpid()}"):
            train(cfg, progress=False)
    (out / ".lock").write_text("999999999\n")  # a killed run's pid: the kernel released its lock
    with lock_out(out):
        assert (out / ".lock").read_text().strip() == str(os.getpid())
    # and once the lock is free, the run goes on to load models (here: a clear error for the missing one)
    with pytest.raises(FileNotFoundError, match="nonexistent"):
        train(cfg, progress=False)


def test_out_naming_an_existing_file_is_one_clear_error(tmp_path):
    """Case 13: out= naming a file gave a FileExistsError traceback."""
    from sltalign.config import ConfigError

    (tmp_path / "taken").write_text("not a directory")
    cfg = load_config(None, [f"out={tmp_path / 'taken'}"])
    with pytest.raises(ConfigError, match=f"out: {tmp_path / 'taken'} exists and is not a directory"):
        train(cfg, progress=False)


def test_metrics_log_truncates_to_the_saved_rows_or_steps(tmp_path):
    from sltalign.train import MetricsLog

    log = MetricsLog(tmp_path / "metrics.csv", True)
    for step in range(1, 6):
        log.write(step, 0.1 * step, "train", {"loss": 1.0 / step, "lr": 0.1})
    assert log.rows == 10
    with (tmp_path / "metrics.csv").open("a") as f:
        f.write("6,0.6,tra")  # a row torn by a kill
    again = MetricsLog(tmp_path / "metrics.csv", True)
    assert again.truncate(4, step=2) == 7 and again.rows == 4
    assert [k[0] for k in _metric_keys(tmp_path)] == ["1", "1", "2", "2"]
    again.write(3, 0.3, "train", {"loss": 0.3})
    assert MetricsLog(tmp_path / "metrics.csv", True).truncate(-1, step=2) == 1  # unknown rows: by step


#: one CTC stage: training reads transcripts only (the people set has no translations)
CTC_ONLY = {"stages": "[{name: ctc, steps: 2, lr: 0.003, warmup: 1, objectives: {ctc: 1.0}, evaluate: false}]"}


def test_more_train_sets_join_the_training_data(tmp_path, tiny_whisper_dir, sharp_marian_dir):
    """data.more_train adds manifests after data.train (people's voices beside a synthetic corpus), each repeated
    more_train_repeat times under other ids; a clash of ids, an empty set or a repeat for no set is refused by
    name."""
    from sltalign.train import select_utterances

    extra = tmp_path / "people"
    extra.mkdir()
    utts = []
    for i in range(3):
        wav = speechlike(1.2 + 0.1 * i, seed=50 + i)  # longer than every clip of the corpus
        sf.write(extra / f"p{i}.wav", wav, 16000)
        utts.append(Utterance(id=f"p{i}", audio=str(extra / f"p{i}.wav"), duration=len(wav) / 16000, transcript=TEXTS[i][0]))
    people = write_manifest(extra / "manifest.jsonl", utts)
    cfg = config(
        tmp_path,
        tiny_whisper_dir,
        sharp_marian_dir,
        "run",
        **{"data.more_train": f"{{people: {people}}}", "data.more_train_repeat": "{people: 2}"},
        **CTC_ONLY,
    )
    train_utts, _ = select_utterances(cfg)
    ids = [u.id for u in train_utts]
    assert ids == [f"u{i}" for i in range(8)] + ["p0", "p1", "p2", "p0~1", "p1~1", "p2~1"]
    assert [u.audio for u in train_utts[-3:]] == [u.audio for u in train_utts[-6:-3]]  # the same clips again
    summary = train(cfg, progress=False)  # CTC-only: the people set needs transcripts, not translations
    assert summary["steps"] == 2
    index = (Path(cfg.data.cache_dir) / "index.jsonl").read_text().splitlines()
    assert len({json.loads(line)["k"] for line in index}) == len(index) == 11  # 8 + 3 clips: repeats encoded once

    clash = write_manifest(tmp_path / "clash.jsonl", [dataclasses.replace(utts[0], id="u1")])
    bad = config(tmp_path, tiny_whisper_dir, sharp_marian_dir, "run2", **{"data.more_train": f"{{people: {clash}}}"}, **CTC_ONLY)
    with pytest.raises(ValueError, match=r"data.more_train.people: .*clash.jsonl: utterance id 'u1' is also in .*train.jsonl"):
        select_utterances(bad)
    short = config(
        tmp_path,
        tiny_whisper_dir,
        sharp_marian_dir,
        "run3",
        **{"data.more_train": f"{{people: {people}}}", "data.max_duration": "1.0"},
        **CTC_ONLY,
    )
    with pytest.raises(ValueError, match=r"data.more_train.people: .*manifest.jsonl has no utterance"):
        select_utterances(short)
    with pytest.raises(Exception, match=r"data.more_train_repeat.others: no data.more_train set"):
        config(tmp_path, tiny_whisper_dir, sharp_marian_dir, "run4", **{"data.more_train_repeat": "{others: 2}"})
    with pytest.raises(Exception, match=r"data.more_train_repeat.people: expected a whole number >= 1, got 0"):
        config(
            tmp_path,
            tiny_whisper_dir,
            sharp_marian_dir,
            "run5",
            **{"data.more_train": f"{{people: {people}}}", "data.more_train_repeat": "{people: 0}"},
        )
