"""`sltalign serve` on a tiny random model, spoken to by the official openai client over 127.0.0.1: every
response_format, the target-language check, a 4xx JSON error for every kind of bad upload, a 500 that the
server survives, a burst of 20 concurrent requests (bench/bench_server.py), and the command itself."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
requests = pytest.importorskip("requests")

from sltalign import SpeechTranslator  # noqa: E402
from sltalign.checkpoint import save_connector  # noqa: E402
from sltalign.connectors import TiedCTCHead, build_connector  # noqa: E402
from sltalign.foundation import load_speech_encoder, load_translator  # noqa: E402
from sltalign.model import AlignedST  # noqa: E402
from sltalign.serve import create_app, running  # noqa: E402
from tests.conftest import speechlike  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def wav_bytes(seconds: float, seed: int = 0, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, speechlike(seconds, seed=seed), 16000, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def ckpt(tiny_whisper_dir, sharp_marian_dir, tmp_path_factory) -> Path:
    speech = load_speech_encoder(str(tiny_whisper_dir), mode="trim")
    mt = load_translator(str(sharp_marian_dir))
    torch.manual_seed(0)
    conn = build_connector("mlp", in_dim=speech.dim, out_dim=mt.embed_dim, stack=4, hidden=32)
    model = AlignedST(
        speech_encoder=speech, connector=conn, translator=mt, arrangement="ecd", ctc_head=TiedCTCHead(embed_dim=mt.embed_dim)
    )
    return save_connector(
        model, tmp_path_factory.mktemp("serve") / "ckpt", decoding={"beam": 1, "max_len": 5, "length_penalty": 1.0}
    )


@pytest.fixture(scope="module")
def st(ckpt) -> SpeechTranslator:
    return SpeechTranslator.from_pretrained(ckpt)


@pytest.fixture(scope="module")
def server(st):
    """The app on 127.0.0.1 with small limits so that too-large and too-long uploads are cheap to send."""
    with running(create_app(st, language="pt", max_upload_bytes=200_000, max_seconds=5.0)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_every_response_format_through_the_openai_client(client, st):
    import srt
    import webvtt

    audio = ("clip.wav", wav_bytes(1.5, seed=1))
    expected = st.translate_segments(speechlike(1.5, seed=1))
    got = client.audio.translations.create(model="whisper-1", file=audio)  # json, the default
    assert got.text == expected.text
    assert client.audio.translations.create(model="sltalign", file=audio, response_format="text").strip() == expected.text
    subs = list(srt.parse(client.audio.translations.create(model="sltalign", file=audio, response_format="srt")))
    assert [(s.content, s.start.total_seconds(), s.end.total_seconds()) for s in subs] == [
        (" ".join(s.text.split()), s.start, s.end) for s in expected.segments if s.text.strip()
    ]
    vtt = webvtt.from_string(client.audio.translations.create(model="sltalign", file=audio, response_format="vtt"))
    assert [c.text for c in vtt.captions] == [" ".join(s.text.split()) for s in expected.segments if s.text.strip()]
    verbose = client.audio.translations.create(model="sltalign", file=audio, response_format="verbose_json")
    assert verbose.text == expected.text and verbose.duration == pytest.approx(1.5) and verbose.language == st.language
    seg = verbose.segments[0]
    assert (seg.start, seg.end, seg.text) == (0.0, 1.5, expected.segments[0].text)
    extra = verbose.model_dump()
    assert (
        extra["task"] == "translate"
        and extra["decoding"]["beam"] == 1
        and extra["segments"][0]["source"] == expected.segments[0].source
    )


def test_target_language_must_match_the_model(client):
    audio = ("clip.wav", wav_bytes(1.0))
    assert client.audio.translations.create(model="x", file=audio, extra_body={"target_language": "pt"}).text is not None
    assert client.audio.translations.create(model="x", file=audio, extra_body={"language": "pt-BR"}).text is not None
    with pytest.raises(openai.BadRequestError, match="translates into 'pt', not 'de'"):
        client.audio.translations.create(model="x", file=audio, extra_body={"target_language": "de"})


@pytest.mark.parametrize(
    "name, data, fmt, status, message",
    [
        ("empty.wav", b"", "json", 400, "is empty (0 bytes)"),
        ("notes.wav", b"these are not audio samples, just text " * 20, "json", 400, "is not audio that can be decoded"),
        ("header_only.wav", None, "json", 400, "holds no audio samples"),
        ("long.wav", "long", "json", 400, "s long; the limit is 5 s"),
        ("large.wav", "large", "json", 413, "over the limit of 200000 bytes"),
        ("clip.wav", "ok", "docx", 400, "response_format: expected one of json, text, srt, vtt, verbose_json"),
    ],
)
def test_bad_uploads_get_a_4xx_json_error(client, server, name, data, fmt, status, message):
    if data is None:
        buf = io.BytesIO()
        sf.write(buf, np.zeros(0, np.float32), 16000, format="WAV")
        data = buf.getvalue()
    elif data == "long":
        data = wav_bytes(6.0)
    elif data == "large":
        data = os.urandom(300_000)
    elif data == "ok":
        data = wav_bytes(0.5)
    with pytest.raises(openai.APIStatusError) as err:
        client.audio.translations.create(model="sltalign", file=(name, data), response_format=fmt)
    assert err.value.status_code == status and message in str(err.value)
    assert err.value.body["message"] and err.value.body["type"] == "invalid_request_error"
    assert requests.get(server + "/health", timeout=30).json()["status"] == "ok"  # and the server is still there


def test_missing_file_field_and_raw_posts(server):
    r = requests.post(server + "/v1/audio/translations", data={"model": "x"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "file" and "required" in r.json()["error"]["message"]
    r = requests.post(
        server + "/v1/audio/translations", data=b"not multipart", headers={"content-type": "text/plain"}, timeout=30
    )
    assert r.status_code == 400 and "error" in r.json()
    assert requests.get(server + "/nope", timeout=30).json()["error"]["message"]


def test_an_internal_error_is_a_500_and_the_server_goes_on(client, st, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(st, "translate_segments", broken)
    with pytest.raises(openai.InternalServerError, match="simulated failure"):
        client.audio.translations.create(model="x", file=("clip.wav", wav_bytes(0.5)))
    monkeypatch.undo()
    assert client.audio.translations.create(model="x", file=("clip.wav", wav_bytes(0.5))).text is not None


def test_health_models_and_page(server, client):
    h = requests.get(server + "/health", timeout=30).json()
    assert h["status"] == "ok" and h["model"] == "ckpt" and h["language"] == "pt" and h["queue"] == 0
    assert [m.id for m in client.models.list()] == ["ckpt"]
    page = requests.get(server + "/", timeout=30)
    assert page.status_code == 200 and "Record from microphone" in page.text and "/static/app.js" in page.text
    js = requests.get(server + "/static/app.js", timeout=30)
    assert js.status_code == 200 and "MediaRecorder" in js.text
    assert requests.get(server + "/static/..%2Fserve.py", timeout=30).status_code == 404


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_server", ROOT / "bench" / "bench_server.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_twenty_concurrent_requests_all_succeed(st, capsys):
    bench = _load_bench()
    with running(create_app(st, max_queue=32)) as url:
        res = bench.run_bench(url, ("clip.wav", wav_bytes(1.0)), n=20, concurrency=20, timeout=300)
        assert requests.get(url + "/health", timeout=10).json()["queue"] == 0
    assert res["ok"] == 20 and res["errors"] == 0, res["error_messages"]
    lat = res["latency"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    print(bench.report(res, 20, 20))
    assert "latency (s): p50" in capsys.readouterr().out
    with pytest.raises(ValueError, match="this machine only"):
        bench.run_bench("http://192.0.2.1:8000", ("a.wav", b""), n=1)


def test_a_full_queue_is_a_503(st, monkeypatch):
    """With the worker busy and max_queue requests already waiting, the next request is refused at once."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    release, started = threading.Event(), threading.Event()
    real = st.translate_segments

    def slow(*a, **k):
        started.set()
        release.wait(60)
        return real(*a, **k)

    monkeypatch.setattr(st, "translate_segments", slow)
    with running(create_app(st, max_queue=1)) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        send = lambda: c.audio.translations.create(model="x", file=("clip.wav", wav_bytes(0.5))).text  # noqa: E731
        with ThreadPoolExecutor(2) as pool:
            running_one = pool.submit(send)
            assert started.wait(60)
            waiting_one = pool.submit(send)
            deadline = time.monotonic() + 30
            while requests.get(url + "/health", timeout=10).json()["queue"] < 2:  # /health answers while the worker is busy
                assert time.monotonic() < deadline
                time.sleep(0.05)
            with pytest.raises(openai.APIStatusError) as err:
                send()
            assert err.value.status_code == 503 and "server busy" in str(err.value)
            release.set()
            assert running_one.result(60) is not None and waiting_one.result(60) is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_serve_command(ckpt, tmp_path):
    """`sltalign serve` loads the model once and answers on 127.0.0.1; it stops on SIGTERM."""
    port = _free_port()
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sltalign", "serve", "--model", str(ckpt), "--port", str(port), "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                h = requests.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, "the server did not come up in 120 s"
                time.sleep(0.5)
        assert h["model"] == "ckpt"
        r = requests.post(
            f"http://127.0.0.1:{port}/v1/audio/translations",
            files={"file": ("c.wav", wav_bytes(0.8))},
            data={"response_format": "verbose_json"},
            timeout=60,
        )
        assert r.status_code == 200 and json.loads(r.text)["segments"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_command_errors_are_one_line(ckpt, capsys):
    from sltalign.cli import main

    assert main(["serve", "--model", str(ckpt), "--port", "70000"]) == 2
    assert "--port: expected 1-65535" in capsys.readouterr().err
    assert main(["serve", "--model", "/nonexistent/ckpt"]) == 2
    assert "not a directory" in capsys.readouterr().err
