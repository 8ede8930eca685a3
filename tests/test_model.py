"""AlignedST on tiny random foundations loaded through the hub-id code path: both arrangements x every
connector; frozen means frozen; padding invariance; losses fall on a batch the connector can overfit."""

from __future__ import annotations

import pytest
import torch

from sltalign.connectors import CONNECTORS, TiedCTCHead, build_connector
from sltalign.connectors.pieces import PieceCTCHead, train_pieces
from sltalign.foundation import load_speech_encoder, load_translator
from sltalign.model import IGNORE, AlignedST
from tests.conftest import speechlike

PAIRS = [("the cat sat on the mat", ""), ("a dog runs in the park", ""), ("we like green tea", "")]

SIZES = {  # tiny connectors: the behaviour, not the size, is under test
    "ste": dict(d=32, layers=1, heads=2, ffn=64, conv_channels=32),
    "qformer": dict(n_queries=6, d=32, layers=1, heads=2, ffn=64),
    "window_qformer": dict(window=10, queries_per_window=2, d=32, layers=1, heads=2, ffn=64),
    "mlp": dict(stack=4, hidden=64),
    "hypothesis": dict(d=32, heads=2, layers=1, ffn=64),
}
#: connectors on encoder states; "hypothesis" needs the Whisper decoder as its source (tests/test_soft_cascade.py)
ENCODER_CONNECTORS = sorted(set(SIZES) - {"hypothesis"})


@pytest.fixture(scope="module")
def speech(tiny_whisper_dir):
    return load_speech_encoder(str(tiny_whisper_dir), mode="trim")


@pytest.fixture(scope="module")
def marian(sharp_marian_dir):
    return load_translator(str(sharp_marian_dir))


def make(speech, translator, name: str, arrangement: str, **kw) -> AlignedST:
    torch.manual_seed(0)
    conn = build_connector(name, in_dim=speech.dim, out_dim=translator.embed_dim, **SIZES[name])
    return AlignedST(speech_encoder=speech, connector=conn, translator=translator, arrangement=arrangement, **kw)


def batch_for(model: AlignedST, texts=("the cat sat on the mat", "a dog runs")):
    wavs = [speechlike(1.2, seed=1), speechlike(0.7, seed=2)]
    states, mask = model.encode_audio(wavs)
    ids = model.translator.tokenize_target(list(texts))
    targets = torch.full((len(ids), max(map(len, ids))), IGNORE)
    for i, row in enumerate(ids):
        targets[i, : len(row)] = torch.tensor(row)
    return states, mask, targets


def test_connectors_registered():
    assert set(SIZES) == set(CONNECTORS)


@pytest.mark.parametrize("arrangement", ["ecd", "eced"])
@pytest.mark.parametrize("name", ENCODER_CONNECTORS)
def test_shapes_loss_decreases_and_frozen(speech, marian, name, arrangement):
    model = make(speech, marian, name, arrangement)
    states, mask, targets = batch_for(model)
    assert states.shape[:2] == mask.shape and states.shape[2] == speech.dim
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("connector.")}
    model.train()
    # Frozen parts stay in eval mode (no dropout) even though the model is in train mode.
    assert not model.translator.training and not model.speech_encoder.training
    assert all(not m.training for m in model.translator.modules())
    assert model.connector.training
    logits, bridged = model(states, mask, targets)
    assert logits.shape == (*targets.shape, model.translator.target_vocab_size)
    assert bridged.memory.shape[0] == 2 and bridged.memory.shape[2] == marian.embed_dim
    assert bridged.memory_mask.shape == bridged.memory.shape[:2]
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model.loss(states, mask, targets)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        losses.append(loss.item())
        for pname, p in model.named_parameters():
            if pname.startswith("connector."):
                continue
            assert p.grad is None, f"frozen parameter {pname} received a gradient"
        opt.step()
    assert losses[-1] < losses[0] - 0.1, losses
    # Every trainable parameter is a connector parameter, and the foundations are bit-identical.
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"connector.{n}" for n, _ in model.connector.named_parameters()
    }
    for k, v in model.state_dict().items():
        if k in frozen_before:
            assert torch.equal(v, frozen_before[k]), f"{k} changed"


@pytest.mark.parametrize("name", ["ste", "qformer"])
@pytest.mark.parametrize("arrangement", ["ecd", "eced"])
def test_padding_invariance(speech, marian, name, arrangement):
    """An utterance's logits do not change when it is batched with a longer one."""
    model = make(speech, marian, name, arrangement).eval()
    short, long = speechlike(0.6, seed=3), speechlike(1.9, seed=4)
    target = torch.tensor([marian.tokenize_target(["the cat sat"])[0]])
    with torch.no_grad():
        s1, m1 = model.encode_audio([short])
        alone, _ = model(s1, m1, target)
        s2, m2 = model.encode_audio([long, short])
        t2 = torch.full((2, target.shape[1]), IGNORE)
        t2[1] = target[0]
        t2[0] = target[0]
        both, _ = model(s2, m2, t2)
    torch.testing.assert_close(both[1], alone[0], atol=1e-4, rtol=1e-4)
    g1 = model.generate(s1, m1, beam=2, max_len=8)
    g2 = model.generate(s2, m2, beam=2, max_len=8)
    assert g2[1] == g1[0]


def test_eced_prompt_and_ctc_compression(speech, tiny_t5_dir):
    t5 = load_translator(str(tiny_t5_dir), source_prefix="translate English to Portuguese: ")
    for mode in ("hard", "soft", "posterior"):
        model = make(
            speech,
            t5,
            "ste",
            "eced",
            prompt="translate English to Portuguese: ",
            ctc_head=TiedCTCHead(embed_dim=t5.embed_dim),
            compression=mode,
        )
        states, mask, targets = batch_for(model)
        logits, bridged = model(states, mask, targets)
        n_prompt = model.prompt_embeddings.shape[0]
        assert n_prompt > 0
        assert bridged.ctc_logits.shape[-1] == t5.source_vocab_size + 1
        # memory = prompt + compressed segments; the mask counts both
        assert bridged.memory_mask[:, :n_prompt].all()
        assert bridged.memory.shape[1] >= n_prompt + 1
        assert torch.isfinite(logits).all()
        if mode != "hard":  # hard compression is argmax rows: no gradient path by design
            model.loss(states, mask, targets).backward()
            assert model.connector.proj.weight.grad is not None if hasattr(model.connector, "proj") else True


def test_ctc_transcribe_collapses_repeats_and_blanks(speech, marian):
    """Greedy CTC read-out: repeats merge, blanks split and vanish, an all-blank utterance is ""."""
    model = make(speech, marian, "mlp", "eced", ctc_head=TiedCTCHead(embed_dim=marian.embed_dim))
    states, mask, _ = batch_for(model)
    v = marian.source_vocab_size
    cat, sat = marian.tokenize_source(["cat sat"])[0][:2]

    class Scripted(TiedCTCHead):  # the tied head with its frame-by-frame argmax scripted
        def forward(self, out, emb):
            logits = torch.zeros(out.shape[0], out.shape[1], v + 1)
            logits[..., v] = 1.0  # blank everywhere ...
            for t, tok in enumerate([cat, cat, v, sat, v, sat]):  # ... except: cat cat _ sat _ sat
                logits[0, t, tok] = 2.0
            return logits

    model.ctc_head = Scripted(embed_dim=marian.embed_dim)
    heard = model.ctc_transcribe(states, mask)
    assert heard == [marian.detokenize_source([[cat, sat, sat]])[0], ""]
    # one connector pass for dev evaluation: the same translations and transcripts as the two calls apart
    translated, transcribed = model.translate_and_transcribe(states, mask, beam=2, max_len=6)
    assert transcribed == heard
    assert translated == model.translate_states(states, mask, beam=2, max_len=6)
    model.ctc_head = None
    with pytest.raises(ValueError, match="CTC head"):
        model.translate_and_transcribe(states, mask)
    with pytest.raises(ValueError, match="CTC head"):
        model.ctc_transcribe(states, mask)


def test_piece_head_hands_the_mt_its_own_text_path(speech, marian):
    """A CTC head over word pieces: its greedy transcript is spelled out, tokenized by the MT's tokenizer and
    given to the MT encoder as the MT's own embedding rows, so the memory equals the MT reading that text;
    soft/posterior compression are refused (the head is not tied to the MT's embeddings)."""
    head = PieceCTCHead(embed_dim=marian.embed_dim, model_proto=train_pieces([t for t, _ in PAIRS] * 10, vocab_size=30))
    model = make(speech, marian, "mlp", "eced", ctc_head=head, compression="hard")
    states, mask, _ = batch_for(model)
    p = head.vocab_size
    spelled = head.encode(["the cat sat"])[0]

    path = [spelled[0]]  # the CTC path: a blank between two equal pieces, else one piece per frame
    for piece in spelled[1:]:
        path += [p, piece] if piece == path[-1] else [piece]

    class Scripted(PieceCTCHead):  # the real head with its frame-by-frame argmax scripted
        def forward(self, out, emb=None):
            logits = torch.zeros(out.shape[0], out.shape[1], p + 1)
            logits[..., p] = 1.0  # blank everywhere else
            for t, c in enumerate(path):
                logits[0, t, c] = 2.0
            return logits

    model.ctc_head = Scripted(embed_dim=marian.embed_dim, model_proto=head.model_proto)
    assert model.ctc_transcribe(states, mask) == ["the cat sat", ""]
    bridged = model.bridge(states, mask)
    for i, text in enumerate(["the cat sat", ""]):
        ids = marian.tokenize_source([text])[0] or [marian.eos_id]
        n = len(ids)
        assert bridged.memory_mask[i].sum() == n
        want = marian.encode_ids(torch.tensor([ids]), torch.ones(1, n, dtype=torch.bool))[0]
        torch.testing.assert_close(bridged.memory[i, :n], want, atol=1e-5, rtol=1e-5)
    conn = build_connector("mlp", in_dim=speech.dim, out_dim=marian.embed_dim, **SIZES["mlp"])
    for mode in ("soft", "posterior"):
        with pytest.raises(ValueError, match="pieces or phones supports compression 'hard'"):
            AlignedST(speech_encoder=speech, connector=conn, translator=marian, ctc_head=head, compression=mode)


def test_phone_head_reads_through_its_lexicon_into_the_mt_text_path(speech, marian):
    """A CTC head over phones: the greedy phones are spelled by the lexicon and that text reaches the MT as
    its own embedding rows (the memory equals the MT reading the text); the connector and head train, the
    foundations stay frozen."""
    from sltalign.connectors.phones import Lexicon, PhoneCTCHead, build_phone_inventory, phonemize

    texts = [t for t, _ in PAIRS]
    phones = phonemize(texts, "en-us")
    units = build_phone_inventory(phones)
    head = PhoneCTCHead(embed_dim=marian.embed_dim, units=units, lexicon=Lexicon.from_text(texts, phones))
    u = head.vocab_size
    heard = head.encode(["the cat sat"])[0]
    path = [heard[0]]
    for ph in heard[1:]:
        path += [u, ph] if ph == path[-1] else [ph]

    class Scripted(PhoneCTCHead):
        def forward(self, out, emb=None):
            logits = torch.zeros(out.shape[0], out.shape[1], u + 1)
            logits[..., u] = 1.0
            for t, c in enumerate(path):
                logits[0, t, c] = 2.0
            return logits

    scripted = Scripted(embed_dim=marian.embed_dim, units=units, lexicon=head.lexicon)
    model = make(speech, marian, "mlp", "eced", ctc_head=scripted, compression="hard")
    states, mask, _ = batch_for(model)
    assert states.shape[1] // SIZES["mlp"]["stack"] >= len(path)
    assert model.ctc_transcribe(states, mask) == ["The cat sat.", ""]
    bridged = model.bridge(states, mask)
    assert bridged.texts == ["The cat sat.", ""]  # the transcript the MT reads, kept for the caller
    searches = []
    read = scripted.read_logits
    scripted.read_logits = lambda *a, **k: searches.append(1) or read(*a, **k)
    translated, transcribed = model.translate_and_transcribe(states, mask, beam=2, max_len=6)
    assert transcribed == ["The cat sat.", ""]
    assert len(searches) == 1  # one search of the posteriors serves the translation and the transcript
    assert translated == model.translate_states(states, mask, beam=2, max_len=6)
    ids = marian.tokenize_source(["The cat sat."])[0]
    n = len(ids)
    want = marian.encode_ids(torch.tensor([ids]), torch.ones(1, n, dtype=torch.bool))[0]
    torch.testing.assert_close(bridged.memory[0, :n], want, atol=1e-5, rtol=1e-5)
    real = make(speech, marian, "mlp", "eced", ctc_head=head, compression="hard")
    assert {n for n, p in real.named_parameters() if p.requires_grad} == {
        *(f"connector.{k}" for k, _ in real.connector.named_parameters()),
        "ctc_head.proj.weight",
        "ctc_head.proj.bias",
    }
    assert not real.translator.training and not real.speech_encoder.training


def test_bad_construction(speech, marian):
    conn = build_connector("mlp", in_dim=speech.dim + 1, out_dim=marian.embed_dim, **SIZES["mlp"])
    with pytest.raises(ValueError, match="in_dim"):
        AlignedST(speech_encoder=speech, connector=conn, translator=marian)
    conn = build_connector("mlp", in_dim=speech.dim, out_dim=marian.embed_dim, **SIZES["mlp"])
    with pytest.raises(ValueError, match="arrangement"):
        AlignedST(speech_encoder=speech, connector=conn, translator=marian, arrangement="ecde")
    with pytest.raises(ValueError, match="CTC head"):
        AlignedST(speech_encoder=speech, connector=conn, translator=marian, compression="posterior")
    model = AlignedST(speech_encoder=speech, connector=conn, translator=marian)
    with pytest.raises(ValueError, match=r"\(B, T_s, D_s\)"):
        model.bridge(torch.zeros(3, speech.dim), torch.ones(3, dtype=torch.bool))


def test_parameter_report(speech, marian):
    model = make(speech, marian, "ste", "eced")
    rep = model.parameter_report()
    assert rep["trainable"] == rep["connector"] == sum(p.numel() for p in model.connector.parameters())
    assert rep["frozen"] == rep["speech_encoder"] + rep["translator"]
    assert 0 < rep["connector_share"] < 1
