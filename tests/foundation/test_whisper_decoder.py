"""The Whisper decoder as a speech source (the soft cascade's input): token channels, batching, frozen
weights, and parity of the packaged recogniser with faster-whisper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sltalign.foundation import load_speech_encoder
from sltalign.foundation.whisper_decoder import (
    TOKEN_CHANNELS,
    WhisperDecoderSource,
    hypothesis_ids,
    load_whisper_text,
    pack_token_ids,
    unpack_token_ids,
)
from tests.conftest import speechlike

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "runs", "we", "like", "tea", "."]
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]


def make_tiny_whisper_asr(root: Path, *, seed: int = 0) -> Path:
    """A tiny random Whisper with a word-level tokenizer holding Whisper's special tokens, saved as a
    transformers directory (the hub-id code path)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    out = root / "tiny-whisper-asr"
    if out.exists():
        return out
    vocab = {w: i for i, w in enumerate(["<unk>", *WORDS, *SPECIALS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    torch.manual_seed(seed)
    cfg = WhisperConfig(
        vocab_size=len(vocab),
        num_mel_bins=80,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=24,
        dropout=0.1,
        pad_token_id=vocab["<|endoftext|>"],
        bos_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        decoder_start_token_id=vocab["<|startoftranscript|>"],
    )
    WhisperForConditionalGeneration(cfg).save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def asr_dir(tiny_dir: Path) -> Path:
    return make_tiny_whisper_asr(tiny_dir)


@pytest.fixture(scope="module")
def source(asr_dir: Path) -> WhisperDecoderSource:
    return load_speech_encoder(str(asr_dir), mode="decoder")


def test_token_channels_round_trip_exactly_in_float16():
    ids = torch.tensor([[0, 1, 255, 256, 2047, 2048], [50256, 50257, 50362, 51864, 51865, 65535]])
    channels = pack_token_ids(ids)
    assert channels.shape == (2, 6, TOKEN_CHANNELS)
    assert torch.equal(unpack_token_ids(channels.half()), ids)  # what an fp16 encoder cache gives back


def test_source_shapes_prompt_and_text(source):
    # an English-only vocabulary (far under Whisper's 51,865 tokens): sot, then the task straight away
    tok = source.tokenizer
    assert source.prompt == [tok.convert_tokens_to_ids("<|startoftranscript|>"), tok.convert_tokens_to_ids("<|notimestamps|>")]
    assert source.mode == "decoder" and source.cache_mode == "decoder+torch-fp32"
    wavs = [speechlike(1.3, seed=1), speechlike(0.5, seed=2)]
    states, mask = source.encode(wavs)
    memory, hyps = source.recognise(wavs)
    assert states.shape == (2, max(len(h) for h in hyps) + 1, source.dim + TOKEN_CHANNELS)
    assert mask.sum(-1).tolist() == [len(h) + 1 for h in hyps]  # one state per token, plus the end of text
    assert (states[~mask] == 0).all()
    assert hypothesis_ids(states, mask, source.eot_id) == hyps
    assert load_whisper_text(source.spec).texts(states, mask) == source.decode_text(hyps)


def test_a_clip_does_not_depend_on_its_batch(source):
    a, b = speechlike(0.9, seed=3), speechlike(2.2, seed=4)
    alone, alone_mask = source.encode([a])
    both, both_mask = source.encode([b, a])
    n = int(alone_mask.sum())
    assert int(both_mask[1].sum()) == n
    torch.testing.assert_close(both[1, :n], alone[0, :n], rtol=1e-5, atol=1e-5)


def test_states_are_the_decoder_teacher_forced_on_its_hypothesis(source):
    wav = speechlike(1.0, seed=5)
    memory, hyps = source.recognise([wav])
    states, mask = source.states_along(memory, hyps)
    ids = torch.tensor([source.prompt + hyps[0]])
    with torch.no_grad():
        ref = source.decoder(input_ids=ids, encoder_hidden_states=memory).last_hidden_state
        # the state that predicted each hypothesis token (and the end) is the greedy choice's argmax
        logits = source.proj_out(states[:, : int(mask.sum()), : source.dim])
    p = len(source.prompt)
    torch.testing.assert_close(states[0, : int(mask.sum()), : source.dim], ref[0, p - 1 :], rtol=1e-5, atol=1e-5)
    # (a random model may run to the length cap instead of ending: then the last state predicted no end)
    ends = len(hyps[0]) < source.max_tokens
    assert logits.argmax(-1)[0].tolist()[: len(hyps[0]) + ends] == hyps[0] + [source.eot_id] * ends


def test_frozen_and_refuses_bad_input(source):
    assert not any(p.requires_grad for p in source.parameters())
    source.train()
    assert not source.training and not source.decoder.training
    with pytest.raises(ValueError, match="samples"):
        source.encode([np.zeros(10, dtype=np.float32)])
    with pytest.raises(ValueError, match="int8 .* or fp32"):
        load_speech_encoder("packaged:whisper-tiny.en", mode="decoder", precision="bf16")


@pytest.mark.packaged
@pytest.mark.slow
def test_packaged_hypotheses_match_faster_whisper():
    """The CTranslate2 recogniser inside the decoder source transcribes as the cascade's faster-whisper does
    (up to the odd word), and batching does not change a clip's states."""
    from sltalign.audio import load_audio
    from sltalign.cascade import Cascade
    from sltalign.data.realspeech import DEFAULT_ROOT

    wavs = [load_audio(p) for p in sorted((DEFAULT_ROOT / "librivox").glob("*.wav"))[:4]]
    source = load_speech_encoder("packaged:whisper-tiny.en", mode="decoder")
    assert source.prompt == [50257, 50362] and source.engine == "ctranslate2-int8"
    states, mask = source.encode(wavs)
    ours = load_whisper_text("packaged:whisper-tiny.en").texts(states, mask)

    class NoMT:  # the cascade's recognition alone is compared
        def translate_text(self, texts, **kw):
            raise AssertionError("not called")

    theirs = Cascade("packaged:whisper-tiny.en", mt=NoMT()).transcribe(wavs)
    # faster-whisper computes its own log-mel (and int8 rounds differently on it), so a word may differ now
    # and then; a wrong prompt or engine would change far more
    import jiwer

    assert sum(a == b for a, b in zip(ours, theirs)) >= 3, list(zip(ours, theirs))
    assert jiwer.wer(theirs, ours) < 0.1
    one, one_mask = source.encode(wavs[1:2])
    n = int(one_mask.sum())
    torch.testing.assert_close(states[1, :n], one[0, :n], rtol=1e-4, atol=1e-4)
