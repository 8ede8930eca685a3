"""CTranslate2 Whisper directories -> transformers Whisper.

A small model.bin writer (the inverse of the mapping, written out by hand here) turns a tiny random
transformers Whisper into a CTranslate2 directory; reading it back must give the same parameters, whole or
split in two parts in two directories. Packaged tests compare the real converted models with the
CTranslate2 / faster-whisper engines on real speech.
"""

from __future__ import annotations

import glob
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sltalign.foundation.ctranslate2 import (
    find_model_bin_parts,
    load_ctranslate2_whisper,
    load_ctranslate2_whisper_encoder,
    load_ctranslate2_whisper_tokenizer,
    read_ctranslate2_model,
)

LIBRIVOX = sorted(glob.glob("/usr/share/pocketsphinx/test/data/librivox/*.wav"))
SPECIALS = {
    "<|endoftext|>": 1,
    "<|startoftranscript|>": 2,
    "<|en|>": 3,
    "<|translate|>": 4,
    "<|transcribe|>": 5,
    "<|startoflm|>": 6,
    "<|startofprev|>": 7,
    "<|nocaptions|>": 8,
    "<|notimestamps|>": 9,
}

# ------------------------------------------------------------------------------------------------
# A minimal CTranslate2 model.bin writer (format version 6, as CTranslate2 4.x writes it)
# ------------------------------------------------------------------------------------------------

_DTYPE_IDS = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4, torch.bfloat16: 5}


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def model_bin_bytes(variables: dict[str, torch.Tensor], aliases: dict[str, str], spec: str = "WhisperSpec") -> bytes:
    out = [struct.pack("<I", 6), _string(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, t in variables.items():
        t = t.contiguous()
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        out += [_string(name), struct.pack("<B", t.dim()), struct.pack(f"<{t.dim()}I", *t.shape)]
        out += [struct.pack("<BI", _DTYPE_IDS[t.dtype], len(raw)), raw]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_string(alias), _string(target)]
    return b"".join(out)


def _quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = 127.0 / w.abs().amax(dim=1).clamp_min(1e-8)
    return torch.round(w * scale[:, None]).to(torch.int8), scale


def ct2_whisper_variables(sd: dict[str, torch.Tensor], cfg, dtype: str) -> dict[str, torch.Tensor]:
    """transformers Whisper state dict -> CTranslate2 WhisperSpec variables (the converter's layout)."""
    v: dict[str, torch.Tensor] = {}

    def put(name: str, t: torch.Tensor, linear_weight: bool = False) -> None:
        t = t.detach().float()
        if dtype == "int8" and linear_weight:
            v[name], v[name + "_scale"] = _quantize_int8(t)
        elif dtype == "int8":
            v[name] = t
        else:
            v[name] = t.to(getattr(torch, dtype))

    def linear(ct2: str, weight: torch.Tensor, bias: torch.Tensor) -> None:
        put(f"{ct2}/weight", weight, linear_weight=True)
        put(f"{ct2}/bias", bias)

    def norm(ct2: str, hf: str) -> None:
        put(f"{ct2}/gamma", sd[f"{hf}.weight"])
        put(f"{ct2}/beta", sd[f"{hf}.bias"])

    v["decoder/activation"] = torch.tensor(3, dtype=torch.int8)
    v["decoder/num_heads"] = torch.tensor(cfg.decoder_attention_heads, dtype=torch.int16)
    v["encoder/num_heads"] = torch.tensor(cfg.encoder_attention_heads, dtype=torch.int16)
    v["decoder/pre_norm"] = torch.tensor(1, dtype=torch.int8)
    for side, n in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        for i in range(n):
            h, c = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            a = f"{h}.self_attn"
            zeros = torch.zeros_like(sd[f"{a}.q_proj.bias"])
            linear(
                f"{c}/self_attention/linear_0",
                torch.cat([sd[f"{a}.q_proj.weight"], sd[f"{a}.k_proj.weight"], sd[f"{a}.v_proj.weight"]]),
                torch.cat([sd[f"{a}.q_proj.bias"], zeros, sd[f"{a}.v_proj.bias"]]),
            )
            linear(f"{c}/self_attention/linear_1", sd[f"{a}.out_proj.weight"], sd[f"{a}.out_proj.bias"])
            norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
            if side == "decoder":
                x = f"{h}.encoder_attn"
                linear(f"{c}/attention/linear_0", sd[f"{x}.q_proj.weight"], sd[f"{x}.q_proj.bias"])
                linear(
                    f"{c}/attention/linear_1",
                    torch.cat([sd[f"{x}.k_proj.weight"], sd[f"{x}.v_proj.weight"]]),
                    torch.cat([zeros, sd[f"{x}.v_proj.bias"]]),
                )
                linear(f"{c}/attention/linear_2", sd[f"{x}.out_proj.weight"], sd[f"{x}.out_proj.bias"])
                norm(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
            linear(f"{c}/ffn/linear_0", sd[f"{h}.fc1.weight"], sd[f"{h}.fc1.bias"])
            linear(f"{c}/ffn/linear_1", sd[f"{h}.fc2.weight"], sd[f"{h}.fc2.bias"])
            norm(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
        put(f"{side}/position_encodings/encodings", sd[f"model.{side}.embed_positions.weight"])
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
    for conv in ("conv1", "conv2"):
        put(f"encoder/{conv}/weight", sd[f"model.encoder.{conv}.weight"])
        put(f"encoder/{conv}/bias", sd[f"model.encoder.{conv}.bias"])
    put("decoder/embeddings/weight", sd["model.decoder.embed_tokens.weight"])
    return v


def expected_state_dict(sd: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """What reading back must give: every tensor rounded through the stored dtype (int8: linear weights
    are checked with a tolerance instead)."""
    if dtype in ("int8", "float32"):
        return {k: t.float() for k, t in sd.items()}
    return {k: t.to(getattr(torch, dtype)).float() for k, t in sd.items()}


@pytest.fixture(scope="module")
def tiny_hf_whisper():
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(
        vocab_size=100,
        num_mel_bins=80,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=2,
        encoder_ffn_dim=48,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=40,
        pad_token_id=1,
        bos_token_id=1,
        eos_token_id=1,
        decoder_start_token_id=2,
    )
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # HF initialises biases to zero: make them random so the mapping is really checked
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    return model


def write_ct2_dir(root: Path, model, *, dtype: str = "float16", split_at: float | str | None = None) -> list[Path]:
    """Write ``model`` as a CTranslate2 Whisper directory; with ``split_at`` model.bin is cut into
    model.bin.part1 (first dir) and model.bin.part2 (second dir, with the rest) at that fraction of its
    bytes, or inside the data of the variable of that name."""
    sd = model.state_dict()
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    data = model_bin_bytes(ct2_whisper_variables(sd, model.config, dtype), aliases)
    vocab = [f"tok{i}" for i in range(model.config.vocab_size)]
    for tok, i in SPECIALS.items():
        vocab[i] = tok
    config = {
        "suppress_ids": [11, 12],
        "suppress_ids_begin": [13, 1],
        "alignment_heads": [[1, 0], [1, 1]],
        "lang_ids": [3],
    }
    if split_at is None:
        dirs = [root / "ct2"]
        dirs[0].mkdir(parents=True)
        (dirs[0] / "model.bin").write_bytes(data)
    else:
        dirs = [root / "part-a", root / "part-b"]
        for d in dirs:
            d.mkdir(parents=True)
        if isinstance(split_at, str):
            cut = data.index(split_at.encode() + b"\0") + len(split_at) + 40
        else:
            cut = int(len(data) * split_at)
        (dirs[0] / "model.bin.part1").write_bytes(data[:cut])
        (dirs[1] / "model.bin.part2").write_bytes(data[cut:])
    (dirs[-1] / "vocabulary.json").write_text(json.dumps(vocab))
    (dirs[-1] / "config.json").write_text(json.dumps(config))
    return dirs


# ------------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "int8"])
def test_round_trip_parameters_equal(tmp_path, tiny_hf_whisper, dtype):
    dirs = write_ct2_dir(tmp_path, tiny_hf_whisper, dtype=dtype)
    converted = load_ctranslate2_whisper(dirs[0])
    got = converted.state_dict()
    want = expected_state_dict(tiny_hf_whisper.state_dict(), dtype)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == torch.float32, k
        if dtype == "int8" and k.endswith("weight") and got[k].dim() == 2 and "embed" not in k and "proj_out" not in k:
            # per-row int8: error at most half a quantisation step (amax / 127 / 2)
            step = want[k].abs().amax(dim=1, keepdim=True) / 127
            assert ((got[k] - want[k]).abs() <= step / 2 + 1e-7).all(), k
        else:
            assert torch.equal(got[k], want[k]), k
    assert converted.proj_out.weight is converted.model.decoder.embed_tokens.weight  # tied, as in Whisper
    c = converted.config
    ref = tiny_hf_whisper.config
    fields = (
        "d_model",
        "encoder_layers",
        "decoder_layers",
        "encoder_attention_heads",
        "decoder_attention_heads",
        "encoder_ffn_dim",
        "decoder_ffn_dim",
        "num_mel_bins",
        "vocab_size",
        "max_source_positions",
        "max_target_positions",
    )
    for field in fields:
        assert getattr(c, field) == getattr(ref, field), field


def test_generation_config_from_vocabulary_and_config_json(tmp_path, tiny_hf_whisper):
    model = load_ctranslate2_whisper(write_ct2_dir(tmp_path, tiny_hf_whisper, dtype="float32")[0])
    g = model.generation_config
    assert (g.decoder_start_token_id, g.eos_token_id, g.pad_token_id) == (2, 1, 1)
    assert g.no_timestamps_token_id == 9 and g.prev_sot_token_id == 7
    assert g.suppress_tokens == [11, 12] and g.begin_suppress_tokens == [13, 1]
    assert g.alignment_heads == [[1, 0], [1, 1]]
    assert g.is_multilingual is False  # vocab 100 < 51865


def test_converted_model_computes_like_the_original(tmp_path, tiny_hf_whisper):
    converted = load_ctranslate2_whisper(write_ct2_dir(tmp_path, tiny_hf_whisper, dtype="float32")[0])
    torch.manual_seed(1)
    mel = torch.randn(1, 80, 3000)
    tokens = torch.tensor([[2, 5, 9, 17, 40]])
    with torch.no_grad():
        a = tiny_hf_whisper(input_features=mel, decoder_input_ids=tokens).logits
        b = converted(input_features=mel, decoder_input_ids=tokens).logits
    torch.testing.assert_close(b, a)


@pytest.mark.parametrize("split_at", [0.5, 0.0371])  # mid-file, and inside an early variable's header/data
def test_split_model_bin_in_two_directories(tmp_path, tiny_hf_whisper, split_at):
    whole = load_ctranslate2_whisper(write_ct2_dir(tmp_path / "whole", tiny_hf_whisper)[0]).state_dict()
    dirs = write_ct2_dir(tmp_path / "split", tiny_hf_whisper, split_at=split_at)
    assert find_model_bin_parts(dirs) == [dirs[0] / "model.bin.part1", dirs[1] / "model.bin.part2"]
    for order in (dirs, dirs[::-1]):  # parts are ordered by number, not by directory order
        got = load_ctranslate2_whisper(order).state_dict()
        assert got.keys() == whole.keys()
        assert all(torch.equal(got[k], whole[k]) for k in whole)
    # nothing was written next to the parts
    assert sorted(p.name for p in dirs[0].iterdir()) == ["model.bin.part1"]


def test_encoder_only_loader_skips_the_decoder(tmp_path, tiny_hf_whisper):
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    # cut inside a decoder tensor: skipping it must carry on into the second part
    dirs = write_ct2_dir(tmp_path, tiny_hf_whisper, split_at="decoder/embeddings/weight")
    enc = load_ctranslate2_whisper_encoder(dirs)
    assert isinstance(enc, WhisperEncoder)
    full = load_ctranslate2_whisper(dirs).model.encoder.state_dict()
    assert enc.state_dict().keys() == full.keys()
    assert all(torch.equal(enc.state_dict()[k], full[k]) for k in full)
    raw = read_ctranslate2_model(dirs, include=lambda name, shape: name.startswith("encoder/"))
    assert not any(n.startswith("decoder/") for n in raw.variables)
    assert raw.info["decoder/embeddings/weight"].shape == (100, 32)  # shapes of skipped variables are known


def test_tokenizer_is_optional(tmp_path, tiny_hf_whisper):
    assert load_ctranslate2_whisper_tokenizer(write_ct2_dir(tmp_path, tiny_hf_whisper)) is None


def test_local_ctranslate2_dir_loads_as_speech_encoder(tmp_path, tiny_hf_whisper):
    from sltalign.foundation.speech_encoder import load_speech_encoder

    d = write_ct2_dir(tmp_path, tiny_hf_whisper, dtype="float32")[0]
    enc = load_speech_encoder(str(d), mode="pad30")
    assert enc.dim == 32 and enc.spec == str(d.resolve())
    wave = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    states, mask = enc.encode([wave])
    mel, _ = enc.features([wave])
    with torch.no_grad():
        ref = tiny_hf_whisper.model.encoder(mel).last_hidden_state[:, : mask.shape[1]]
    torch.testing.assert_close(states, ref)


# ------------------------------------------------------------------------------------------------
# Errors name the file
# ------------------------------------------------------------------------------------------------


def test_missing_directory_and_missing_model_bin(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_ctranslate2_whisper(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no model\.bin"):
        load_ctranslate2_whisper(tmp_path / "empty")


def test_missing_part(tmp_path, tiny_hf_whisper):
    dirs = write_ct2_dir(tmp_path, tiny_hf_whisper, split_at=0.5)
    (dirs[0] / "model.bin.part1").rename(dirs[0] / "model.bin.part3")
    with pytest.raises(FileNotFoundError, match=r"part\(s\) \[1\] are missing"):
        load_ctranslate2_whisper(dirs)
    with pytest.raises(FileNotFoundError, match=r"part\(s\) \[1\] are missing"):
        find_model_bin_parts(dirs)


def test_corrupt_model_bin_errors_name_the_file(tmp_path, tiny_hf_whisper):
    d = write_ct2_dir(tmp_path, tiny_hf_whisper)[0]
    path = d / "model.bin"
    good = path.read_bytes()
    cases = {
        "truncated": good[: len(good) // 3],
        "trailing": good + b"\0\0",
        "version": struct.pack("<I", 99) + good[4:],
        "empty": b"",
    }
    patterns = {
        "truncated": "unexpected end of file",
        "trailing": "unexpected bytes after the last record",
        "version": "format version 99",
        "empty": "unexpected end of file",
    }
    for case, data in cases.items():
        path.write_bytes(data)
        with pytest.raises(ValueError, match=patterns[case]) as err:
            load_ctranslate2_whisper(d)
        assert str(path) in str(err.value), case
    # an unknown dtype id in the first variable's header
    first = good.index(b"decoder/activation\0") + len(b"decoder/activation\0")
    bad = bytearray(good)
    bad[first + 1] = 42  # rank 0: the dtype byte follows the rank byte
    path.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=r"'decoder/activation' has unknown dtype id 42"):
        load_ctranslate2_whisper(d)


def test_wrong_model_kind_and_bad_config(tmp_path, tiny_hf_whisper):
    d = write_ct2_dir(tmp_path, tiny_hf_whisper)[0]
    (d / "model.bin").write_bytes(model_bin_bytes({"x": torch.zeros(2)}, {}, spec="TransformerSpec"))
    with pytest.raises(ValueError, match="TransformerSpec, not a Whisper model"):
        load_ctranslate2_whisper(d)
    # a variable missing, and one that would be silently dropped
    variables = ct2_whisper_variables(tiny_hf_whisper.state_dict(), tiny_hf_whisper.config, "float32")
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    missing = {k: v for k, v in variables.items() if k != "encoder/layer_1/ffn/linear_0/bias"}
    (d / "model.bin").write_bytes(model_bin_bytes(missing, aliases))
    with pytest.raises(ValueError, match="missing variable 'encoder/layer_1/ffn/linear_0/bias'") as err:
        load_ctranslate2_whisper(d)
    assert str(d / "model.bin") in str(err.value)
    (d / "model.bin").write_bytes(model_bin_bytes({**variables, "encoder/extra/weight": torch.ones(3)}, aliases))
    with pytest.raises(ValueError, match=r"no place in transformers' Whisper: \['encoder/extra/weight'\]"):
        load_ctranslate2_whisper_encoder(d)
    d2 = write_ct2_dir(tmp_path / "b", tiny_hf_whisper)[0]
    (d2 / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(str(d2 / "config.json"))):
        load_ctranslate2_whisper(d2)


# ------------------------------------------------------------------------------------------------
# The real packaged models against the CTranslate2 / faster-whisper engines
# ------------------------------------------------------------------------------------------------


def in_memory_files(dirs: list[Path]) -> dict[str, bytes]:
    """The directory's files for ctranslate2/faster-whisper ``files=``: model.bin parts joined in memory."""
    files = {"model.bin": b"".join(p.read_bytes() for p in find_model_bin_parts(dirs))}
    for d in dirs:
        for p in d.iterdir():
            if not p.name.startswith("model.bin"):
                files[p.name] = p.read_bytes()
    return files


def read_librivox() -> list[np.ndarray]:
    import soundfile as sf

    assert len(LIBRIVOX) == 5, "pocketsphinx-testdata (5 LibriVox clips) is needed"
    out = []
    for path in LIBRIVOX:
        wave, sr = sf.read(path, dtype="float32")
        assert sr == 16000
        out.append(wave)
    return out


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()


def _word_distance(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


@pytest.mark.packaged
@pytest.mark.parametrize("name", ["whisper-tiny.en", "whisper-base"])
def test_packaged_transcripts_match_faster_whisper(name):
    import faster_whisper
    from transformers import WhisperFeatureExtractor

    from sltalign.foundation import packaged

    _, dirs = packaged.resolve(f"packaged:{name}")
    model = load_ctranslate2_whisper(dirs)
    tokenizer = load_ctranslate2_whisper_tokenizer(dirs)
    assert tokenizer is not None
    waves = read_librivox()
    features = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)(
        waves, sampling_rate=16000, return_tensors="pt"
    ).input_features
    kwargs = {} if name.endswith(".en") else {"language": "en", "task": "transcribe"}
    with torch.no_grad():
        encoded = model.get_encoder()(features)  # (5, 1500, D)
        # greedy decoding is hundreds of tiny ops: one thread avoids OpenMP barrier costs that made it 10x
        # slower on a busy 2-core machine (measured), and costs nothing on an idle one
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            ids = model.generate(encoder_outputs=encoded, num_beams=1, do_sample=False, **kwargs)
        finally:
            torch.set_num_threads(threads)
    ours = tokenizer.batch_decode(ids, skip_special_tokens=True)

    engine = faster_whisper.WhisperModel(
        name, device="cpu", compute_type="float32", cpu_threads=torch.get_num_threads(), files=in_memory_files(dirs)
    )
    theirs = []
    for wave in waves:
        segments, _ = engine.transcribe(
            wave,
            beam_size=1,
            temperature=0.0,
            vad_filter=False,
            without_timestamps=True,
            condition_on_previous_text=False,
            language="en",
        )
        theirs.append("".join(s.text for s in segments))
    for a, b in zip(ours, theirs):
        assert len(_words(a)) > 3, (a, b)
        assert _word_distance(_words(a), _words(b)) <= 1, (a, b)
