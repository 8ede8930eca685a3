"""The Connector interface, the registry it plugs into, and the small helpers every connector shares.

A connector is the only trainable part of sltalign: it maps frozen speech-encoder states into the
frozen translator's input space,

    states (B, T_s, D_s), mask (B, T_s)  ->  out (B, S, D_m), out_mask (B, S)

(shape legend in ``sltalign.foundation.base``; masks are bool, True = real). It knows nothing of ASR or
MT classes: only the two widths ``in_dim`` (D_s) and ``out_dim`` (D_m).

Contract shared by every connector (and asserted by tests/connectors):
- input masks are prefix masks (the real frames of an utterance come first) with at least one real frame;
- ``out_mask`` is exactly ``lengths_to_mask(output_lengths(mask.sum(-1)), S)``;
- an utterance's real outputs do not depend on what else is in the batch (padding never leaks in);
- padded output positions hold zeros;
- ``config()`` is JSON-serialisable and ``build_connector(**config())`` rebuilds the same architecture.

The registry (``CONNECTORS`` and the ``register`` decorator) lives here rather than in the package
``__init__`` so that connector modules can register themselves without a circular import;
``sltalign.connectors`` re-exports both and adds ``build_connector``.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

#: name -> connector class, filled by ``@register(name)``
CONNECTORS: dict[str, type[Connector]] = {}

#: preset names every registered connector must define
PRESET_NAMES: tuple[str, ...] = ("paper", "small")


class Connector(nn.Module, abc.ABC):
    """Trainable bridge from a frozen speech encoder (width ``in_dim``) to a frozen MT model (``out_dim``).

    Subclasses take keyword-only sizes after ``in_dim``/``out_dim``, store them in ``self.sizes`` (plain
    JSON values) and define ``PRESETS`` with one entry per name in ``PRESET_NAMES``.
    """

    #: registry name, set by ``@register``
    name: ClassVar[str] = ""
    #: preset name -> sizes (constructor keyword arguments other than in_dim/out_dim)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, *, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim = check_int(self, "in_dim", in_dim, minimum=1)
        self.out_dim = check_int(self, "out_dim", out_dim, minimum=1)
        self.sizes: dict[str, Any] = {}

    @abc.abstractmethod
    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """states (B, T_s, D_s), mask (B, T_s) -> out (B, S, D_m), out_mask (B, S)."""

    @abc.abstractmethod
    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) real input frames per utterance -> (B,) real output positions S per utterance."""

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this connector: ``build_connector(**connector.config())``."""
        return {"name": self.name, "in_dim": self.in_dim, "out_dim": self.out_dim, **self.sizes}

    def num_parameters(self, *, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "name")

    # --- shared input handling -------------------------------------------------------------------
    def check_inputs(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Validate ``states``/``mask`` and return the (B,) real lengths.

        Raises ValueError naming the connector and the offending argument: a wrong width or a
        non-prefix / empty mask would otherwise surface as a shape error deep inside torch, or worse,
        as silently wrong outputs.
        """
        who = f"connector '{self.name}'"
        if not isinstance(states, torch.Tensor) or states.dim() != 3:
            shape = tuple(states.shape) if isinstance(states, torch.Tensor) else type(states).__name__
            raise ValueError(f"{who}: states must be a (B, T_s, D_s) tensor, got {shape}")
        if states.shape[-1] != self.in_dim:
            raise ValueError(f"{who}: states have width D_s={states.shape[-1]} but in_dim={self.in_dim}")
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != tuple(states.shape[:2]):
            got = (tuple(mask.shape), mask.dtype) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"{who}: mask must be a bool tensor of shape {tuple(states.shape[:2])} (B, T_s), got {got}")
        lengths = mask.sum(-1)
        prefix = torch.equal(mask, lengths_to_mask(lengths, mask.shape[1]))
        if not prefix:
            raise ValueError(f"{who}: mask must be a prefix mask (real frames first, True = real)")
        if mask.shape[0] and int(lengths.min()) < 1:
            raise ValueError(f"{who}: every utterance needs at least one real frame; lengths={lengths.tolist()}")
        return lengths


def register(name: str) -> Callable[[type[Connector]], type[Connector]]:
    """Class decorator: make a Connector subclass buildable by ``build_connector(name, ...)``.

    Checks at import time that the class defines every preset in ``PRESET_NAMES`` and that the presets
    name only real constructor arguments, so a typo in a preset fails loudly once, not at training time.
    """

    def wrap(cls: type[Connector]) -> type[Connector]:
        if not (isinstance(cls, type) and issubclass(cls, Connector)):
            raise ValueError(f"register('{name}'): {cls!r} is not a Connector subclass")
        if name in CONNECTORS and CONNECTORS[name] is not cls:
            raise ValueError(f"register('{name}'): name already used by {CONNECTORS[name].__name__}")
        missing = [p for p in PRESET_NAMES if p not in cls.PRESETS]
        if missing:
            raise ValueError(f"register('{name}'): {cls.__name__}.PRESETS lacks {missing}")
        valid = size_names(cls)
        for preset, sizes in cls.PRESETS.items():
            bad = sorted(set(sizes) - set(valid))
            if bad:
                raise ValueError(f"register('{name}'): preset '{preset}' names unknown sizes {bad}; valid: {valid}")
        cls.name = name
        CONNECTORS[name] = cls
        return cls

    return wrap


def size_names(cls: type[Connector]) -> list[str]:
    """The keyword-only size arguments of a connector class (everything but in_dim / out_dim)."""
    import inspect

    params = inspect.signature(cls.__init__).parameters.values()
    return sorted(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("in_dim", "out_dim"))


# --- value checks with messages that name the connector and the field ------------------------------
def _who(owner: object) -> str:
    name = getattr(owner, "name", "") or type(owner).__name__
    return f"connector '{name}'"


def check_int(owner: object, field: str, value: Any, *, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{_who(owner)}: {field} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{_who(owner)}: {field} must be {bound}, got {value}")
    return value


def check_dropout(owner: object, value: Any, field: str = "dropout") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{_who(owner)}: {field} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_bool(owner: object, field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{_who(owner)}: {field} must be true or false, got {value!r}")
    return value


def check_heads(owner: object, d: int, heads: int) -> None:
    if d % heads:
        raise ValueError(f"{_who(owner)}: heads must divide d (d={d}, heads={heads})")


# --- tensor helpers --------------------------------------------------------------------------------
def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool prefix mask, True on the first ``lengths[b]`` positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def conv_output_lengths(lengths: torch.Tensor, stages: int) -> torch.Tensor:
    """Frames left after ``stages`` Conv1d(kernel 5, stride 2, padding 2): (L - 1) // 2 + 1 per stage."""
    for _ in range(stages):
        lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
    return lengths


def ceil_div(lengths: torch.Tensor, k: int) -> torch.Tensor:
    """ceil(lengths / k) for integer tensors."""
    return torch.div(lengths + (k - 1), k, rounding_mode="floor")


def sinusoidal_positions(
    length: int, dim: int, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(length, dim) fixed sinusoidal positions (sin half then cos half, timescales up to 10,000).

    Computed on the fly: cheap next to the layers, and no buffer limits the input length.
    """
    half = dim // 2
    inv = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / max(half - 1, 1))
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    pe = torch.cat([angles.sin(), angles.cos()], dim=-1)
    if dim % 2:  # odd width: last channel carries no position
        pe = nn.functional.pad(pe, (0, 1))
    return pe.to(dtype)
