"""`sltalign serve`: an HTTP server compatible with the OpenAI audio API, and a web page, over one model.

    POST /v1/audio/translations   multipart: file (audio), model, response_format json|text|srt|vtt|verbose_json,
                                  optional target_language (or language): must match the model's target language
    GET  /v1/models               the one model served (what the openai client's models.list() reads)
    GET  /health                  status, model, language, queue length
    GET  /                        the page: upload a file or record from the microphone, segments, SRT/VTT downloads

The official ``openai`` client works against it unchanged (``OpenAI(base_url="http://127.0.0.1:8000/v1",
api_key="unused").audio.translations.create(model=..., file=...)``); the ``model`` field is accepted whatever it
says, as clients hard-code names like "whisper-1", and the model answering is named in ``verbose_json``.

The model is loaded once per process (``create_app`` takes a loaded ``SpeechTranslator``; no globals). Requests
are decoded and translated one at a time on a single worker thread, so a burst queues instead of oversubscribing
the CPU, and the event loop keeps answering ``/health`` and the page meanwhile; past ``max_queue`` waiting
requests the server answers 503 at once. Bad uploads (empty, not audio, too large, too long) get a 4xx JSON error
in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, that says what was wrong; anything
unexpected is a 500 of the same shape and the server goes on.

Needs the ``server`` extra: ``pip install 'sltalign[server]'`` (FastAPI, uvicorn, python-multipart).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's parameter types at run time, and the
# types it needs (UploadFile, ...) are imported inside create_app, out of reach of string annotations.
import asyncio
import contextlib
import logging
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .outputs import Translation, format_srt, format_vtt

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

    from .api import SpeechTranslator

log = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
#: OpenAI's own upload limit
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
#: longest audio accepted per request (s): a request holds the single worker for about this long / RTF
MAX_SECONDS = 600.0
#: requests allowed to wait for the worker before new ones get 503
MAX_QUEUE = 32
STATIC_DIR = Path(__file__).with_name("static")


class UploadError(Exception):
    """A request the client can fix: ``status`` (4xx), a message, and the form field it concerns."""

    def __init__(self, status: int, message: str, param: str | None = "file", code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(message: str, *, param: str | None = None, code: str | None = None, kind: str = "invalid_request_error") -> dict:
    """OpenAI's error shape, which its client turns into ``BadRequestError`` etc. with this message."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _require_server_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401  (FastAPI's form parser)
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ImportError(f"sltalign serve needs the server extra: pip install 'sltalign[server]' ({e.name} is missing)") from e


class _Worker:
    """One thread that does all model work, in arrival order; counts what is waiting."""

    def __init__(self, max_queue: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sltalign-worker")
        self.max_queue = max_queue
        self.pending = 0  # submitted and not finished (running + waiting)
        self.lock = threading.Lock()

    async def run(self, fn, *args):
        with self.lock:
            if self.pending > self.max_queue:
                raise UploadError(
                    503,
                    f"server busy: {self.pending - 1} requests are waiting (limit {self.max_queue}); retry later",
                    param=None,
                    code="queue_full",
                )
            self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        finally:
            with self.lock:
                self.pending -= 1

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def create_app(
    translator: "SpeechTranslator",
    *,
    model_name: str | None = None,
    language: str | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_seconds: float = MAX_SECONDS,
    max_queue: int = MAX_QUEUE,
) -> "FastAPI":
    """The FastAPI app serving ``translator`` (already loaded; the app never loads a model itself).

    ``model_name``: how responses name the model (default: the checkpoint directory's name); ``language``: the
    target language code requests are checked against (default: ``translator.language``; None accepts any)."""
    _require_server_extra()
    from fastapi import FastAPI, File, Form, UploadFile

    from . import __version__

    name = model_name or (translator.checkpoint.name if translator.checkpoint else "sltalign")
    lang = language if language is not None else translator.language
    worker = _Worker(max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        worker.close()  # the worker thread ends with the server

    app = FastAPI(
        title="sltalign", version=__version__, description="Speech translation, OpenAI-compatible audio API", lifespan=lifespan
    )
    app.state.translator, app.state.worker = translator, worker

    _install_error_handlers(app, max_upload_bytes)

    def _translate(data: bytes, filename: str) -> Translation:
        return translate_upload(translator, data, filename, max_seconds=max_seconds)

    @app.post("/v1/audio/translations")
    async def translations(
        file: UploadFile = File(..., description="the audio to translate"),
        model: str | None = Form(None, description="accepted whatever it says; the served model answers"),
        response_format: str = Form("json", description="json, text, srt, vtt or verbose_json"),
        target_language: str | None = Form(None, description="must match the served model's target language"),
        language: str | None = Form(None, description="alias of target_language"),
        prompt: str | None = Form(None, description="accepted for compatibility; not used"),
        temperature: float | None = Form(None, description="accepted for compatibility; decoding is beam search"),
        subtitles: bool = Form(False, description="verbose_json: also the SRT and VTT text (the page's downloads)"),
    ):
        fmt = (response_format or "json").strip().lower()
        if fmt not in RESPONSE_FORMATS:
            raise UploadError(
                400,
                f"response_format: expected one of {', '.join(RESPONSE_FORMATS)}, got {response_format!r}",
                param="response_format",
            )
        want = (target_language or language or "").strip().lower()
        if want and lang and want.split("-")[0].split("_")[0] != lang:
            raise UploadError(
                400,
                f"target_language: this server's model translates into {lang!r}, not {want!r}",
                param="target_language",
                code="unsupported_language",
            )
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise UploadError(413, f"file: upload is over the limit of {max_upload_bytes} bytes", code="file_too_large")
        if not data:
            raise UploadError(400, f"file: {file.filename or 'upload'} is empty (0 bytes)", code="empty_file")
        t0 = time.perf_counter()
        try:
            tr = await worker.run(_translate, data, file.filename or "")
        except UploadError:
            raise
        except Exception as e:  # a bug or an exhausted machine: this request fails, the server goes on
            log.exception("translating %s failed", file.filename)
            raise UploadError(
                500,
                f"internal error while translating {file.filename or 'upload'}: {type(e).__name__}: {e}",
                param=None,
                code="internal_error",
            ) from None
        log.info("translated %s (%.1f s of audio) in %.2f s", file.filename, tr.duration, time.perf_counter() - t0)
        return respond(tr, fmt, name, translator, subtitles=subtitles)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "sltalign"}]}

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "model": name,
            "language": lang,
            "queue": worker.pending,
            "version": __version__,
            "max_upload_bytes": max_upload_bytes,
            "max_seconds": max_seconds,
        }

    _add_page_routes(app)
    return app


def _install_error_handlers(app: "FastAPI", max_upload_bytes: int) -> None:
    """Every error as OpenAI's error body (naming the field), and oversized uploads refused from their
    Content-Length before the multipart parser spools them to disk."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(UploadError)
    async def _upload_error(_: Request, e: UploadError) -> JSONResponse:
        kind = "server_error" if e.status >= 500 else "invalid_request_error"
        return JSONResponse(error_body(e.message, param=e.param, code=e.code, kind=kind), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        # FastAPI's 422 lists pydantic details; say it as OpenAI's client expects, naming the field.
        errs = e.errors()
        field = ".".join(str(x) for x in (errs[0].get("loc") or ())[1:]) if errs else None
        msg = f"{field or 'request'}: {errs[0].get('msg', 'invalid')}" if errs else "invalid request"
        if errs and errs[0].get("type") == "missing":
            msg = (
                f"{field}: required field missing (send the audio as multipart form field 'file')"
                if field == "file"
                else f"{field}: required field missing"
            )
        return JSONResponse(error_body(msg, param=field), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(e.detail)), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("request failed")
        return JSONResponse(error_body(f"internal error: {type(e).__name__}: {e}", kind="server_error"), status_code=500)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        # Refuse an oversized upload from its Content-Length, before the multipart parser spools it to disk.
        size = request.headers.get("content-length")
        if request.method == "POST" and size and size.isdigit() and int(size) > max_upload_bytes + 64 * 1024:
            return JSONResponse(
                error_body(
                    f"file: upload of {int(size)} bytes is over the limit of {max_upload_bytes} bytes",
                    param="file",
                    code="file_too_large",
                ),
                status_code=413,
            )
        return await call_next(request)


def translate_upload(translator: "SpeechTranslator", data: bytes, filename: str, *, max_seconds: float) -> Translation:
    """Runs on the worker thread: uploaded bytes -> a checked audio file -> Translation; an UploadError names
    what is wrong with the file (not audio, empty, too long)."""
    from .audio import AudioError, duration_of

    suffix = Path(filename or "").suffix.lower()[:10] or ".bin"
    fd, tmp = tempfile.mkstemp(prefix="sltalign-upload-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            seconds = duration_of(tmp)
        except (AudioError, OSError) as e:
            raise UploadError(
                400,
                f"file: {filename or 'upload'} is not audio that can be decoded (wav, flac, ogg, mp3, "
                f"webm, m4a, ...): {_short(e, tmp, filename)}",
                code="invalid_audio",
            ) from None
        if seconds <= 0:
            raise UploadError(400, f"file: {filename or 'upload'} holds no audio samples", code="empty_audio")
        if seconds > max_seconds:
            raise UploadError(
                400,
                f"file: {filename or 'upload'} is {seconds:.1f} s long; the limit is {max_seconds:g} s",
                code="audio_too_long",
            )
        try:
            return translator.translate_segments(tmp)
        except AudioError as e:
            raise UploadError(
                400, f"file: {filename or 'upload'} cannot be decoded: {_short(e, tmp, filename)}", code="invalid_audio"
            ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def respond(tr: Translation, fmt: str, name: str, translator: "SpeechTranslator", *, subtitles: bool = False) -> Any:
    """A Translation in the requested response format (json, text, srt, vtt, verbose_json)."""
    from fastapi.responses import PlainTextResponse

    if fmt == "text":
        return PlainTextResponse(tr.text + "\n")
    if fmt == "srt":
        return PlainTextResponse(format_srt(tr.segments), media_type="application/x-subrip")
    if fmt == "vtt":
        return PlainTextResponse(format_vtt(tr.segments), media_type="text/vtt")
    if fmt == "json":
        return {"text": tr.text}
    return verbose_json(tr, name, translator.describe(), subtitles=subtitles)


def _add_page_routes(app: "FastAPI") -> None:
    """The web page and its static files."""
    from fastapi.responses import FileResponse

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        path = STATIC_DIR / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise UploadError(404, f"no such file: {name}", param=None)
        return FileResponse(path)


def _short(e: Exception, tmp: str, filename: str) -> str:
    """An audio error's message with the temporary file's path replaced by the upload's name, on one line."""
    return " ".join(str(e).replace(tmp, filename or "upload").split())[:300]


def verbose_json(tr: Translation, model_name: str, described: dict, *, subtitles: bool = False) -> dict[str, Any]:
    """OpenAI's verbose_json for a translation (task, language, duration, text, segments), plus the model and
    decoding used; segments carry OpenAI's keys where the value is known (no fake log-probabilities)."""
    segments = []
    for i, s in enumerate(tr.segments):
        seg = {
            "id": i,
            "seek": int(round(s.start * 100)),
            "start": round(s.start, 3),
            "end": round(s.end, 3),
            "text": s.text,
            "tokens": [],
            "temperature": 0.0,
        }
        if s.source is not None:
            seg["source"] = s.source
        segments.append(seg)
    out: dict[str, Any] = {
        "task": "translate",
        "language": tr.language,
        "duration": round(tr.duration, 3),
        "text": tr.text,
        "segments": segments,
        "model": model_name,
        **described,
    }
    if subtitles:
        out["srt"], out["vtt"] = format_srt(tr.segments), format_vtt(tr.segments)
    return out


@contextlib.contextmanager
def running(app: "FastAPI", *, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0):
    """Run ``app`` under uvicorn on a background thread for the ``with`` block; yields its base URL.

    ``port=0`` picks a free port. For tests and benchmarks: the server stops (and its thread ends) on exit."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="sltalign-uvicorn", daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        if not thread.is_alive() or time.monotonic() - t0 > timeout:
            server.should_exit = True
            raise RuntimeError(f"the server did not start on {host}:{port} within {timeout:g} s")
        time.sleep(0.05)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout)


def serve(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str | None = None,
    language: str | None = None,
    max_upload_mb: float = MAX_UPLOAD_BYTES / 2**20,
    max_seconds: float = MAX_SECONDS,
    max_queue: int = MAX_QUEUE,
    log_level: str = "info",
    **decoding: Any,
) -> None:
    """Load the checkpoint once and serve it until interrupted (``sltalign serve``)."""
    _require_server_extra()
    import uvicorn

    from .api import SpeechTranslator

    st = SpeechTranslator.from_pretrained(model, device=device, **decoding)
    if st.model.ctc_head is not None:
        st.model.ctc_head.warm_up()  # the phone head's lexicon search: built now, not in the first request
    app = create_app(
        st, language=language, max_upload_bytes=int(max_upload_mb * 2**20), max_seconds=max_seconds, max_queue=max_queue
    )
    print(f"sltalign: serving {model} on http://{host}:{port}/ (API: http://{host}:{port}/v1/audio/translations)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
