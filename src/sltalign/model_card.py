"""The model card: a README.md written into every checkpoint directory, shown by ``sltalign info``.

It says what a connector is and where it came from, from what the checkpoint itself records (config.json) and,
for checkpoints written by ``sltalign train``, the run's recipe beside them (``OUT/config.yaml``, the parent of
``OUT/best`` and ``OUT/last``): the frozen foundations with their weight fingerprints, the connector and its
parameter counts, the recipe (stages, objectives, seed), the training and dev data, the dev scores with their
sacrebleu signatures, the decoding defaults, the library versions that wrote it, and its intended use and
limits. Writing a card never costs a checkpoint: a failure is logged and the checkpoint is written without it.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CARD = "README.md"
#: the run's recipe that ``sltalign train`` writes beside its checkpoints
RECIPE = "config.yaml"


def _versions() -> dict[str, str]:
    """Versions of the libraries that shape a checkpoint's numbers."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("sltalign", "torch", "transformers", "safetensors", "sacrebleu", "numpy", "ctranslate2", "faster-whisper"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _read_recipe(path: Path | None) -> dict[str, Any] | None:
    if path is None or not Path(path).is_file():
        return None
    try:
        import yaml

        recipe = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return recipe if isinstance(recipe, dict) else None
    except Exception:  # a recipe we cannot read is left out of the card, never a failed checkpoint
        return None


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.2f}" if abs(x) >= 1 else f"{x:.3g}"
    return "" if x is None else str(x)


def render_card(
    cfg: dict[str, Any],
    *,
    name: str = "connector",
    recipe: dict[str, Any] | None = None,
    versions: dict[str, str] | None = None,
    read_out: str | None = None,
) -> str:
    """The card's Markdown for a checkpoint config (``checkpoint.model_config`` plus ``training``); ``read_out``:
    how the CTC head reads its posteriors (``CTCHead.read_out``), when known."""
    from .api import target_language

    se = cfg.get("speech_encoder") or {}
    tr = cfg.get("translator") or {}
    conn = cfg.get("connector") or {}
    params = cfg.get("parameters") or {}
    training = cfg.get("training") or {}
    lang = target_language(cfg) or "the translator's target language"
    head = (cfg.get("ctc_head") or {}).get("kind", "tied") if cfg.get("ctc") else None
    L: list[str] = [
        f"# {name}: English speech to {lang} text (sltalign connector)",
        "",
        f"A {conn.get('name', '?')} connector (the only trained part, {params.get('trainable', '?'):,} parameters) between a frozen "
        f"speech encoder, `{se.get('spec')}`, and a frozen translation model, `{tr.get('spec')}`, in the "
        f'{str(cfg.get("arrangement", "?")).upper()} arrangement of "Aligning Pre-trained Models for Spoken Language '
        f"Translation\" (arXiv 2411.18294). This directory holds the connector's weights and the names and fingerprints "
        f"of the foundations; they load from their own packages or directories.",
        "",
        "```python",
        "from sltalign import SpeechTranslator",
        f'st = SpeechTranslator.from_pretrained("{name}")',
        'st.translate("talk.wav")                # the translation',
        'st.translate_segments("talk.wav")       # with segment times',
        "```",
        f"Command line: `sltalign translate --model {name} talk.wav -o out -f srt`, `sltalign serve --model {name}`.",
        "",
        "## Foundations (frozen)",
        "| role | model | weight fingerprint | details |",
        "| --- | --- | --- | --- |",
        f"| speech encoder | `{se.get('spec')}` | `{se.get('fingerprint')}` | mode {se.get('mode')}, precision {se.get('precision')}, engine {se.get('engine') or 'torch'}, "
        f"width {se.get('dim')} |",
        f"| translator | `{tr.get('spec')}` | `{tr.get('fingerprint')}` | embedding width {tr.get('embed_dim')}"
        + (f", options {json.dumps(tr.get('kwargs'))}" if tr.get("kwargs") else "")
        + " |",
        "",
        "Loading refuses foundations whose weights do not match these fingerprints.",
        "",
        "## Connector",
        f"- {conn.get('name', '?')}: " + ", ".join(f"{k} {v}" for k, v in conn.items() if k != "name"),
        f"- CTC head: {head or 'none'}"
        + (f" (read-out: {read_out})" if read_out else "")
        + f"; compression: {cfg.get('compression') or 'none'}; prompt: {cfg.get('prompt')!r}",
        f"- parameters: {params.get('trainable', '?'):,} trainable, {params.get('frozen', '?'):,} frozen"
        + (f" (connector share {params['connector_share']:.2%})" if isinstance(params.get("connector_share"), float) else ""),
        "",
        "## Training",
    ]
    if recipe:
        data = recipe.get("data") or {}
        L += [
            f"- seed: {recipe.get('seed')}; out: `{recipe.get('out')}`"
            + (f"; started from `{recipe['init_from']}`" if recipe.get("init_from") else ""),
            f"- training data: `{data.get('train')}`; dev data: `{data.get('dev')}`",
        ]
        for i, st in enumerate(recipe.get("stages") or []):
            objectives = ", ".join(f"{k} {v}" for k, v in (st.get("objectives") or {}).items())
            limit = f", at most {st['max_minutes']} min" if st.get("max_minutes") else ""
            L.append(f"- stage {i} `{st.get('name')}`: {objectives}; {st.get('steps')} steps{limit}, lr {st.get('lr')}")
    else:
        L.append("- recipe: not recorded beside this checkpoint (it was not written by `sltalign train`, or was moved)")
    if "step" in training:
        L.append(f"- saved at step {training['step']}")
    loop = training.get("loop") or {}
    if loop:
        L.append(
            f"- training state: stage {loop.get('stage')}, step {loop.get('global_step')}, {_fmt(loop.get('minutes'))} min"
            + (
                f", best {loop.get('best_on', 'dev.bleu')} {_fmt(loop.get('best_score', loop.get('best_bleu')))}"
                f" at step {loop.get('best_step')}"
                if loop.get("best_step")
                else ""
            )
        )
    dev = training.get("dev") or {}
    L += ["", "## Scores"]
    if dev:
        rows = {"dev": dev, **(training.get("watched") or {})}
        L += [
            "| set | n | BLEU | chrF | CTC WER |",
            "| --- | --- | --- | --- | --- |",
            *(
                f"| {name} | {r.get('n', '')} | {_fmt(r.get('bleu'))} | {_fmt(r.get('chrf'))} | {_fmt(r.get('ctc_wer'))} |"
                for name, r in rows.items()
            ),
            "",
        ]
        if training.get("select"):
            L.append(f"- chosen on: `{training['select']}`")
        for k in ("bleu_signature", "chrf_signature"):
            if dev.get(k):
                L.append(f"- {k.replace('_', ' ')}: `{dev[k]}`")
        L.append("")
        L.append("The score that chose the checkpoint flatters it; score a held-out test set with `sltalign evaluate`.")
    else:
        L.append("No scores recorded with this checkpoint; measure it with `sltalign evaluate --model DIR --manifest M.jsonl`.")
    dec = cfg.get("decoding") or {}
    L += [
        "",
        "## Decoding defaults",
        ", ".join(f"{k} {v}" for k, v in dec.items()) or "library defaults",
        "",
        "## Software",
        ", ".join(f"{k} {v}" for k, v in (versions or _versions()).items())
        + f"; written by sltalign {cfg.get('sltalign_version')}",
        "",
        "## Intended use and limits",
        f"- For: translating English speech into {lang} text, where a small trained part on top of models you already "
        "have is worth more than the best possible quality; research on aligning frozen models.",
        "- The connector knows only the voices, accents, recording conditions and topics of its training data. Trained on "
        "synthetic (TTS) speech, it does much worse on people's recordings than on synthetic test sets; measure it on your "
        "own audio before relying on it.",
        "- The translation is only as good as the frozen translator, and errors in what the connector hears become fluent, "
        "wrong translations: nothing in the output marks them. Do not use it unreviewed where a wrong translation could harm "
        "someone (medical, legal, safety-critical settings).",
        "- Long audio is cut at pauses (Silero VAD) and the pieces are translated one at a time, without context from each "
        "other; overlapping speakers, music and noise are not handled.",
        "- The licences of the foundation models apply to their use through this connector.",
        "",
    ]
    return "\n".join(L)


def write_model_card(
    directory: str | Path,
    cfg: dict[str, Any],
    *,
    recipe: str | Path | None = None,
    name: str | None = None,
    read_out: str | None = None,
) -> Path | None:
    """Write ``directory/README.md`` for the checkpoint config ``cfg``; ``recipe``: the run's config.yaml, if any.
    Returns the path, or None when the card could not be written (logged; the caller's checkpoint goes on)."""
    directory = Path(directory)
    try:
        text = render_card(
            cfg, name=name or directory.name, recipe=_read_recipe(Path(recipe) if recipe else None), read_out=read_out
        )
        path = directory / CARD
        path.write_text(text, encoding="utf-8")
        return path
    except Exception as e:  # the card is documentation: never the reason a checkpoint is lost
        log.warning("could not write the model card in %s: %s: %s", directory, type(e).__name__, e)
        return None


def read_model_card(checkpoint: str | Path) -> str | None:
    """The card of a checkpoint directory, or None when it has none (checkpoints written before cards existed)."""
    p = Path(checkpoint) / CARD
    return p.read_text(encoding="utf-8") if p.is_file() else None


if __name__ == "__main__":  # pragma: no cover - `python -m sltalign.model_card CKPT`: (re)write a card
    from .checkpoint import read_config

    for d in sys.argv[1:]:
        print(write_model_card(d, read_config(d), recipe=Path(d).resolve().parent / RECIPE))
