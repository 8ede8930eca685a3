"""Latency of `sltalign serve` under a burst: N concurrent requests from the official openai client.

    python3 bench/bench_server.py --model runs/demo/connector [--n 20] [--concurrency 20] [--audio clip.wav]
    python3 bench/bench_server.py --url http://127.0.0.1:8000 [--n 20]      (a server already running here)

With --model the server runs in this process on 127.0.0.1 (a free port) and stops at the end; --url must be a
loopback address: the bench never sends audio off the machine. All requests go out at once (up to
--concurrency in flight); the server queues them on its single worker, so latency grows with the queue while
/health stays answered. Printed: successes, errors, wall time, throughput, and latency percentiles
(p50/p90/p95/p99/max, seconds from sending to the full answer). The run is bounded: at most 200 requests and
--timeout seconds in all; requests still waiting then count as errors. Exit status 1 when any request failed.

Default audio: a LibriVox recording from Debian's pocketsphinx-testdata (installed by scripts/setup.sh),
else 3 s of a synthetic tone.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

MAX_REQUESTS = 200
DEFAULT_AUDIO = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def default_audio() -> tuple[str, bytes]:
    """(file name, bytes) of the default clip."""
    if DEFAULT_AUDIO.is_file():
        return DEFAULT_AUDIO.name, DEFAULT_AUDIO.read_bytes()
    import soundfile as sf

    t = np.arange(3 * 16000) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, wav, 16000, format="WAV")
    return "tone.wav", buf.getvalue()


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50/p90/p95/p99/max of a list of seconds (nearest-rank on the sorted values)."""
    if not latencies:
        return {}
    a = np.sort(np.asarray(latencies))
    pick = lambda q: float(a[min(len(a) - 1, max(0, int(np.ceil(q / 100 * len(a))) - 1))])  # noqa: E731
    return {"p50": pick(50), "p90": pick(90), "p95": pick(95), "p99": pick(99), "max": float(a[-1]), "mean": float(a.mean())}


def run_bench(
    url: str,
    audio: tuple[str, bytes],
    *,
    n: int = 20,
    concurrency: int = 20,
    timeout: float = 600.0,
    response_format: str = "json",
) -> dict:
    """Send ``n`` translation requests to the server at ``url`` (loopback only), ``concurrency`` at a time.
    -> {"ok", "errors", "wall_seconds", "throughput", "latency": percentiles, "error_messages": [...]}"""
    from openai import OpenAI

    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"--url: the bench talks to this machine only (127.0.0.1, localhost, ::1), got {host!r}")
    if not 1 <= n <= MAX_REQUESTS or concurrency < 1:
        raise ValueError(f"--n must be 1..{MAX_REQUESTS} and --concurrency >= 1; got {n} and {concurrency}")
    client = OpenAI(base_url=url.rstrip("/") + "/v1", api_key="unused", max_retries=0, timeout=timeout)
    name, data = audio

    def one(_: int) -> float:
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # newer openai clients flag the translations endpoint deprecated; it still works
            warnings.simplefilter("ignore", DeprecationWarning)
            client.audio.translations.create(model="sltalign", file=(name, data), response_format=response_format)
        return time.perf_counter() - t0

    latencies: list[float] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(concurrency, n)) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        done, not_done = wait(futures, timeout=timeout)
        for f in not_done:
            f.cancel()
            errors.append(f"no answer within {timeout:g} s")
        for f in done:
            try:
                latencies.append(f.result())
            except Exception as e:  # the bench reports every failure rather than stopping at the first
                errors.append(f"{type(e).__name__}: {e}")
    wall = time.perf_counter() - t0
    return {
        "ok": len(latencies),
        "errors": len(errors),
        "wall_seconds": wall,
        "throughput": len(latencies) / wall if wall else 0.0,
        "latency": percentiles(latencies),
        "error_messages": errors[:5],
    }


def report(res: dict, n: int, concurrency: int) -> str:
    lat = res["latency"]
    lines = [
        f"{res['ok']}/{n} requests succeeded ({res['errors']} errors), {concurrency} in flight, "
        f"wall {res['wall_seconds']:.2f} s, {res['throughput']:.2f} requests/s"
    ]
    if lat:
        lines.append("latency (s): " + "  ".join(f"{k} {lat[k]:.3f}" for k in ("p50", "p90", "p95", "p99", "max", "mean")))
    lines += [f"error: {m}" for m in res["error_messages"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="connector checkpoint: serve it in this process on 127.0.0.1")
    src.add_argument("--url", help="a running server on this machine, e.g. http://127.0.0.1:8000")
    ap.add_argument("--audio", help="audio file to send (default: a LibriVox clip, else a tone)")
    ap.add_argument("--n", type=int, default=20, help=f"requests (at most {MAX_REQUESTS})")
    ap.add_argument("--concurrency", type=int, default=20, help="requests in flight at once")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole burst")
    ap.add_argument("--response_format", default="json", help="json, text, srt, vtt or verbose_json")
    ap.add_argument("--device", default="cpu", help="with --model: where the model runs")
    args = ap.parse_args(argv)
    audio = (Path(args.audio).name, Path(args.audio).read_bytes()) if args.audio else default_audio()
    try:
        if args.url:
            res = run_bench(
                args.url,
                audio,
                n=args.n,
                concurrency=args.concurrency,
                timeout=args.timeout,
                response_format=args.response_format,
            )
        else:
            from sltalign.api import SpeechTranslator
            from sltalign.serve import create_app, running

            st = SpeechTranslator.from_pretrained(args.model, device=args.device)
            with running(create_app(st, max_queue=max(args.n, 32))) as url:
                res = run_bench(
                    url, audio, n=args.n, concurrency=args.concurrency, timeout=args.timeout, response_format=args.response_format
                )
    except (ValueError, FileNotFoundError) as e:
        print(f"bench_server: error: {e}", file=sys.stderr)
        return 2
    print(f"audio: {audio[0]} ({len(audio[1])} bytes)")
    print(report(res, args.n, args.concurrency))
    return 0 if res["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
