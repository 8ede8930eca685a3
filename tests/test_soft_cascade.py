"""The soft cascade: the "hypothesis" connector over the Whisper decoder source, on tiny random foundations
loaded through the hub-id code path. It starts as the cascade, learns, keeps the foundations frozen, and its
checkpoints round-trip and name their source."""

from __future__ import annotations

import pytest
import torch

from sltalign.checkpoint import load_connector, read_config, save_connector
from sltalign.connectors import TiedCTCHead, build_connector
from sltalign.foundation import load_speech_encoder, load_translator
from sltalign.model import IGNORE, AlignedST
from tests.conftest import speechlike
from tests.foundation.test_whisper_decoder import make_tiny_whisper_asr

SIZES = dict(d=32, heads=2, layers=1, ffn=64)


@pytest.fixture(scope="module")
def source(tiny_dir):
    return load_speech_encoder(str(make_tiny_whisper_asr(tiny_dir)), mode="decoder")


@pytest.fixture(scope="module")
def marian(sharp_marian_dir):
    return load_translator(str(sharp_marian_dir))


@pytest.fixture(scope="module")
def clips(source):
    wavs = [speechlike(1.2, seed=1), speechlike(0.7, seed=2)]
    return wavs, *source.encode(wavs)


def make(source, marian, **kw) -> AlignedST:
    torch.manual_seed(0)
    conn = build_connector("hypothesis", in_dim=source.dim, out_dim=marian.embed_dim, **SIZES)
    return AlignedST(speech_encoder=source, connector=conn, translator=marian, arrangement="eced", **kw).eval()


def targets_for(model, texts=("the cat sat on the mat", "a dog runs")):
    ids = model.translator.tokenize_target(list(texts))
    t = torch.full((len(ids), max(map(len, ids))), IGNORE)
    for i, row in enumerate(ids):
        t[i, : len(row)] = torch.tensor(row)
    return t


def test_untrained_connector_is_the_cascade(source, marian, clips):
    """Zero output layer: the MT gets exactly its own embeddings of the recogniser's 1-best text."""
    model = make(source, marian)
    _, states, mask = clips
    texts = source.decode_text(source.hypothesis_ids(states, mask))
    assert model.translate_states(states, mask, beam=2, max_len=8) == marian.translate_text(texts, beam=2, max_len=8)


def test_trains_only_the_connector_and_learns(source, marian, clips):
    model = make(source, marian)
    _, states, mask = clips
    targets = targets_for(model)
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("connector.")}
    model.train()
    assert not model.speech_encoder.training and not model.translator.training
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss = model.loss(states, mask, targets)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("connector."))
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
    assert model.connector.out.weight.abs().sum() > 0  # the correction has left zero
    for k, v in model.state_dict().items():
        if k in frozen_before:
            assert torch.equal(v, frozen_before[k]), f"{k} changed"


def test_padding_and_batch_mates_do_not_change_a_clip(source, marian, clips):
    model = make(source, marian)
    with torch.no_grad():
        torch.nn.init.normal_(model.connector.out.weight, std=0.5)  # a trained-looking correction
    wavs, states, mask = clips
    target = targets_for(model, ("the cat", "the cat"))
    with torch.no_grad():
        both, _ = model(states, mask, target)
        n = int(mask[1].sum())
        alone, _ = model(states[1:2, :n], mask[1:2, :n], target[1:2])
    torch.testing.assert_close(both[1], alone[0], rtol=1e-4, atol=1e-4)


def test_checkpoint_round_trip_names_the_source(source, marian, clips, tmp_path):
    model = make(source, marian)
    with torch.no_grad():
        torch.nn.init.normal_(model.connector.out.weight, std=0.5)
    wavs, states, mask = clips
    target = targets_for(model)
    with torch.no_grad():
        before, _ = model(states, mask, target)
    ckpt = save_connector(model, tmp_path / "ckpt")
    cfg = read_config(ckpt)
    assert cfg["speech_encoder"]["mode"] == "decoder" and cfg["connector"]["name"] == "hypothesis"
    loaded, _ = load_connector(ckpt)
    s2, m2 = loaded.encode_audio(wavs)
    with torch.no_grad():
        after, _ = loaded(s2, m2, target)
    assert torch.equal(before, after)
    # evaluation on cached states: no recogniser loaded, the text is read back with the tokenizer alone
    cached, _ = load_connector(ckpt, load_speech=False)
    assert cached.speech_encoder is None
    with torch.no_grad():
        again, _ = cached(states, mask, target)
    assert torch.equal(before, again)


def test_tied_ctc_variant_reads_the_decoder_states(source, marian, clips):
    """The other soft-cascade connector: a windowed Q-Former that upsamples the decoder states (3 outputs per
    state) under the tied CTC head, hard or posterior compression into the MT."""
    _, states, mask = clips
    for compression in ("hard", "posterior"):
        torch.manual_seed(0)
        conn = build_connector(
            "window_qformer",
            in_dim=source.dim,
            out_dim=marian.embed_dim,
            window=1,
            queries_per_window=3,
            d=32,
            layers=1,
            heads=2,
            ffn=64,
        )
        model = AlignedST(
            speech_encoder=source,
            connector=conn,
            translator=marian,
            arrangement="eced",
            ctc_head=TiedCTCHead(embed_dim=marian.embed_dim),
            compression=compression,
        ).eval()
        with torch.no_grad():
            bridged = model.bridge(states, mask)
        assert bridged.connector_out.shape[1] == 3 * states.shape[1]
        assert bridged.ctc_logits.shape[-1] == marian.source_vocab_size + 1
        assert len(model.ctc_transcribe(states, mask)) == 2


def test_hypothesis_connector_needs_the_decoder_source(marian, tiny_whisper_dir):
    encoder = load_speech_encoder(str(tiny_whisper_dir), mode="trim")
    conn = build_connector("hypothesis", in_dim=encoder.dim, out_dim=marian.embed_dim, **SIZES)
    with pytest.raises(ValueError, match="Whisper decoder as the speech source"):
        AlignedST(speech_encoder=encoder, connector=conn, translator=marian, arrangement="eced")


def test_demo_recipes_and_preset():
    """--help lists exactly the demo's recipes, and the soft cascade's preset validates as shipped."""
    from sltalign.cli import DEMO_RECIPES
    from sltalign.config import load_config
    from sltalign.demo import RECIPES, preset_path

    assert set(DEMO_RECIPES) == set(RECIPES)
    cfg = load_config(preset_path(RECIPES["soft_cascade"][0]), ["data.train=t.jsonl", "data.dev=d.jsonl"])
    assert cfg.model.encoder_mode == "decoder" and cfg.model.connector == "hypothesis" and cfg.eval_at_start
    assert not cfg.augment.active  # SpecAugment would zero the hypothesis token channels


def test_config_refuses_masking_the_decoder_source():
    from sltalign.config import ConfigError, load_config
    from sltalign.demo import preset_path

    with pytest.raises(ConfigError, match="augment"):
        load_config(preset_path("soft_cascade.yaml"), ["data.train=t.jsonl", "augment.time_mask_ratio=0.1"])
