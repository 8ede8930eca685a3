"""Connector ensembles: several phone connectors of one recipe, what they hear combined before the MT reads it.

Connectors trained with different seeds on the same data mishear people's speech partly in their own ways. An
ensemble directory is an ordinary checkpoint directory (its first member, whose head data is the read-out: units,
lexicon, word LM) with the other members inside it, so everything that loads a checkpoint
(``SpeechTranslator.from_pretrained``, ``sltalign translate / evaluate / serve / info``) loads an ensemble::

    DIR/config.json              the first member's config, plus "ensemble": {"members": [...], "combine": ...}
    DIR/connector.safetensors    the first member's weights; its ctc_phones.json and word LM beside them
    DIR/members/1/config.json    each further member's config, weights and phone units (its class order;
    DIR/members/1/connector.safetensors    matched to the first member's by name, see AlignedST.add_members)
    DIR/members/1/units.json

``combine`` (``model.MEMBER_COMBINE``): "medoid" (default) reads each member's posteriors with the first member's
lexicon search and keeps, per utterance, the transcript nearest the others; "vote" takes a word-by-word majority;
"mean_probability" averages frame posteriors, for checkpoints of one run only (other seeds' CTC spikes fall on
other frames). On three seeds of the demo's recipe: medoid 58.3 chrF on the 121 real recordings, members alone
55.0-56.7, frame averaging 48.2 (docs/RESULTS.md, "Ensembles of connectors").

Made by ``make_ensemble`` (``sltalign ensemble --out DIR CKPT CKPT ...``). Members must share the frozen
foundations (spec, weight fingerprint, encoder mode), the connector sizes, the arrangement and nearly all phone
units; they may differ in seed, data and training length. Cost: one connector pass and one read-out per member
per clip (the encoder and the MT run once).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from .checkpoint import (
    CONFIG,
    TRAINER_STATE,
    WEIGHTS,
    CheckpointError,
    model_config_of,
    read_config,
    read_head_data,
    write_dir_atomically,
)
from .connectors import build_connector
from .model import MEMBER_COMBINE, MIN_SHARED_UNITS, AlignedST

log = logging.getLogger(__name__)

#: the config.json key that makes a checkpoint directory an ensemble
KEY = "ensemble"
MEMBERS_DIR = "members"
UNITS_FILE = "units.json"
#: the default combination (``AlignedST.add_members`` has all of ``MEMBER_COMBINE``): right for any members
COMBINE = "medoid"


def is_ensemble(cfg: dict[str, Any]) -> bool:
    return bool(cfg.get(KEY))


def _units(path: Path, cfg: dict[str, Any]) -> list[str]:
    """The phone units of a phone-head checkpoint, in class order (CheckpointError for any other head)."""
    head = cfg.get("ctc_head") or {}
    if head.get("kind") != "phones":
        raise CheckpointError(
            f"checkpoint {path}: an ensemble averages phone posteriors, but its CTC head is {head.get('kind') or 'none'!r} "
            "(expected 'phones': a checkpoint of the phone recipe)"
        )
    return list(read_head_data(path, cfg)["units"])


#: fields every member must share with the first: (config key, sub-key or None, what it is)
SHARED = (
    ("speech_encoder", "spec", "speech encoder"),
    ("speech_encoder", "fingerprint", "speech encoder weights"),
    ("speech_encoder", "mode", "speech encoder mode"),
    ("translator", "spec", "translator"),
    ("translator", "fingerprint", "translator weights"),
    ("connector", None, "connector sizes"),
    ("arrangement", None, "arrangement"),
    ("compression", None, "compression"),
)


def _field(cfg: dict[str, Any], key: str, sub: str | None) -> Any:
    v = cfg.get(key)
    return (v or {}).get(sub) if sub else v


def _check_shared(first: dict[str, Any], cfg: dict[str, Any], where: str, first_name: str = "") -> None:
    """CheckpointError naming ``where`` and the field where ``cfg`` differs from the first member's ``first``
    (``first_name``: where the first member is, when it is a checkpoint of its own)."""
    for key, sub, what in SHARED:
        a, b = _field(first, key, sub), _field(cfg, key, sub)
        if a != b:
            field = f"{key}.{sub}" if sub else key
            named = f" ({first_name})" if first_name else ""
            raise CheckpointError(f"{where}: field {field!r} ({what}) is {b!r}, the first member's{named} is {a!r}")


def _words(text: str) -> list[str]:
    return [w for w in (t.strip(".,;:!?\"'()").lower() for t in text.split()) if w]


def medoid_transcripts(readings: Sequence[Sequence[str]]) -> list[str]:
    """``readings[k][b]``: member k's transcript of utterance b -> per utterance, the transcript whose summed word
    edit distance to the other members' is least (case and punctuation aside); ties go to the earlier member.
    Hypothesis-level minimum Bayes risk: a word one member mishears is outvoted when the others agree."""
    from rapidfuzz.distance import Levenshtein

    out = []
    for hyps in zip(*readings):
        words = [_words(h) for h in hyps]
        cost = [sum(Levenshtein.distance(w, v) for v in words) for w in words]
        out.append(hyps[min(range(len(hyps)), key=lambda k: (cost[k], k))])
    return out


SUB, INDEL = 4, 3


def _align_to_network(slots: list[list[str | None]], words: list[str]) -> list[tuple[int | None, int | None]]:
    """Word edit-distance alignment of ``words`` to the slots of a voting network: -> (slot, word) pairs in
    order, None on either side for a deletion or an insertion. sclite's weights (substitution 4, insertion and
    deletion 3), so that aligning matching words beats shifting every word by one; a word matching any vote of its
    slot costs 0, and so does leaving a slot that already holds an empty vote (ROVER's null arcs)."""
    n, m = len(slots), len(words)
    inf = float("inf")
    cost = [[inf] * (m + 1) for _ in range(n + 1)]
    back: list[list[tuple[int, int] | None]] = [[None] * (m + 1) for _ in range(n + 1)]
    cost[0][0] = 0
    for i in range(n + 1):
        for j in range(m + 1):
            c = cost[i][j]
            if c == inf:
                continue
            if i < n and j < m:
                step = c + (0 if words[j] in slots[i] else SUB)
                if step < cost[i + 1][j + 1]:
                    cost[i + 1][j + 1], back[i + 1][j + 1] = step, (i, j)
            if i < n:
                step = c + (0 if None in slots[i] else INDEL)
                if step < cost[i + 1][j]:
                    cost[i + 1][j], back[i + 1][j] = step, (i, j)
            if j < m and c + INDEL < cost[i][j + 1]:
                cost[i][j + 1], back[i][j + 1] = c + INDEL, (i, j)
    pairs = []
    i, j = n, m
    while (i, j) != (0, 0):
        pi, pj = back[i][j]
        pairs.append((pi if pi < i else None, pj if pj < j else None))
        i, j = pi, pj
    return pairs[::-1]


def vote_transcripts(readings: Sequence[Sequence[str]]) -> list[str]:
    """``readings[k][b]``: member k's transcript of utterance b -> per utterance, a word-by-word majority vote
    (ROVER): the members' words are aligned into slots, one member at a time, and each slot keeps the word (or
    the gap) most members put there; ties go to the earliest member's choice. Words compare without case or
    punctuation; the result is written as the lexicon writes sentences (first word capitalised, full stop)."""
    from .connectors.phones import Lexicon

    out = []
    for hyps in zip(*readings):
        slots: list[list[str | None]] = []  # per slot, each member's word so far (None: a gap)
        # each word's written form: the earliest member's, from inside a sentence where any member has it there
        # (a sentence's first word carries the capital Lexicon.sentence gave it)
        surface: dict[str, str] = {}
        initial: set[str] = set()
        for k, h in enumerate(hyps):
            words = _words(h)
            for pos, t in enumerate(h.split()):
                w = _words(t)
                if w and (w[0] not in surface or (w[0] in initial and pos > 0)):
                    surface[w[0]] = t.strip(".,;:!?\"'()")
                    (initial.add if pos == 0 else initial.discard)(w[0])
            if k == 0:
                slots = [[w] for w in words]
                continue
            merged: list[list[str | None]] = []
            for si, wi in _align_to_network(slots, words):
                if si is None:
                    merged.append([None] * k + [words[wi]])
                else:
                    merged.append(slots[si] + [None if wi is None else words[wi]])
            slots = merged
        chosen = []
        for votes in slots:
            counts: dict[str | None, int] = {}
            for v in votes:
                counts[v] = counts.get(v, 0) + 1
            best = max(counts.values())
            pick = next(v for v in votes if counts[v] == best)  # the earliest member's among the most voted
            if pick is not None:
                chosen.append(surface[pick])
        out.append(Lexicon.sentence(chosen))
    return out


def make_ensemble(checkpoints: Sequence[str | Path], out: str | Path, *, combine: str = COMBINE) -> Path:
    """Write an ensemble directory ``out`` of the phone-connector checkpoints ``checkpoints`` (two or more; the
    first one's read-out is the ensemble's). Refuses, naming the checkpoint and field, members that do not
    share the foundations, connector sizes, arrangement or 90% of the phone units, and checkpoints that are ensembles
    themselves. Written atomically (a crash leaves no half-written ``out``). Returns ``out``."""
    if combine not in MEMBER_COMBINE:
        raise ValueError(f"combine must be one of {MEMBER_COMBINE}, got {combine!r}")
    paths = [Path(c) for c in checkpoints]
    if len(paths) < 2:
        raise ValueError(f"an ensemble needs two or more checkpoints, got {len(paths)}")
    if len({p.resolve() for p in paths}) != len(paths):
        raise ValueError("an ensemble's checkpoints must be different directories (one is named twice)")
    out = Path(out)
    if out.resolve() in {p.resolve() for p in paths}:
        raise ValueError(f"--out {out} is one of the checkpoints: write the ensemble to a new directory")
    cfgs = [read_config(p) for p in paths]
    for p, cfg in zip(paths, cfgs):
        if is_ensemble(cfg):
            raise CheckpointError(f"checkpoint {p} is an ensemble already: name its members instead")
        if cfg.get("speech_encoder") is None:
            raise CheckpointError(f"checkpoint {p} has no speech encoder: an ensemble reads audio")
    first_units = _units(paths[0], cfgs[0])
    member_units = []
    for p, cfg in zip(paths[1:], cfgs[1:]):
        _check_shared(cfgs[0], cfg, f"checkpoint {p}", str(paths[0]))
        units = _units(p, cfg)
        shared = len(set(units) & set(first_units))
        if shared < MIN_SHARED_UNITS * len(first_units):
            raise CheckpointError(
                f"checkpoint {p}: its phone head shares {shared} of the first member's {len(first_units)} units "
                f"({paths[0]}); at least {MIN_SHARED_UNITS:.0%} expected: a connector of the same recipe"
            )
        member_units.append(units)
        if not (p / WEIGHTS).is_file():
            raise CheckpointError(f"checkpoint {p} has no {WEIGHTS}")

    def fill(tmp: Path) -> None:
        for f in paths[0].iterdir():  # the first member whole (its head data is the read-out), not its trainer state
            if f.is_file() and f.name != TRAINER_STATE:
                shutil.copy2(f, tmp / f.name)
        members = []
        for i, (p, cfg) in enumerate(zip(paths[1:], cfgs[1:]), start=1):
            d = tmp / MEMBERS_DIR / str(i)
            d.mkdir(parents=True)
            shutil.copy2(p / WEIGHTS, d / WEIGHTS)
            (d / CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str))
            (d / UNITS_FILE).write_text(json.dumps(member_units[i - 1], ensure_ascii=False))
            members.append(f"{MEMBERS_DIR}/{i}")
        cfg = dict(cfgs[0])
        cfg[KEY] = {"members": members, "combine": combine, "sources": [str(p) for p in paths]}
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str))
        card = tmp / "README.md"
        how = (
            "each member's phone posteriors are read by the first one's lexicon search and, per utterance, the transcript "
            "nearest the others' by word edit distance is translated"
            if combine == "medoid"
            else "the members' phone posteriors are averaged (the log of their mean probability per frame) and read by "
            "the first one's lexicon search"
        )
        head = (
            f"# Ensemble of {len(paths)} phone connectors\n\n"
            f"Combined by `{combine}`: {how}. Members, in order:\n\n"
            + "".join(f"{k}. `{p}`\n" for k, p in enumerate(paths))
            + "\nThe first member's card follows.\n\n"
        )
        card.write_text(head + (card.read_text(encoding="utf-8") if card.is_file() else ""), encoding="utf-8")

    write_dir_atomically(out, fill)
    log.info("ensemble of %d connectors written to %s", len(paths), out)
    return out


def check_ensemble_block(cfg: dict[str, Any], where: Path) -> tuple[list[str], str]:
    """The member directories an ensemble's config.json names (relative to it), checked: a list of strings
    inside the directory, and a combine rule this version knows. CheckpointError names the field."""
    block = cfg[KEY]
    members = block.get("members") if isinstance(block, dict) else None
    if not isinstance(members, list) or not members or not all(isinstance(m, str) and m for m in members):
        raise CheckpointError(
            f"{where / CONFIG}: field 'ensemble.members': expected a list of member directories, got {members!r}"
        )
    combine = block.get("combine", COMBINE)
    if combine not in MEMBER_COMBINE:
        raise CheckpointError(f"{where / CONFIG}: field 'ensemble.combine': expected one of {MEMBER_COMBINE}, got {combine!r}")
    for m in members:
        if Path(m).is_absolute() or ".." in Path(m).parts:
            raise CheckpointError(f"{where / CONFIG}: field 'ensemble.members': {m!r} must be a directory inside the ensemble")
    return members, combine


def attach_members(model: AlignedST, path: str | Path, cfg: dict[str, Any]) -> AlignedST:
    """Load the members an ensemble directory's config names into ``model`` (its first member, loaded by
    ``load_connector``); each member's head reads the first member's units, checked against its own."""
    from .connectors.phones import PhoneCTCHead

    path = Path(path)
    first = model.ctc_head
    if not isinstance(first, PhoneCTCHead):
        raise CheckpointError(f"ensemble {path}: its first member has no phone head")
    members = []
    names, combine = check_ensemble_block(cfg, path)
    for rel in names:
        d = path / rel
        m_cfg = read_config(d)
        units_file = d / UNITS_FILE
        if not units_file.is_file():
            raise CheckpointError(f"ensemble member {d}: {UNITS_FILE} is missing")
        try:
            units = json.loads(units_file.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"ensemble member {units_file}: not JSON ({e})") from e
        if not isinstance(units, list) or not all(isinstance(u, str) for u in units):
            raise CheckpointError(f"ensemble member {units_file}: expected a JSON list of phone units")
        _check_shared(cfg, m_cfg, f"ensemble member {d}")
        mc = model_config_of(m_cfg)
        conn = build_connector(
            mc.connector, in_dim=m_cfg["connector"]["in_dim"], out_dim=model.translator.embed_dim, **mc.connector_args
        )
        # a member's head only computes posteriors: it shares the first member's lexicon and never reads
        try:
            head = PhoneCTCHead(embed_dim=model.translator.embed_dim, units=units, lexicon=first.lexicon)
        except ValueError as e:
            raise CheckpointError(f"ensemble member {units_file}: {e}") from e
        wfile = d / WEIGHTS
        try:
            state = load_file(str(wfile))
            conn.load_state_dict({k[len("connector.") :]: v for k, v in state.items() if k.startswith("connector.")}, strict=True)
            head.load_state_dict({k[len("ctc_head.") :]: v for k, v in state.items() if k.startswith("ctc_head.")}, strict=True)
        except FileNotFoundError as e:
            raise CheckpointError(f"ensemble member {d} has no {WEIGHTS}") from e
        except Exception as e:  # safetensors raises several types for a damaged file; torch a RuntimeError on shapes
            raise CheckpointError(f"{wfile}: cannot load the member's weights ({e})") from e
        members.append((conn, head))
    try:
        model.add_members(members, combine=combine)
    except ValueError as e:
        raise CheckpointError(f"ensemble {path}: {e}") from e
    return model
