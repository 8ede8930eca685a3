"""The eSpeak NG server: a stdlib-only Python program holding libespeak-ng, run as a script
(``python -I -S espeak_server.py LIBRARY DATA_DIR``) by :class:`~.espeak.EspeakLibrary`.

It forks once per request, so every request is synthesised from the library's freshly initialised state
(libespeak-ng keeps state between utterances: a pitch-flutter phase that is never reset, so two identical
requests in one process differ). Kept free of numpy / torch (and of this package: it runs with ``-S``, no
site-packages), the server is small and forks in ~1-2 ms.

Protocol (see :mod:`.base`): the server writes its int32 sample rate once; per request (one JSON line on
stdin: text, voice, rate, pitch, seed) it answers int32 status + int64 byte count + int16 samples. Status:
0 ok, 1000 + code: unknown voice, 2000 + code: espeak_Synth failed, 3000: no audio, 4000: the forked child
crashed (the loop itself is :mod:`.fork_loop`, shared with Piper's server).
"""

import ctypes
import os
import sys


def main(lib_path: str, data_path: str) -> None:
    lib = ctypes.CDLL(lib_path)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    seed_fn = getattr(lib, "espeak_ng_SetRandSeed", None)  # 1.52+; older builds start from the same seed anyway
    if seed_fn is not None:
        seed_fn.argtypes = [ctypes.c_long]
    rate = lib.espeak_Initialize(2, 0, data_path.encode(), 0)  # 2: synchronous, samples via the callback
    chunks: list[bytes] = []
    cb_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def collect(wav, n, events):  # noqa: ARG001 - the callback's signature
        if n > 0:
            chunks.append(ctypes.string_at(wav, 2 * n))
        return 0

    callback = cb_type(collect)  # kept referenced for the library's lifetime
    lib.espeak_SetSynthCallback(callback)

    def synth(req: dict, _prepared: None) -> tuple[int, bytes]:
        chunks.clear()
        status = lib.espeak_SetVoiceByName(req["voice"].encode())
        if status != 0:
            return 1000 + status, b""
        lib.espeak_SetParameter(1, int(req["rate"]), 0)  # espeakRATE, words per minute
        lib.espeak_SetParameter(3, int(req["pitch"]), 0)  # espeakPITCH, 0-99
        if seed_fn is not None:
            seed_fn(int(req["seed"]))
        text = req["text"].encode("utf-8")
        status = lib.espeak_Synth(text, len(text) + 1, 0, 1, 0, 1, None, None)  # POS_CHARACTER, espeakCHARS_UTF8
        lib.espeak_Synchronize()
        data = b"".join(chunks)
        return (2000 + status if status else (0 if data else 3000)), data

    serve(rate, synth)


if __name__ == "__main__":
    # -I leaves the script's directory out; appended, so that its piper.py never shadows the piper package
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    from fork_loop import serve

    main(sys.argv[1], sys.argv[2])
