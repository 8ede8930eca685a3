"""evaluate: corpus scores equal sacreBLEU's own, buckets, result files, report and plots."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import sacrebleu

from sltalign.evaluate import bucket_of, plot_training_curve, score, write_report, write_results

REFS = [
    "O gato está em cima da mesa.",
    "Eu gosto muito de ler livros à noite.",
    "A reunião foi adiada para amanhã de manhã.",
    "Ela comprou três maçãs e um pão.",
    "O comboio para Lisboa parte às nove horas.",
    "Por favor, feche a janela.",
    "Não sei onde deixei as minhas chaves.",
    "O tempo hoje está muito quente.",
]
HYPS = [
    "O gato está sobre a mesa.",
    "Eu gosto de ler livros à noite.",
    "A reunião foi adiada para amanhã.",
    "",  # the system produced nothing
    "O trem para Lisboa sai às nove horas.",
    "Feche a janela, por favor.",
    "Não sei onde deixei minhas chaves.",
    "Hoje o tempo está muito quente.",
]
DURATIONS = [1.0, 4.99, 5.0, 9.5, 10.0, 20.0, 20.01, 35.0]


def test_score_equals_sacrebleu_corpus_scores() -> None:
    m = score(HYPS, REFS)
    assert m["n"] == len(REFS)
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-9)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score, abs=1e-9)
    # corpus-level, not an average of sentence scores (they differ on this data)
    sent_mean = np.mean([sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(HYPS, REFS)])
    assert abs(m["bleu"] - sent_mean) > 0.1
    assert 0 < m["bleu"] < 100 and 0 < m["chrf"] < 100
    assert m["buckets"] is None
    assert m["bleu_details"]["sys_len"] < m["bleu_details"]["ref_len"]


def test_signatures_present() -> None:
    m = score(HYPS, REFS)
    assert "nrefs:1" in m["bleu_signature"] and "tok:13a" in m["bleu_signature"]
    assert "version:" in m["bleu_signature"]
    assert "nc:6" in m["chrf_signature"] and "nw:0" in m["chrf_signature"]


def test_buckets() -> None:
    assert [bucket_of(d) for d in DURATIONS] == ["<5s", "<5s", "5-10s", "5-10s", "10-20s", "10-20s", ">20s", ">20s"]
    m = score(HYPS, REFS, durations=DURATIONS)
    assert list(m["buckets"]) == ["<5s", "5-10s", "10-20s", ">20s"]
    for name, idx in {"<5s": [0, 1], "5-10s": [2, 3], "10-20s": [4, 5], ">20s": [6, 7]}.items():
        b = m["buckets"][name]
        h, r = [HYPS[i] for i in idx], [REFS[i] for i in idx]
        assert b["n"] == 2
        assert b["bleu"] == pytest.approx(sacrebleu.corpus_bleu(h, [r]).score)
        assert b["chrf"] == pytest.approx(sacrebleu.corpus_chrf(h, [r]).score)
    # whole-set scores are unchanged by bucketing
    assert m["bleu"] == pytest.approx(score(HYPS, REFS)["bleu"])


def test_empty_buckets_have_null_scores() -> None:
    m = score(HYPS[:3], REFS[:3], durations=[1.0, 2.0, 3.0])
    assert m["buckets"]["<5s"]["n"] == 3
    for name in ("5-10s", "10-20s", ">20s"):
        assert m["buckets"][name] == {"bleu": None, "chrf": None, "n": 0}


def test_all_empty_hyps_score_zero() -> None:
    m = score([""] * 3, REFS[:3])
    assert m["bleu"] == 0.0 and m["chrf"] == 0.0


@pytest.mark.parametrize(
    ("hyps", "refs", "durations", "message"),
    [
        (HYPS[:2], REFS[:3], None, "differ in length"),
        ([], [], None, "empty reference list"),
        (["a"], ["  "], None, r"refs\[0\]: empty reference"),
        ([None, "a"], ["x", "y"], None, r"hyps\[0\]"),
        (HYPS[:2], REFS[:2], [1.0], "durations has 1"),
        (HYPS[:2], REFS[:2], [1.0, -2.0], r"durations\[1\]"),
        (HYPS[:2], REFS[:2], [1.0, float("nan")], r"durations\[1\]"),
    ],
)
def test_score_errors(hyps: list, refs: list, durations: list | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        score(hyps, refs, durations=durations)


def test_write_results(tmp_path: Path) -> None:
    ids = [f"utt{i:02d}" for i in range(len(REFS))]
    out = tmp_path / "run"
    extra = {"system": "cascade", "timings": {"asr_seconds": 1.5}, "rtf": 0.12}  # repeating the name is fine
    m = write_results(out, "cascade", ids, HYPS, REFS, DURATIONS, extra=extra)
    lines = [json.loads(x) for x in (out / "hyps.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["id"] for x in lines] == ids
    assert [x["hyp"] for x in lines] == HYPS and [x["ref"] for x in lines] == REFS
    assert [x["duration"] for x in lines] == DURATIONS
    on_disk = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert on_disk == m
    assert on_disk["system"] == "cascade" and on_disk["rtf"] == 0.12
    assert on_disk["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert sorted(p.name for p in out.iterdir()) == ["hyps.jsonl", "metrics.json"]  # no temp files left


def test_write_results_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="would overwrite"):
        write_results(tmp_path, "s", ["a", "b"], HYPS[:2], REFS[:2], None, extra={"bleu": 1.0})
    with pytest.raises(ValueError, match="would overwrite"):
        write_results(tmp_path, "s", ["a", "b"], HYPS[:2], REFS[:2], None, extra={"system": "other"})
    with pytest.raises(ValueError, match="duplicate"):
        write_results(tmp_path, "s", ["a", "a"], HYPS[:2], REFS[:2], None)
    with pytest.raises(ValueError, match="ids has 1"):
        write_results(tmp_path, "s", ["a"], HYPS[:2], REFS[:2], None)
    assert not (tmp_path / "metrics.json").exists()


def _two_systems() -> dict[str, dict]:
    worse = [h.split(" ")[0] if h else "" for h in HYPS]
    a = score(HYPS, REFS, durations=DURATIONS)
    a["timings"] = {"rtf": 0.145}  # as the evaluate command stores it
    b = score(worse, REFS, durations=DURATIONS)
    return {"cascade": a, "aligned-ste": b}


def _table_rows(text: str, first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith(f"| {first_cell} |")]


def test_write_report_tables_and_plot(tmp_path: Path) -> None:
    results = _two_systems()
    path = write_report(tmp_path, results, title="Demo", notes=["trained 10 min"], reference_kind="human")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Demo\n")
    assert "References are human translations." in text
    assert "- trained 10 min" in text
    assert results["cascade"]["bleu_signature"] in text and results["cascade"]["chrf_signature"] in text
    for name, m in results.items():
        score_row, bucket_row = _table_rows(text, name)
        assert score_row[1] == f"{m['bleu']:.1f}" and score_row[2] == f"{m['chrf']:.1f}"
        assert score_row[3] == str(m["n"])
        assert score_row[4] == ("0.145" if name == "cascade" else "–")
        for cell, bucket in zip(bucket_row[1:], ["<5s", "5-10s", "10-20s", ">20s"]):
            b = m["buckets"][bucket]
            assert cell == f"{b['bleu']:.1f} / {b['chrf']:.1f} ({b['n']})"
    assert "![" in text and "(scores.png)" in text
    img = matplotlib.image.imread(tmp_path / "scores.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.05  # something was drawn
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # the demo's results.json shape nests the signatures: the report still names them
    nested = {
        k: {
            **{f: m[f] for f in ("bleu", "chrf", "n", "buckets")},
            "signatures": {"bleu": m["bleu_signature"], "chrf": m["chrf_signature"]},
        }
        for k, m in results.items()
    }
    text = write_report(tmp_path / "nested", nested, title="Demo", notes=[], reference_kind="human").read_text()
    assert f"BLEU `{results['cascade']['bleu_signature']}`" in text and "`?`" not in text


def test_report_mt_references_and_errors(tmp_path: Path) -> None:
    results = {"x": score(HYPS, REFS)}  # no durations: no bucket table
    text = write_report(tmp_path, results, title="T", notes=[], reference_kind="mt:bergamot-en-pt").read_text()
    assert "machine-translation output (bergamot-en-pt)" in text
    assert "By input duration" not in text
    assert re.search(r"^\| x \| [\d.]+ \| [\d.]+ \| 8 \|$", text, flags=re.M)
    with pytest.raises(ValueError, match="reference_kind"):
        write_report(tmp_path, results, title="T", notes=[], reference_kind="gold")
    with pytest.raises(ValueError, match="notes"):
        write_report(tmp_path, results, title="T", notes="one string", reference_kind="human")
    with pytest.raises(ValueError, match="missing"):
        write_report(tmp_path, {"x": {"bleu": 1.0}}, title="T", notes=[], reference_kind="human")


def _write_curve_csv(path: Path, with_bleu: bool = True) -> None:
    rng = np.random.default_rng(0)
    lines = ["step,minutes,split,name,value"]
    for step in range(0, 200, 10):
        lines.append(f"{step},{step * 0.05:.3f},train,loss,{9.0 * np.exp(-step / 80) + 2 + rng.normal(0, 0.1):.4f}")
        lines.append(f"{step},{step * 0.05:.3f},train,loss_ctc,{5.0 * np.exp(-step / 60) + 1:.4f}")
        lines.append(f"{step},{step * 0.05:.3f},train,lr,0.0002")
        if with_bleu and step % 50 == 0:
            lines.append(f"{step},{step * 0.05 + 0.5:.3f},dev,bleu,{step / 10:.2f}")
    path.write_text("\n".join(lines) + "\n")


def test_plot_training_curve(tmp_path: Path) -> None:
    csv_path = tmp_path / "metrics.csv"
    _write_curve_csv(csv_path)
    out = plot_training_curve(csv_path, tmp_path / "curve.png")
    img = matplotlib.image.imread(out)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 500
    assert img[..., :3].std() > 0.05
    # loss only (no dev evaluation yet) still plots
    _write_curve_csv(csv_path, with_bleu=False)
    assert matplotlib.image.imread(plot_training_curve(csv_path, tmp_path / "curve2.png")).ndim == 3


def test_plot_training_curve_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        plot_training_curve(tmp_path / "nope.csv", tmp_path / "x.png")
    bad = tmp_path / "bad.csv"
    bad.write_text("step,split,name,value\n1,train,loss,2.0\n")
    with pytest.raises(ValueError, match=r"bad.csv: missing column\(s\) \['minutes'\]"):
        plot_training_curve(bad, tmp_path / "x.png")
    bad.write_text("step,minutes,split,name,value\n1,0.1,train,loss,abc\n")
    with pytest.raises(ValueError, match="line 2"):
        plot_training_curve(bad, tmp_path / "x.png")
    bad.write_text("step,minutes,split,name,value\n1,0.1,train,lr,0.1\n")
    with pytest.raises(ValueError, match="no 'train' loss rows"):
        plot_training_curve(bad, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_word_error_rate_is_corpus_level_and_ignores_case_and_punctuation() -> None:
    from sltalign.evaluate import word_error_rate

    assert word_error_rate(["hello world"], ["Hello, World!"]) == 0.0
    assert word_error_rate(["i'll go now"], ["I'll go home"]) == pytest.approx(1 / 3)
    # corpus level: 1 error over 5 reference words, not the mean of per-sentence rates (0.5)
    assert word_error_rate(["cat", "a b c d"], ["dog", "a b c d"]) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="2 hypotheses for 1"):
        word_error_rate(["a", "b"], ["a"])
