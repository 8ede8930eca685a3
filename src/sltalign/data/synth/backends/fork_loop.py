"""The request loop of the forking TTS servers (eSpeak NG's and Piper's): one copy, stdlib only.

Both servers run as scripts in isolated interpreters (``python -I``; eSpeak NG's also without site-packages)
so that they start in milliseconds without this package, numpy or torch; they import this file from their own
directory. Protocol (see :mod:`.base`): the server writes its int32 sample rate once; per request (one JSON
line on stdin) it answers int32 status + int64 byte count + the samples. Status 0 is success; 4000 means the
forked child died; 5000 a request that could not be read or prepared; the servers add their own codes.
"""

import json
import os
import struct
import sys


def send(status: int, data: bytes = b"") -> None:
    out = sys.stdout.buffer
    out.write(struct.pack("<iq", status, len(data)) + data)
    out.flush()


def serve(sample_rate: int, render, prepare=None) -> None:
    """Answer requests until stdin closes. ``prepare(request)`` runs in the server (what is deterministic and
    costly to redo, e.g. phonemisation) and returns what ``render(request, prepared)`` needs; ``render`` runs
    in a child forked per request, from the synthesiser's freshly loaded state, and returns (status, bytes).
    Without ``os.fork`` (not POSIX) ``render`` runs in the server itself."""
    out = sys.stdout.buffer
    out.write(struct.pack("<i", sample_rate))
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            prepared = prepare(req) if prepare is not None else None
        except Exception:  # noqa: BLE001 - answered, not fatal
            send(5000)
            continue
        if not hasattr(os, "fork"):
            send(*render(req, prepared))
            continue
        pid = os.fork()
        if pid == 0:
            try:
                send(*render(req, prepared))
            finally:
                os._exit(0)
        _, wait_status = os.waitpid(pid, 0)
        if wait_status != 0:
            send(4000)
