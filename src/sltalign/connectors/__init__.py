"""Trainable connectors between a frozen speech encoder and a frozen MT model, by short name.

    >>> conn = build_connector("ste", in_dim=512, out_dim=256, preset="small", layers=2)
    >>> out, out_mask = conn(states, mask)          # (B, T_s, 512), (B, T_s) -> (B, S, 256), (B, S)
    >>> same = build_connector(**conn.config())     # config() is JSON and rebuilds the architecture

Registered names: "ste" (the paper's conv subsampler + Transformer), "qformer" (learned queries, fixed S),
"window_qformer" (queries per window of frames, SALMONN-style), "mlp" (frame stacking + MLP), "hypothesis"
(the soft cascade's: the recogniser's 1-best text corrected from its decoder states).
Presets: "paper" (the sizes of arXiv 2411.18294; also the constructor defaults) and "small"
(for whisper-base D_s 512 -> Bergamot D_m 256: under ``SMALL_BUDGET`` parameters, i.e. under 5% of the
~89.5M parameters of whisper-base (72.6M) plus Bergamot en-pt tiny (16.9M)).
``ctc_head`` is the interface every CTC head follows; ``compress`` holds the CTC head tied to the MT embeddings and the CTC compression usable after any connector;
``pieces`` and ``phones`` the CTC heads over word pieces and over phones (read through a lexicon), whose
transcripts reach the MT as text.
"""

from __future__ import annotations

from typing import Any

from sltalign.connectors.base import CONNECTORS, PRESET_NAMES, Connector, lengths_to_mask, register, size_names
from sltalign.connectors.compress import COMPRESS_MODES, CTCSegments, TiedCTCHead, compress, ctc_logits, ctc_segments
from sltalign.connectors.ctc_head import CTC_HEADS, CTCHead, CTCHeadDataError, build_ctc_head, head_class, head_kind

# Importing the modules registers their connectors.
from sltalign.connectors.hypothesis import HypothesisFusionConnector
from sltalign.connectors.mlp import MLPConnector
from sltalign.connectors.phones import Lexicon, PhoneCTCHead, phonemize
from sltalign.connectors.pieces import PieceCTCHead, train_pieces
from sltalign.connectors.qformer import QFormerConnector
from sltalign.connectors.ste import STEConnector
from sltalign.connectors.window_qformer import WindowQFormerConnector

#: parameter budget of the "small" presets (in_dim 512, out_dim 256)
SMALL_BUDGET = 4_500_000


def build_connector(name: str, *, in_dim: int, out_dim: int, preset: str | None = None, **overrides: Any) -> Connector:
    """Build a registered connector: constructor defaults, then ``preset``'s sizes, then ``overrides``.

    Raises ValueError listing the valid choices for an unknown name, preset or size name, and the
    connector's own ValueError for a bad size value.
    """
    if name not in CONNECTORS:
        raise ValueError(f"unknown connector {name!r}; valid: {sorted(CONNECTORS)}")
    cls = CONNECTORS[name]
    sizes: dict[str, Any] = {}
    if preset is not None:
        if preset not in cls.PRESETS:
            raise ValueError(f"unknown preset {preset!r} for connector {name!r}; valid: {sorted(cls.PRESETS)}")
        sizes.update(cls.PRESETS[preset])
    valid = size_names(cls)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown size(s) {unknown} for connector {name!r}; valid: {valid}")
    sizes.update(overrides)
    return cls(in_dim=in_dim, out_dim=out_dim, **sizes)


def connector_from_config(config: dict[str, Any]) -> Connector:
    """Rebuild a connector from ``Connector.config()`` (e.g. read back from a checkpoint's JSON)."""
    if not isinstance(config, dict) or not {"name", "in_dim", "out_dim"} <= set(config):
        keys = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"connector config needs 'name', 'in_dim' and 'out_dim', got {keys}")
    return build_connector(**config)


__all__ = [
    "COMPRESS_MODES",
    "CONNECTORS",
    "PRESET_NAMES",
    "SMALL_BUDGET",
    "CTCSegments",
    "Connector",
    "HypothesisFusionConnector",
    "MLPConnector",
    "QFormerConnector",
    "STEConnector",
    "CTC_HEADS",
    "CTCHead",
    "CTCHeadDataError",
    "build_ctc_head",
    "head_class",
    "head_kind",
    "TiedCTCHead",
    "PieceCTCHead",
    "train_pieces",
    "PhoneCTCHead",
    "Lexicon",
    "phonemize",
    "WindowQFormerConnector",
    "build_connector",
    "compress",
    "connector_from_config",
    "ctc_logits",
    "ctc_segments",
    "lengths_to_mask",
    "register",
    "size_names",
]
