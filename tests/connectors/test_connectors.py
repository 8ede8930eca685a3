"""Contract tests run on every registered connector (tiny sizes, CPU, seeded)."""

from __future__ import annotations

import json

import pytest
import torch

from sltalign.connectors import (
    CONNECTORS,
    PRESET_NAMES,
    SMALL_BUDGET,
    Connector,
    MLPConnector,
    build_connector,
    connector_from_config,
    lengths_to_mask,
    register,
    size_names,
)

IN_DIM, OUT_DIM = 24, 16

# Tiny sizes per connector (plus a few variants that exercise other code paths).
TINY = {
    "ste": dict(d=16, layers=2, heads=2, ffn=32, conv_channels=12, conv_stages=2),
    "ste-post-norm": dict(d=16, layers=2, heads=2, ffn=32, conv_channels=12, conv_stages=2, norm_first=False),
    "ste-0-stages": dict(d=16, layers=1, heads=2, ffn=32, conv_stages=0),
    "ste-1-stage": dict(d=16, layers=1, heads=2, ffn=32, conv_stages=1),
    "ste-input-norm": dict(d=16, layers=1, heads=2, ffn=32, conv_stages=1, input_norm=True),  # the "phones" preset's shape
    "ste-utterance-norm": dict(d=16, layers=1, heads=2, ffn=32, conv_stages=1, input_norm=True, utterance_norm=True),
    "ste-3-stages": dict(d=16, layers=1, heads=2, ffn=32, conv_channels=8, conv_stages=3),
    "qformer": dict(n_queries=7, d=16, layers=2, heads=2, ffn=32),
    "qformer-post-norm": dict(n_queries=5, d=16, layers=2, heads=2, ffn=32, norm_first=False),
    "window_qformer": dict(window=5, queries_per_window=2, d=16, layers=2, heads=2, ffn=32),
    "window_qformer-nopos": dict(
        window=4, queries_per_window=1, d=16, layers=1, heads=4, ffn=16, positions=False, norm_first=False
    ),
    "mlp": dict(stack=4, hidden=32),
    "mlp-stack3": dict(stack=3, hidden=20),
    "hypothesis": dict(d=16, heads=2, layers=1, ffn=32),
    "hypothesis-0-layers": dict(d=16, heads=4, layers=0, ffn=16),
}
VARIANTS = sorted(TINY)


def make(variant: str, **extra) -> Connector:
    torch.manual_seed(0)
    return build_connector(variant.split("-")[0], in_dim=IN_DIM, out_dim=OUT_DIM, **{**TINY[variant], **extra})


def batch(lengths: list[int], *, width: int | None = None, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random states whose padded frames hold large garbage, so any leak of padding shows."""
    g = torch.Generator().manual_seed(seed)
    t = width or max(lengths)
    states = torch.randn(len(lengths), t, IN_DIM, generator=g)
    mask = lengths_to_mask(torch.tensor(lengths), t)
    states = torch.where(mask[..., None], states, 100.0 * torch.randn(states.shape, generator=g))
    return states, mask


def test_every_connector_is_covered():
    assert {v.split("-")[0] for v in VARIANTS} == set(CONNECTORS) == {"ste", "qformer", "window_qformer", "mlp", "hypothesis"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_and_lengths(variant):
    conn = make(variant).eval()
    lengths = [37, 1, 16, 15, 29]
    states, mask = batch(lengths)
    with torch.no_grad():
        out, out_mask = conn(states, mask)
    expected = conn.output_lengths(torch.tensor(lengths))
    assert out.dim() == 3 and out.shape[0] == len(lengths) and out.shape[2] == OUT_DIM
    assert out_mask.dtype == torch.bool and out_mask.shape == out.shape[:2]
    assert out_mask.sum(-1).tolist() == expected.tolist()
    assert torch.equal(out_mask, lengths_to_mask(expected, out.shape[1]))
    assert out.shape[1] == int(conn.output_lengths(torch.tensor([states.shape[1]]))[0])
    assert torch.isfinite(out).all()
    assert (out[~out_mask] == 0).all(), "padded output positions must be zero"
    assert (out[out_mask].abs().sum(-1) > 0).all()


def test_output_length_rules():
    lengths = torch.tensor([1, 2, 3, 4, 5, 15, 16, 30, 31, 1500])
    ste = make("ste")
    assert ste.output_lengths(lengths).tolist() == [((x - 1) // 2 + 1 - 1) // 2 + 1 for x in lengths.tolist()]
    assert make("ste-0-stages").output_lengths(lengths).tolist() == lengths.tolist()
    q = make("qformer")
    assert q.output_lengths(lengths).tolist() == [7] * len(lengths)
    w = make("window_qformer")  # window 5, 2 queries
    assert w.output_lengths(lengths).tolist() == [-(-x // 5) * 2 for x in lengths.tolist()]
    m = make("mlp")
    assert m.output_lengths(lengths).tolist() == [-(-x // 4) for x in lengths.tolist()]


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_ste_lengths_match_conv_arithmetic(stages):
    """The (L-1)//2+1 rule is what Conv1d(k5, s2, p2) really produces, for odd and even lengths."""
    conn = build_connector(
        "ste", in_dim=IN_DIM, out_dim=OUT_DIM, d=8, layers=1, heads=1, ffn=8, conv_channels=8, conv_stages=stages
    ).eval()
    for length in range(1, 13):
        states, mask = batch([length])
        with torch.no_grad():
            out, out_mask = conn(states, mask)
        assert out.shape[1] == out_mask.sum() == int(conn.output_lengths(torch.tensor([length]))[0])


def test_ste_utterance_norm_ignores_a_per_utterance_offset():
    """utterance_norm: adding one vector to every real frame of an utterance (a voice or a channel that shifts
    the whole clip) leaves its outputs unchanged; without it they change."""
    states, mask = batch([13, 41, 6], width=45)
    offset = 3.0 * torch.randn(3, 1, IN_DIM, generator=torch.Generator().manual_seed(5))
    shifted = torch.where(mask[..., None], states + offset, states)
    with torch.no_grad():
        on = make("ste-utterance-norm").eval()
        torch.testing.assert_close(on(shifted, mask)[0], on(states, mask)[0], rtol=1e-4, atol=1e-4)
        off = make("ste-input-norm").eval()
        assert not torch.allclose(off(shifted, mask)[0], off(states, mask)[0], atol=1e-3)


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_invariance(variant):
    """An utterance's real outputs are the same alone and batched with longer, garbage-padded ones."""
    conn = make(variant).eval()
    lengths = [13, 41, 6]
    states, mask = batch(lengths, width=45)
    with torch.no_grad():
        out, out_mask = conn(states, mask)
        for i, n in enumerate(lengths):
            alone, alone_mask = conn(states[i : i + 1, :n], mask[i : i + 1, :n])
            s = int(alone_mask.sum())
            assert alone_mask.all() and s == int(out_mask[i].sum())
            torch.testing.assert_close(out[i, :s], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradient_reaches_every_parameter(variant):
    conn = make(variant).train()
    states, mask = batch([19, 8, 12])
    states.requires_grad_(True)
    out, out_mask = conn(states, mask)
    if hasattr(conn, "fuse"):
        # the hypothesis connector's parameters past ``forward`` train through ``fuse``; its output layer starts
        # at zero (the cascade), which stops the gradient into the layers before it until it has moved
        torch.nn.init.normal_(conn.out.weight, std=0.1)
        queries, query_mask = batch([5, 9, 2], seed=3)
        out = conn.fuse(queries[..., :OUT_DIM], query_mask, out, out_mask)
        out_mask = query_mask
    (out * out_mask[..., None]).square().mean().backward()
    missing = [
        n for n, p in conn.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0
    ]
    assert not missing, f"no gradient for {missing}"
    # gradient never reaches the padded input frames
    assert (states.grad[~mask] == 0).all()
    assert states.grad[mask].abs().sum() > 0


@pytest.mark.parametrize("name", sorted(CONNECTORS))
def test_presets_and_parameter_budget(name):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        small = build_connector(name, in_dim=512, out_dim=256, preset="small")
        paper = build_connector(name, in_dim=512, out_dim=256, preset="paper")
        default = build_connector(name, in_dim=512, out_dim=256)
    assert small.num_parameters() < SMALL_BUDGET
    assert small.num_parameters() == small.num_parameters(trainable_only=True)
    assert paper.num_parameters() > small.num_parameters()
    assert default.config() == paper.config(), "constructor defaults must be the paper preset"
    assert set(PRESET_NAMES) <= set(CONNECTORS[name].PRESETS)


def test_ste_paper_preset_is_the_papers_architecture():
    with torch.device("meta"):
        ste = build_connector("ste", in_dim=512, out_dim=1024, preset="paper")
    # D_asr -> 1024 -GLU-> 512 -> 512 -GLU-> 256
    assert [tuple(c.weight.shape) for c in ste.convs] == [(1024, 512, 5), (512, 512, 5)]
    assert all(c.stride == (2,) and c.padding == (2,) for c in ste.convs)
    assert len(ste.encoder.layers) == 6
    layer = ste.encoder.layers[0]
    assert layer.self_attn.num_heads == 4 and layer.linear1.out_features == 2048 and layer.linear1.in_features == 256
    assert layer.dropout.p == 0.1
    assert tuple(ste.proj.weight.shape) == (1024, 256)


def test_qformer_paper_preset():
    with torch.device("meta"):
        q = build_connector("qformer", in_dim=512, out_dim=384, preset="paper")
    assert tuple(q.qformer.queries.shape) == (100, 256)
    assert len(q.qformer.layers) == 6
    layer = q.qformer.layers[0]
    assert layer.cross_attn.num_heads == 4 and layer.cross_attn.kdim == 512
    assert layer.ffn[0].out_features == 2048 and isinstance(layer.ffn[1], torch.nn.GELU)
    assert tuple(q.proj.weight.shape) == (384, 256)


def test_qformer_fixed_length_whatever_the_input():
    conn = make("qformer").eval()
    for lengths in ([3], [50, 2], [1, 1, 1]):
        states, mask = batch(lengths)
        with torch.no_grad():
            out, out_mask = conn(states, mask)
        assert out.shape == (len(lengths), 7, OUT_DIM) and out_mask.all()


def test_window_qformer_windows_follow_real_frames():
    conn = make("window_qformer").eval()  # window 5, 2 queries
    states, mask = batch([5, 6, 11], width=20)  # 4 windows of width; 1, 2 and 3 of them real
    with torch.no_grad():
        out, out_mask = conn(states, mask)
    assert out.shape[1] == 8
    assert out_mask.sum(-1).tolist() == [2, 4, 6]
    # a window's output depends on that window only: change frames of window 2 of utterance 2
    changed = states.clone()
    changed[2, 10] += 1.0
    with torch.no_grad():
        out2, _ = conn(changed, mask)
    torch.testing.assert_close(out2[2, :4], out[2, :4])
    assert not torch.allclose(out2[2, 4:6], out[2, 4:6])


def test_preset_plus_override():
    conn = build_connector("ste", in_dim=512, out_dim=256, preset="small", layers=1, dropout=0.0)
    small = CONNECTORS["ste"].PRESETS["small"]
    cfg = conn.config()
    assert cfg["layers"] == 1 and cfg["dropout"] == 0.0
    assert all(cfg[k] == v for k, v in small.items() if k not in ("layers", "dropout"))
    assert len(conn.encoder.layers) == 1
    # overrides alone, without a preset, start from the constructor defaults
    assert build_connector("mlp", in_dim=8, out_dim=4, stack=2).config()["hidden"] == 2048


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_round_trip(variant):
    conn = make(variant, dropout=0.0)
    cfg = json.loads(json.dumps(conn.config()))
    assert cfg["name"] == conn.name and cfg["in_dim"] == IN_DIM and cfg["out_dim"] == OUT_DIM
    assert set(cfg) == {"name", "in_dim", "out_dim", *size_names(type(conn))}
    rebuilt = connector_from_config(cfg)
    assert type(rebuilt) is type(conn) and rebuilt.config() == conn.config()
    sd, sd2 = conn.state_dict(), rebuilt.state_dict()
    assert list(sd) == list(sd2) and all(sd[k].shape == sd2[k].shape for k in sd)
    rebuilt.load_state_dict(sd)
    states, mask = batch([9, 14])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(states, mask), conn.eval()(states, mask))
    assert build_connector(**cfg).config() == conn.config()


def test_build_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"unknown connector 'nope'.*mlp.*qformer.*ste.*window_qformer"):
        build_connector("nope", in_dim=8, out_dim=8)
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*paper.*small"):
        build_connector("ste", in_dim=8, out_dim=8, preset="huge")
    with pytest.raises(ValueError, match=r"unknown size.*'depth'.*valid.*conv_channels.*layers"):
        build_connector("ste", in_dim=8, out_dim=8, depth=3)
    with pytest.raises(ValueError, match="needs 'name'"):
        connector_from_config({"in_dim": 8, "out_dim": 8})


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        ("ste", dict(d=30, heads=4), "heads must divide d"),
        ("ste", dict(conv_stages=4), r"conv_stages must be in \[0, 3\]"),
        ("ste", dict(layers=0), "layers must be >= 1"),
        ("ste", dict(dropout=1.5), r"dropout must be a number in \[0, 1\)"),
        ("ste", dict(norm_first="yes"), "norm_first must be true or false"),
        ("qformer", dict(n_queries=0), "n_queries must be >= 1"),
        ("qformer", dict(ffn=2.5), "ffn must be an integer"),
        ("window_qformer", dict(window=0), "window must be >= 1"),
        ("window_qformer", dict(queries_per_window=True), "queries_per_window must be an integer"),
        ("mlp", dict(stack=0), "stack must be >= 1"),
        ("mlp", dict(in_dim=0), "in_dim must be >= 1"),
    ],
)
def test_bad_sizes(name, bad, message):
    with pytest.raises(ValueError, match=f"connector '{name}'.*{message}"):
        build_connector(name, **{"in_dim": 8, "out_dim": 8, **bad})


@pytest.mark.parametrize("variant", ["ste", "qformer", "window_qformer", "mlp"])
def test_bad_inputs(variant):
    conn = make(variant).eval()
    states, mask = batch([6, 4])
    with pytest.raises(ValueError, match=r"width D_s=7 but in_dim=24"):
        conn(torch.randn(2, 6, 7), mask)
    with pytest.raises(ValueError, match=r"\(B, T_s, D_s\)"):
        conn(states[0], mask[0])
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        conn(states, mask.float())
    with pytest.raises(ValueError, match="prefix mask"):
        conn(states, mask.flip(-1))
    empty = mask.clone()
    empty[1] = False
    with pytest.raises(ValueError, match="at least one real frame"):
        conn(states, empty)


def test_register_checks_and_extends_the_registry():
    class Toy(MLPConnector):
        PRESETS = {"paper": {}}

    with pytest.raises(ValueError, match=r"PRESETS lacks \['small'\]"):
        register("toy")(Toy)
    Toy.PRESETS = {"paper": {}, "small": {"width": 3}}
    with pytest.raises(ValueError, match=r"preset 'small' names unknown sizes \['width'\]"):
        register("toy")(Toy)
    with pytest.raises(ValueError, match="name already used by MLPConnector"):
        register("mlp")(type("Other", (MLPConnector,), {}))
    Toy.PRESETS = {"paper": {}, "small": {"hidden": 8}}
    try:
        register("toy")(Toy)
        conn = build_connector("toy", in_dim=4, out_dim=2, preset="small")
        assert type(conn) is Toy and conn.config()["name"] == "toy" and conn.config()["hidden"] == 8
    finally:
        CONNECTORS.pop("toy", None)
    assert "toy" not in CONNECTORS
