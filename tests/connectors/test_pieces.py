"""The CTC head over word pieces: deterministic pieces, exact spelling, clear errors."""

from __future__ import annotations

import pytest
import torch

from sltalign.connectors.pieces import PieceCTCHead, train_pieces

TEXTS = [
    "The cat sat on the mat.",
    "A dog runs in the park, doesn't it?",
    "We like green tea; they like coffee!",
    "The house is very old and the garden is small.",
    "Where is the railway station?",
    "Heinrich's 42 apples weren't ripe.",
] * 20


def test_pieces_are_deterministic_and_spell_text_back_exactly():
    a = train_pieces(TEXTS, vocab_size=50)
    assert a == train_pieces(iter(TEXTS), vocab_size=50)  # same text, same pieces (a generator is fine)
    head = PieceCTCHead(embed_dim=8, model_proto=a)
    assert head.vocab_size == 50
    ids = head.encode(TEXTS[:6])
    assert all(0 <= i < 50 for row in ids for i in row)
    # casing, punctuation and digits survive: the MT reads the decoded text
    assert head.decode(ids) == TEXTS[:6]
    # a rare word is spelled from pieces, not lost (character coverage is complete)
    assert head.decode(head.encode(["The cat sat on the garden railway."])) == ["The cat sat on the garden railway."]


def test_unknown_characters_are_dropped_not_decoded_as_unk():
    head = PieceCTCHead(embed_dim=8, model_proto=train_pieces(TEXTS, vocab_size=50))
    text = "the cat \u00e6 sat"  # \u00e6 never occurs in the training text
    ids = head.encode([text])[0]
    assert 0 in ids  # it maps to <unk> (id 0) ...
    assert "\u2047" not in head.decode([ids])[0] and "cat" in head.decode([ids])[0]  # ... which decoding drops


def test_forward_shape_and_blank_last():
    torch.manual_seed(0)
    head = PieceCTCHead(embed_dim=8, model_proto=train_pieces(TEXTS, vocab_size=40))
    out = head(torch.randn(2, 5, 8))
    assert out.shape == (2, 5, 41)  # (B, S, P + 1)
    assert head.config() == {"kind": "pieces", "embed_dim": 8, "vocab_size": 40}
    with pytest.raises(ValueError, match="width 7"):
        head(torch.randn(2, 5, 7))


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="vocab_size"):
        train_pieces(TEXTS, vocab_size=4)
    with pytest.raises(ValueError, match="no non-empty transcripts"):
        train_pieces(["", "  "], vocab_size=40)
    # text too small for the requested size gets the pieces it has, and the head says how many
    small = PieceCTCHead(embed_dim=8, model_proto=train_pieces(TEXTS, vocab_size=5000))
    assert 20 < small.vocab_size < 200 and small.decode(small.encode(TEXTS[:3])) == TEXTS[:3]
    with pytest.raises(ValueError, match="not a valid SentencePiece model"):
        PieceCTCHead(embed_dim=8, model_proto=b"not a model")
