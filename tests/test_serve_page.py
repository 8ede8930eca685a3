"""The server's web page in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium): upload a
file, see the translation with its segments and timestamps, SRT/VTT downloads ready; a bad file shows the
server's error. A screenshot is saved under pytest's tmp dir, and also to $SLTALIGN_PAGE_SCREENSHOT when set
(how docs/img/serve_page.png is made)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
selenium = pytest.importorskip("selenium")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)",
)

from sltalign import SpeechTranslator  # noqa: E402
from sltalign.checkpoint import save_connector  # noqa: E402
from sltalign.connectors import TiedCTCHead, build_connector  # noqa: E402
from sltalign.foundation import load_speech_encoder, load_translator  # noqa: E402
from sltalign.model import AlignedST  # noqa: E402
from sltalign.serve import create_app, running  # noqa: E402
from tests.conftest import speechlike  # noqa: E402


@pytest.fixture(scope="module")
def st(tiny_whisper_dir, sharp_marian_dir, tmp_path_factory) -> SpeechTranslator:
    speech = load_speech_encoder(str(tiny_whisper_dir), mode="trim")
    mt = load_translator(str(sharp_marian_dir))
    torch.manual_seed(0)
    conn = build_connector("mlp", in_dim=speech.dim, out_dim=mt.embed_dim, stack=4, hidden=32)
    model = AlignedST(
        speech_encoder=speech, connector=conn, translator=mt, arrangement="ecd", ctc_head=TiedCTCHead(embed_dim=mt.embed_dim)
    )
    # 3-s pieces, so that the 8-s upload shows several segments with their times
    ckpt = save_connector(
        model,
        tmp_path_factory.mktemp("page") / "tiny-random-model",
        decoding={"beam": 1, "max_len": 8, "length_penalty": 1.0, "max_piece_seconds": 3.0},
    )
    return SpeechTranslator.from_pretrained(ckpt)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1100,900",
        # a fake microphone (a beeping tone) that needs no permission prompt: the recording path runs headless
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)  # no driver download: Debian's
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _clock(seconds: float) -> str:
    """The page's time format (app.js clock): [HH:]MM:SS.mmm."""
    ms = round(seconds * 1000)
    h, m, sec = ms // 3_600_000, ms // 60_000 % 60, ms // 1000 % 60
    return (f"{h:02d}:" if h else "") + f"{m:02d}:{sec:02d}.{ms % 1000:03d}"


def _speech_file(path: Path) -> Path:
    import numpy as np

    sr = 16000
    gap = np.zeros(sr // 2, np.float32)
    sf.write(path, np.concatenate([speechlike(2.5, seed=1), gap, speechlike(2.0, seed=2), gap, speechlike(2.5, seed=3)]), sr)
    return path


def test_upload_shows_translation_segments_and_downloads(st, browser, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from sltalign import segment

    # The tiny random encoder gives the VAD nothing to go on; mark the three tone bursts as speech.
    sr = 16000
    monkeypatch.setattr(segment, "detect_speech", lambda *a, **k: [(0, int(2.5 * sr)), (3 * sr, 5 * sr), (int(5.5 * sr), 8 * sr)])
    clip = _speech_file(tmp_path / "talk.wav")
    expected = st.translate_segments(str(clip))
    assert len(expected.segments) == 3
    with running(create_app(st, language="pt")) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: "tiny-random-model" in d.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "file").send_keys(str(clip))
        browser.find_element(By.ID, "translate").click()
        wait.until(EC.visibility_of_element_located((By.ID, "result")))
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("done"))
        assert browser.find_element(By.ID, "text").text == (expected.text or "(no speech found)")
        rows = browser.find_elements(By.CSS_SELECTOR, "#segments tbody tr")
        cells = [[td.text for td in r.find_elements(By.TAG_NAME, "td")] for r in rows]
        assert [c[:2] for c in cells] == [[_clock(s.start), _clock(s.end)] for s in expected.segments]
        assert [c[2] for c in cells] == [s.text for s in expected.segments]
        for fmt in ("srt", "vtt"):
            link = browser.find_element(By.ID, f"download-{fmt}")
            assert link.get_attribute("href").startswith("blob:") and link.get_attribute("download") == f"talk.{fmt}"
        # the downloads hold the server's own renderings
        vtt = browser.execute_async_script(
            "const done = arguments[0]; fetch(document.getElementById('download-vtt').href).then(r => r.text()).then(done);"
        )
        assert vtt.startswith("WEBVTT")
        shot = tmp_path / "serve_page.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("SLTALIGN_PAGE_SCREENSHOT"):
            Path(os.environ["SLTALIGN_PAGE_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, os.environ["SLTALIGN_PAGE_SCREENSHOT"])

        # a file that is not audio: the page shows the server's message, not a crash
        bad = tmp_path / "notes.wav"
        bad.write_text("not audio at all " * 10)
        browser.find_element(By.ID, "file").send_keys(str(bad))
        browser.find_element(By.ID, "translate").click()
        wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("class") == "error")
        assert "is not audio that can be decoded" in browser.find_element(By.ID, "status").text


def test_recording_from_the_microphone_is_translated(st, browser):
    """MediaRecorder on Chromium's fake microphone: record ~2 s, stop, and the WebM/Opus upload is decoded
    (PyAV) and translated like a file."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with running(create_app(st)) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: "tiny-random-model" in d.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "record").click()
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("recording"))

        def seconds_recorded(d) -> int:  # the page shows "recording N s"
            words = d.find_element(By.ID, "rec-time").text.split()
            return int(words[1]) if len(words) == 3 else 0

        wait.until(lambda d: seconds_recorded(d) >= 2)
        browser.find_element(By.ID, "stop").click()
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith(("done", "error")))
        assert browser.find_element(By.ID, "status").text.startswith("done"), browser.find_element(By.ID, "status").text
        meta = browser.find_element(By.ID, "meta").text
        assert meta.startswith("recording.") and "s of audio" in meta
        seconds = float(meta.split(" \u00b7 ")[1].split(" s of audio")[0])
        assert 1.0 <= seconds <= 6.0
