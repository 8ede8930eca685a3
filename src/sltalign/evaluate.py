"""Scoring, result files, reports and plots: sacreBLEU corpus BLEU and chrF with their signatures.

Scores are always corpus-level (sacreBLEU's ``corpus_score`` over the whole set or bucket); sentence
scores are never averaged. Every score is reported with its sacreBLEU signature so numbers from different
runs can be compared honestly. No model runs here: callers pass hypotheses in.

Files written (each atomically: a temporary file in the same directory, then ``os.replace``):
    out_dir/hyps.jsonl     one {"id", "hyp", "ref", "duration"} per utterance   (write_results)
    out_dir/metrics.json   score() output + "system" + caller's extra fields   (write_results)
    out_dir/report.md      system tables, bucket table, signatures, notes      (write_report)
    out_dir/scores.png     BLEU/chrF per system per duration bucket            (write_report)
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # no pyplot: no global backend state, always the Agg canvas
from sacrebleu.metrics import BLEU, CHRF

#: duration buckets in seconds: (name, low, high). A duration d falls in the first bucket with
#: low <= d < high, except that exactly 20.0 s still counts as "10-20s" (">20s" means longer than 20 s).
BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<5s", 0.0, 5.0),
    ("5-10s", 5.0, 10.0),
    ("10-20s", 10.0, 20.0),
    (">20s", 20.0, math.inf),
)
REFERENCE_KINDS = ("human", "mt")


def bucket_of(duration: float) -> str:
    """The name of the duration bucket (see BUCKETS) that ``duration`` seconds falls in."""
    if not math.isfinite(duration) or duration < 0:
        raise ValueError(f"duration must be a finite number of seconds >= 0, got {duration!r}")
    if duration == 20.0:
        return "10-20s"
    for name, low, high in BUCKETS:
        if low <= duration < high:
            return name
    raise AssertionError("unreachable: BUCKETS cover [0, inf)")


def _check_texts(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(refs) == 0:
        raise ValueError("refs: empty reference list; nothing to score")
    if len(hyps) != len(refs):
        raise ValueError(f"hyps and refs differ in length: {len(hyps)} hypotheses vs {len(refs)} references")
    for i, (h, r) in enumerate(zip(hyps, refs)):
        if not isinstance(h, str):
            raise ValueError(f'hyps[{i}]: expected a string ("" for no output), got {type(h).__name__}')
        if not isinstance(r, str):
            raise ValueError(f"refs[{i}]: expected a string, got {type(r).__name__}")
        if not r.strip():
            raise ValueError(f"refs[{i}]: empty reference; a test set needs a translation for every utterance")


def _corpus(hyps: Sequence[str], refs: Sequence[str]) -> tuple[Any, Any, BLEU, CHRF]:
    bleu, chrf = BLEU(), CHRF()
    return bleu.corpus_score(list(hyps), [list(refs)]), chrf.corpus_score(list(hyps), [list(refs)]), bleu, chrf


def score(hyps: Sequence[str], refs: Sequence[str], *, durations: Sequence[float] | None = None) -> dict[str, Any]:
    """Corpus BLEU and chrF of ``hyps`` against one reference each, overall and per duration bucket.

    Args:
        hyps: system outputs; "" is allowed (the system produced nothing).
        refs: one non-empty reference per hypothesis.
        durations: seconds of audio per utterance; when given, scores are also computed per bucket of
            BUCKETS.

    Returns:
        {"n", "bleu", "chrf", "bleu_signature", "chrf_signature",
         "bleu_details": {"bp", "precisions", "sys_len", "ref_len"},
         "buckets": {name: {"bleu", "chrf", "n"}} for every bucket (n 0 and null scores when empty),
                    or None without durations}

    Raises:
        ValueError: lengths differ, no references, an empty reference, or a bad duration.
    """
    _check_texts(hyps, refs)
    if durations is not None and len(durations) != len(refs):
        raise ValueError(f"durations has {len(durations)} entries but there are {len(refs)} references")
    b, c, bleu, chrf = _corpus(hyps, refs)
    result: dict[str, Any] = {
        "n": len(refs),
        "bleu": b.score,
        "chrf": c.score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_details": {"bp": b.bp, "precisions": list(b.precisions), "sys_len": b.sys_len, "ref_len": b.ref_len},
        "buckets": None,
    }
    if durations is not None:
        names = []
        for i, d in enumerate(durations):
            try:
                names.append(bucket_of(float(d)))
            except (TypeError, ValueError) as err:
                raise ValueError(f"durations[{i}]: {err}") from None
        buckets: dict[str, dict[str, Any]] = {}
        for name, _, _ in BUCKETS:
            idx = [i for i, n in enumerate(names) if n == name]
            if not idx:
                buckets[name] = {"bleu": None, "chrf": None, "n": 0}
                continue
            bb, cc, _, _ = _corpus([hyps[i] for i in idx], [refs[i] for i in idx])
            buckets[name] = {"bleu": bb.score, "chrf": cc.score, "n": len(idx)}
        result["buckets"] = buckets
    return result


# --- files ---------------------------------------------------------------------------------------


def _words(text: str) -> str:
    """Lower case, punctuation other than apostrophes dropped, single spaces: what WER compares."""
    return " ".join("".join(ch if ch.isalnum() or ch in "' " else " " for ch in text.lower()).split())


def word_error_rate(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus WER (all word edits / all reference words, jiwer) after ``_words`` normalisation, so that
    case and punctuation, which a CTC transcript may spell differently from the written reference, do
    not count. References that normalise to nothing are skipped. Raises ValueError on unequal lengths."""
    import jiwer

    if len(hyps) != len(refs):
        raise ValueError(f"word_error_rate: {len(hyps)} hypotheses for {len(refs)} references")
    pairs = [(_words(h), _words(r)) for h, r in zip(hyps, refs)]
    pairs = [(h, r) for h, r in pairs if r]
    if not pairs:
        raise ValueError("word_error_rate: no reference with words in it")
    return float(jiwer.wer([r for _, r in pairs], [h for h, _ in pairs]))


def _atomic_write(path: Path, write: Any, *, binary: bool = False) -> None:
    """Write ``path`` through ``write(file)`` into a temporary sibling, then rename it into place, so a
    reader never sees a half-written file and an interrupted run leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(
    out_dir: str | os.PathLike[str],
    system_name: str,
    ids: Sequence[str],
    hyps: Sequence[str],
    refs: Sequence[str],
    durations: Sequence[float] | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score a system and write out_dir/hyps.jsonl and out_dir/metrics.json; returns the metrics.

    metrics.json holds score()'s fields, "system": system_name, and the ``extra`` fields (timings,
    model names, ...) at top level; an extra key that would change a score field (or the system name)
    is an error.
    """
    out = Path(out_dir)
    if len(ids) != len(refs):
        raise ValueError(f"ids has {len(ids)} entries but there are {len(refs)} references")
    dups = [uid for uid, count in Counter(ids).items() if count > 1]
    if dups:
        raise ValueError(f"ids: duplicate utterance id(s) {dups[:5]!r}")
    metrics = score(hyps, refs, durations=durations)
    metrics = {"system": system_name, **metrics}
    for key, value in (extra or {}).items():
        if key in metrics and metrics[key] != value:
            raise ValueError(f"extra: key {key!r} would overwrite a metrics field ({metrics[key]!r} with {value!r})")
        metrics[key] = value

    def write_hyps(f: Any) -> None:
        for i, (uid, h, r) in enumerate(zip(ids, hyps, refs)):
            d = None if durations is None else float(durations[i])
            f.write(json.dumps({"id": uid, "hyp": h, "ref": r, "duration": d}, ensure_ascii=False) + "\n")

    _atomic_write(out / "hyps.jsonl", write_hyps)
    _atomic_write(out / "metrics.json", lambda f: f.write(json.dumps(metrics, ensure_ascii=False, indent=2) + "\n"))
    return metrics


# --- report --------------------------------------------------------------------------------------


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def _reference_sentence(reference_kind: str) -> str:
    kind, _, what = reference_kind.partition(":")
    if kind == "human":
        return "References are human translations."
    if kind == "mt":
        source = f" ({what})" if what else ""
        return (
            f"References are machine-translation output{source}, not human translations: the scores measure "
            "agreement with that MT system, not translation quality."
        )
    raise ValueError(f"reference_kind: expected 'human', 'mt' or 'mt:<which system>', got {reference_kind!r}")


def _rtf(m: Mapping[str, Any]) -> float | None:
    """Real-time factor of a result: a top-level "rtf", or "rtf" inside its "timings" dict."""
    rtf = m.get("rtf")
    if rtf is None and isinstance(m.get("timings"), Mapping):
        rtf = m["timings"].get("rtf")
    return None if rtf is None or not math.isfinite(rtf) else float(rtf)


def _check_results(results: Mapping[str, Mapping[str, Any]]) -> None:
    if not results:
        raise ValueError("results: no systems to report")
    for name, m in results.items():
        missing = [k for k in ("bleu", "chrf", "n") if k not in m]
        if missing:
            raise ValueError(f"results[{name!r}]: missing {missing}; pass the dicts that score()/write_results() return")


def write_report(
    out_dir: str | os.PathLike[str],
    results: Mapping[str, Mapping[str, Any]],
    *,
    title: str,
    notes: Sequence[str],
    reference_kind: str,
) -> Path:
    """Write out_dir/report.md and out_dir/scores.png comparing systems; returns the report's path.

    Args:
        results: system name -> the metrics dict from score() / write_results(). A real-time factor
            ("rtf" at top level or inside "timings"), when any system has one, gets its own column.
        title: the report's heading.
        notes: free-text bullet points (setup, caveats).
        reference_kind: "human", or "mt" / "mt:<which system>" when the references are MT output.
    """
    _check_results(results)
    if isinstance(notes, str):
        raise ValueError("notes: expected a list of strings (one bullet each), got a single string")
    ref_sentence = _reference_sentence(reference_kind)
    out = Path(out_dir)
    with_rtf = any(_rtf(m) is not None for m in results.values())

    lines = [f"# {title}", "", ref_sentence, "", "## Scores", ""]
    header = "| system | BLEU | chrF | n |" + (" RTF |" if with_rtf else "")
    lines += [header, "|---|---:|---:|---:|" + ("---:|" if with_rtf else "")]
    for name, m in results.items():
        row = f"| {name} | {_fmt(m['bleu'])} | {_fmt(m['chrf'])} | {m['n']} |"
        if with_rtf:
            rtf = _rtf(m)
            row += f" {rtf:.3f} |" if rtf is not None else " – |"
        lines.append(row)

    if any(m.get("buckets") for m in results.values()):
        names = [b[0] for b in BUCKETS]
        lines += ["", "## By input duration", "", "BLEU / chrF (n utterances) per bucket of audio duration.", ""]
        lines += ["| system | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for sys_name, m in results.items():
            cells = []
            for b in names:
                entry = (m.get("buckets") or {}).get(b)
                cells.append("–" if not entry else f"{_fmt(entry['bleu'])} / {_fmt(entry['chrf'])} ({entry['n']})")
            lines.append(f"| {sys_name} | " + " | ".join(cells) + " |")

    plot_scores(results, out / "scores.png")
    lines += ["", "![BLEU and chrF per system and duration bucket](scores.png)", ""]

    lines += ["## sacreBLEU signatures", ""]
    sigs: dict[tuple[str, str], list[str]] = {}
    for name, m in results.items():
        # write_results' flat keys, or the demo's results.json shape ({"signatures": {"bleu", "chrf"}})
        nested = m.get("signatures") or {}
        bleu_sig = m.get("bleu_signature") or nested.get("bleu", "?")
        chrf_sig = m.get("chrf_signature") or nested.get("chrf", "?")
        sigs.setdefault((bleu_sig, chrf_sig), []).append(name)
    for (bs, cs), names_ in sigs.items():
        who = "all systems" if len(sigs) == 1 else ", ".join(names_)
        lines += [f"- {who}: BLEU `{bs}`; chrF `{cs}`"]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    text = "\n".join(lines) + "\n"
    path = out / "report.md"
    _atomic_write(path, lambda f: f.write(text))
    return path


def _save_png(fig: Figure, out_png: Path) -> None:
    _atomic_write(out_png, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"), binary=True)


def plot_scores(results: Mapping[str, Mapping[str, Any]], out_png: str | os.PathLike[str]) -> Path:
    """Grouped bar chart: BLEU (left) and chrF (right) for every system, overall and per duration bucket.

    Groups are "all" plus the buckets that hold utterances for some system; empty ones are left out.
    """
    _check_results(results)
    groups = ["all"] + [
        b[0] for b in BUCKETS if any(((m.get("buckets") or {}).get(b[0]) or {}).get("n") for m in results.values())
    ]
    first = next(iter(results.values()))
    counts = [first["n"] if g == "all" else ((first.get("buckets") or {}).get(g) or {}).get("n", 0) for g in groups]
    fig = Figure(figsize=(max(6.0, 1.6 * len(groups) * 2), 4.0))
    axes = fig.subplots(1, 2)
    width = 0.8 / len(results)
    for ax, metric, label in zip(axes, ("bleu", "chrf"), ("BLEU", "chrF")):
        for k, (name, m) in enumerate(results.items()):
            values = []
            for g in groups:
                v = m[metric] if g == "all" else ((m.get("buckets") or {}).get(g) or {}).get(metric)
                values.append(math.nan if v is None else v)
            xs = [i + (k - (len(results) - 1) / 2) * width for i in range(len(groups))]
            bars = ax.bar(xs, values, width=width, label=name)
            ax.bar_label(bars, labels=["" if math.isnan(v) else f"{v:.1f}" for v in values], fontsize=7)
        ax.set_xticks(range(len(groups)), [f"{g}\n(n={c})" for g, c in zip(groups, counts)])
        ax.set_ylabel(label)
        ax.set_title(f"{label} by input duration")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    out = Path(out_png)
    _save_png(fig, out)
    return out


# --- training curves -----------------------------------------------------------------------------

_CURVE_COLUMNS = ("step", "minutes", "split", "name", "value")


def _read_curve_csv(path: Path) -> list[tuple[float, float, str, str, float]]:
    if not path.is_file():
        raise FileNotFoundError(f"training metrics CSV not found: {path}")
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _CURVE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected header {','.join(_CURVE_COLUMNS)}")
        for line_no, row in enumerate(reader, start=2):
            try:
                rows.append((float(row["step"]), float(row["minutes"]), row["split"], row["name"], float(row["value"])))
            except (TypeError, ValueError):
                raise ValueError(f"{path}, line {line_no}: step, minutes and value must be numbers, got {row}") from None
    return rows


def plot_training_curve(
    metrics_csv: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    *,
    dev_split: str = "dev",
    bleu_name: str = "bleu",
    train_split: str = "train",
) -> Path:
    """Plot training loss and dev BLEU against optimizer step (left) and wall-clock minutes (right).

    The CSV is in long format with columns step,minutes,split,name,value, one measurement per row (the
    training loop appends to it). Train rows whose name contains "loss" are drawn as loss curves (one
    line per loss term); dev rows named ``bleu_name`` as the BLEU curve, with its best point marked, and the
    ``bleu_name`` rows of any other split (training's ``data.watch`` sets) as dashed curves beside it.
    """
    path = Path(metrics_csv)
    rows = _read_curve_csv(path)
    losses: dict[str, list[tuple[float, float, float]]] = {}
    bleu: list[tuple[float, float, float]] = []
    watched: dict[str, list[tuple[float, float, float]]] = {}
    for step, minutes, split, name, value in rows:
        if split == train_split and "loss" in name:
            losses.setdefault(name, []).append((step, minutes, value))
        elif split == dev_split and name == bleu_name:
            bleu.append((step, minutes, value))
        elif name == bleu_name:
            watched.setdefault(split, []).append((step, minutes, value))
    if not losses and not bleu:
        raise ValueError(f"{path}: no '{train_split}' loss rows and no '{dev_split}' '{bleu_name}' rows to plot")

    fig = Figure(figsize=(10.0, 6.5))
    axes = fig.subplots(2, 2, sharex="col")
    for col, (x_index, x_label) in enumerate(((0, "step"), (1, "wall-clock minutes"))):
        ax_loss, ax_bleu = axes[0][col], axes[1][col]
        for name, pts in sorted(losses.items()):
            pts = sorted(pts)
            ax_loss.plot([p[x_index] for p in pts], [p[2] for p in pts], label=name, linewidth=1.0)
        ax_loss.set_ylabel(f"{train_split} loss")
        if losses:
            ax_loss.legend(fontsize=8)
        else:
            ax_loss.text(0.5, 0.5, "no loss rows", ha="center", va="center", transform=ax_loss.transAxes)
        if bleu:
            pts = sorted(bleu)
            ax_bleu.plot([p[x_index] for p in pts], [p[2] for p in pts], marker="o", markersize=3, color="tab:green")
            best = max(pts, key=lambda p: p[2])
            ax_bleu.plot([best[x_index]], [best[2]], marker="*", markersize=12, color="tab:red", linestyle="none")
            ax_bleu.annotate(f"best {best[2]:.1f}", (best[x_index], best[2]), textcoords="offset points", xytext=(5, 5))
        else:
            ax_bleu.text(0.5, 0.5, "no dev BLEU yet", ha="center", va="center", transform=ax_bleu.transAxes)
        for split, pts in sorted(watched.items()):
            pts = sorted(pts)
            ax_bleu.plot([p[x_index] for p in pts], [p[2] for p in pts], marker=".", linestyle="--", label=split)
        if watched:
            if bleu:
                ax_bleu.lines[0].set_label(dev_split)
            ax_bleu.legend(fontsize=8)
        ax_bleu.set_ylabel("BLEU" if watched else f"{dev_split} BLEU")
        ax_bleu.set_xlabel(x_label)
        for ax in (ax_loss, ax_bleu):
            ax.grid(alpha=0.3)
    fig.suptitle(f"Training curves ({path.name})")
    out = Path(out_png)
    _save_png(fig, out)
    return out
