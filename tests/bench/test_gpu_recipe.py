"""bench/gpu_paper_recipe.sh on its CPU path: every stage runs at a tiny scale and leaves its results.

The GPU run is too scarce to debug on: this runs the same stages (check, data, encode, both recipes' training
and evaluation) with whisper-tiny.en, tens of clips and seconds of training, and checks that results.json has
each stage's status and measurements and both recipes' scores with their signatures, and that report.md is
written. A stage that breaks fails this test (its status is "failed" and the script exits non-zero).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_paper_recipe.sh"
STAGES = ("check", "data", "encode", "train_paper", "eval_paper", "train_demo", "eval_demo")


@pytest.mark.packaged
@pytest.mark.slow
@pytest.mark.timeout(1000)
def test_gpu_recipe_cpu_path(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: bash scripts/setup.sh installs it")
    out = tmp_path / "gpu_out"
    env = {
        **os.environ,
        "SLTALIGN_GPU_SCRIPT_CPU": "1",
        "OUT": str(out),
        "PYTHON": sys.executable,
        "SLTALIGN_CACHE": os.environ.get("SLTALIGN_CACHE", str(Path.home() / ".cache" / "sltalign")),
    }
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=950)
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}\n{log[-6000:]}"

    doc = json.loads((out / "results.json").read_text())
    stages = doc["stages"]
    for name in STAGES:
        assert stages[name]["status"] == "ok", (name, stages[name], log[-4000:])
        assert stages[name]["seconds"] > 0
    assert stages["check"]["tiny"] is True and stages["check"]["cuda_available"] in (True, False)
    data = stages["data"]
    assert data["clips"]["train"] == 40 and data["clips"]["test"] == 6 and data["real_clips"] == 4
    enc = stages["encode"]
    assert enc["clips"] > 0 and enc["audio_seconds_per_second"] > 0 and enc["device"] == "cpu"
    for recipe in ("paper", "demo"):
        tr = stages[f"train_{recipe}"]
        assert tr["steps"] >= 1 and Path(tr["checkpoint"], "config.json").is_file(), tr
        assert tr["steps_per_second"] is None or tr["steps_per_second"] > 0
        assert any(o.startswith("preset ") for o in tr["overrides"])
        ev = stages[f"eval_{recipe}"]
        for set_name, n in (("synthetic_test", 6), ("real_speech", 4)):
            res = ev[set_name]
            assert "error" not in res, res
            assert res["n"] == n and 0 <= res["bleu"] <= 100 and 0 <= res["chrf"] <= 100
            assert res["bleu_signature"].startswith("nrefs:1") and "chrF" not in res["bleu_signature"]
            assert res["chrf_signature"].startswith("nrefs:1")
    assert "paper" in stages["train_paper"]["overrides"][0] and "phones" in stages["train_demo"]["overrides"][0]
    report = (out / "report.md").read_text()
    assert "| train_demo | ok |" in report and "real speech BLEU" in report


def test_stage_record_and_report_without_models(tmp_path: Path) -> None:
    """A killed stage is recorded as such and the report is written from whatever results.json holds."""
    py = [sys.executable, str(ROOT / "bench" / "gpu_paper_recipe.py"), "--out", str(tmp_path)]
    subprocess.run([*py, "record", "data", "timeout", "150.2"], check=True)
    subprocess.run([*py, "report"], check=True)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["stages"]["data"] == {"status": "timeout", "seconds": 150.2}
    report = (tmp_path / "report.md").read_text()
    assert "| data | timeout | 150.2 |" in report and "| encode | not run | - |" in report
