"""CTC head tied to the MT embeddings and CTC compression (hard / soft / posterior)."""

from __future__ import annotations

import itertools

import pytest
import torch

from sltalign.connectors import COMPRESS_MODES, TiedCTCHead, build_connector, compress, ctc_logits, ctc_segments

V, D = 6, 4  # vocabulary without blank, width
BLANK = V


def one_hot_logits(seqs: list[list[int]], width: int, *, high: float = 4.0) -> torch.Tensor:
    """(B, width, V + 1) logits whose argmax follows ``seqs`` (positions past a sequence: label 2)."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(len(seqs), width, V + 1, generator=g)
    for b, seq in enumerate(seqs):
        for s in range(width):
            logits[b, s, seq[s] if s < len(seq) else 2] += high + 4.0
    return logits


# utterance 0: "1 1 _ 1 2 2 _ _ 3" -> segments 1 | 1 | 2 2 | 3
# utterance 1: "_ 4 4 _ _" then padding whose argmax is non-blank (must be ignored) -> one segment 4 4
# utterance 2: all blank -> the no-speech rule: one segment of all real frames
SEQS = [[1, 1, BLANK, 1, 2, 2, BLANK, BLANK, 3], [BLANK, 4, 4, BLANK, BLANK], [BLANK] * 7]
LENGTHS = [9, 5, 7]
SEGMENT_FRAMES = [[[0, 1], [3], [4, 5], [8]], [[1, 2]], [list(range(7))]]
SEGMENT_LABELS = [[1, 1, 2, 3], [4], [None]]  # None: decided by the no-speech rule


@pytest.fixture
def case():
    torch.manual_seed(0)
    logits = one_hot_logits(SEQS, 9)
    logits[2, :7, 5] += 2.0  # under the blank everywhere, but the best non-blank label of utterance 2
    mask = torch.arange(9)[None, :] < torch.tensor(LENGTHS)[:, None]
    out = torch.randn(3, 9, D)
    emb = torch.randn(V, D)
    return out, mask, logits, emb


def test_segments_of_hand_made_logits(case):
    out, mask, logits, emb = case
    seg = ctc_segments(logits, mask)
    assert seg.num_segments.tolist() == [4, 1, 1]
    assert seg.no_speech.tolist() == [False, False, True]
    assert seg.labels.shape == (3, 4)
    assert seg.labels[0].tolist() == [1, 1, 2, 3]
    assert seg.labels[1].tolist() == [4, -1, -1, -1]
    assert seg.labels[2].tolist() == [5, -1, -1, -1]
    assert seg.frame_segment[0].tolist() == [0, 0, -1, 1, 2, 2, -1, -1, 3]
    assert seg.frame_segment[1].tolist() == [-1, 0, 0, -1, -1, -1, -1, -1, -1]
    assert seg.frame_segment[2].tolist() == [0] * 7 + [-1, -1]
    assert seg.mask.tolist() == [[True] * 4, [True, False, False, False], [True, False, False, False]]


@pytest.mark.parametrize("mode", COMPRESS_MODES)
def test_compress_contents(case, mode):
    out, mask, logits, emb = case
    temperature = 0.7
    comp, comp_mask = compress(out, mask, logits, mode=mode, embedding_matrix=emb, temperature=temperature)
    assert comp.shape == (3, 4, D)
    assert comp_mask.sum(-1).tolist() == [4, 1, 1]
    assert (comp[~comp_mask] == 0).all()
    posterior = torch.softmax(logits[..., :V] / temperature, dim=-1) @ emb  # (B, S, D), reference
    for b, segments in enumerate(SEGMENT_FRAMES):
        for j, frames in enumerate(segments):
            if mode == "hard":
                label = SEGMENT_LABELS[b][j] if SEGMENT_LABELS[b][j] is not None else 5
                expected = emb[label]
            elif mode == "soft":
                expected = out[b, frames].mean(0)
            else:
                expected = posterior[b, frames].mean(0)
            torch.testing.assert_close(comp[b, j], expected)


def test_gradients_flow_through_soft_and_posterior(case):
    out, mask, logits, emb = case
    out = out.clone().requires_grad_(True)
    comp, comp_mask = compress(out, mask, logits, mode="soft")
    comp.sum().backward()
    # each kept frame gets 1 / (segment size), frames outside segments (blank, padding) get nothing
    expected = torch.zeros(3, 9)
    for b, segments in enumerate(SEGMENT_FRAMES):
        for frames in segments:
            expected[b, frames] = 1.0 / len(frames)
    torch.testing.assert_close(out.grad[..., 0], expected)

    logits = logits.clone().requires_grad_(True)
    comp, _ = compress(out.detach(), mask, logits, mode="posterior", embedding_matrix=emb, temperature=2.0)
    (comp * torch.randn_like(comp)).sum().backward()
    assert logits.grad[0, SEGMENT_FRAMES[0][0], :V].abs().sum() > 0
    assert (logits.grad[..., BLANK] == 0).all(), "posterior uses the non-blank softmax only"
    assert (logits.grad[1, 5:] == 0).all(), "padding gets no gradient"

    hard, _ = compress(out, mask, logits, mode="hard", embedding_matrix=emb)
    assert not hard.requires_grad  # frozen embedding rows only


def test_segmentation_matches_a_reference_collapse():
    """Random argmax sequences over a tiny vocabulary (many repeats and blanks) vs itertools.groupby."""
    g = torch.Generator().manual_seed(7)
    b, s = 16, 40
    logits = torch.randn(b, s, 3, generator=g)  # V = 2 plus blank
    lengths = torch.randint(1, s + 1, (b,), generator=g)
    mask = torch.arange(s)[None, :] < lengths[:, None]
    out = torch.randn(b, s, 5, generator=g)
    seg = ctc_segments(logits, mask)
    comp, comp_mask = compress(out, mask, logits, mode="soft")
    pred = logits.argmax(-1)
    for i in range(b):
        n = int(lengths[i])
        runs, pos = [], 0
        for label, grp in itertools.groupby(pred[i, :n].tolist()):
            size = len(list(grp))
            if label != 2:
                runs.append((label, list(range(pos, pos + size))))
            pos += size
        if not runs:
            runs = [(None, list(range(n)))]
        assert int(seg.num_segments[i]) == int(comp_mask[i].sum()) == len(runs)
        for j, (label, frames) in enumerate(runs):
            if label is not None:
                assert int(seg.labels[i, j]) == label
            torch.testing.assert_close(comp[i, j], out[i, frames].mean(0))


def test_ctc_logits_and_tied_head():
    torch.manual_seed(0)
    head = TiedCTCHead(embed_dim=D)
    with torch.no_grad():
        head.blank_vector.normal_()
        head.blank_bias.fill_(0.3)
    out = torch.randn(2, 5, D, requires_grad=True)
    emb = torch.randn(V, D)
    logits = head(out, emb)
    assert logits.shape == (2, 5, V + 1)
    scale = head.scale.detach()
    torch.testing.assert_close(logits[..., :V], scale * out @ emb.T)
    torch.testing.assert_close(logits[..., BLANK], scale * out @ head.blank_vector + 0.3)
    torch.testing.assert_close(float(scale), D**-0.5)
    # the plain function: a constant blank logit when no blank vector is given
    plain = ctc_logits(out, emb, blank_bias=-1.0, scale=2.0)
    torch.testing.assert_close(plain[..., :V], 2.0 * out @ emb.T)
    assert (plain[..., BLANK] == -1.0).all()
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert out.grad.abs().sum() > 0
    assert head.config() == {"kind": "tied", "embed_dim": D}


def test_connector_head_compress_end_to_end_gradients():
    """connector -> tied head -> posterior compression: every trainable parameter gets a gradient."""
    torch.manual_seed(0)
    conn = build_connector("mlp", in_dim=8, out_dim=D, stack=2, hidden=16)
    head = TiedCTCHead(embed_dim=D)
    states = torch.randn(3, 10, 8)
    mask = torch.arange(10)[None, :] < torch.tensor([10, 7, 3])[:, None]
    emb = torch.randn(V, D)
    out, out_mask = conn(states, mask)
    logits = head(out, emb)
    comp, comp_mask = compress(out, out_mask, logits, mode="posterior", embedding_matrix=emb)
    assert comp_mask.any(-1).all() and comp_mask.sum(-1).le(out_mask.sum(-1)).all()
    (comp.square() * comp_mask[..., None]).sum().backward()
    params = list(conn.named_parameters()) + [(f"head.{n}", p) for n, p in head.named_parameters()]
    assert not [n for n, p in params if p.grad is None], "posterior compression must train connector and head"


def test_compress_errors(case):
    out, mask, logits, emb = case
    with pytest.raises(ValueError, match=r"mode must be one of \['hard', 'soft', 'posterior'\]"):
        compress(out, mask, logits, mode="mean")
    for mode in ("hard", "posterior"):
        with pytest.raises(ValueError, match=f"mode '{mode}' needs embedding_matrix"):
            compress(out, mask, logits, mode=mode)
    with pytest.raises(ValueError, match=r"embedding_matrix must be \(V, D_m\) = \(6, 4\)"):
        compress(out, mask, logits, mode="hard", embedding_matrix=torch.randn(V + 1, D))
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        compress(out, mask, logits, mode="posterior", embedding_matrix=emb, temperature=0.0)
    with pytest.raises(ValueError, match="disagree"):
        compress(out[:, :5], mask, logits)
    with pytest.raises(ValueError, match="mask must be bool"):
        ctc_segments(logits, mask.long())
    with pytest.raises(ValueError, match="at least one real frame"):
        compress(out, torch.zeros_like(mask), logits)
    with pytest.raises(ValueError, match="same D_m"):
        ctc_logits(out, torch.randn(V, D + 1), 0.0, 1.0)
    with pytest.raises(ValueError, match="embed_dim must be a positive integer"):
        TiedCTCHead(embed_dim=0)
    with pytest.raises(ValueError, match="built for embed_dim=3"):
        TiedCTCHead(embed_dim=3)(out, emb)
