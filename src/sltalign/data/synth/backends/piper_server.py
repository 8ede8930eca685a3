"""The Piper server: loads one Piper voice (a VITS ONNX model + its ``.onnx.json``) and forks per request;
run as a script (``python -I piper_server.py MODEL CONFIG``) by :class:`~.piper.PiperBackend`.

Why fork: a Piper graph draws its noise (the VITS prior and duration noise) from onnxruntime random-normal
kernels whose generator is seeded when the session is made and advances with every run, so a long-lived
session speaks the same request differently the second time. Each forked child runs a copy of the freshly
made session, so a request's audio depends only on the request. The session runs on one thread (a worker
process per core is how synthesis scales; one thread also keeps the fork safe). It imports nothing from
sltalign, so it starts without torch.

Protocol (see :mod:`.base`): int32 sample rate once; per request (a JSON line: text, speed) int32 status
+ int64 byte count + float32 samples. Status 0 ok, 3000 no audio, 4000 the child crashed, 5000 bad request
(the loop itself is :mod:`.fork_loop`, shared with eSpeak NG's server).
"""

import json
import os
import sys


def main(model: str, config: str) -> None:
    import numpy as np
    import onnxruntime as ort
    from piper import PiperVoice
    from piper.config import PiperConfig, SynthesisConfig

    with open(config, encoding="utf-8") as f:
        piper_config = PiperConfig.from_dict(json.load(f))
    ort.set_seed(0)  # the noise kernels are seeded now, once: every child starts from this state
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    voice = PiperVoice(session=ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]), config=piper_config)

    def prepare(req: dict) -> tuple:
        # phonemes in the server: eSpeak NG's phonemizer is deterministic and loads once
        ids = [voice.phonemes_to_ids(p) for p in voice.phonemize(req["text"]) if p]
        return ids, SynthesisConfig(length_scale=piper_config.length_scale / float(req["speed"]))

    def render(_req: dict, prepared: tuple) -> tuple[int, bytes]:
        ids, syn = prepared
        parts = [np.asarray(voice.phoneme_ids_to_audio(i, syn), dtype=np.float32).ravel() for i in ids]
        wav = np.clip(np.concatenate(parts), -1.0, 1.0) if parts else np.zeros(0, np.float32)
        return (0 if len(wav) else 3000), wav.astype("<f4").tobytes()

    serve(int(piper_config.sample_rate), render, prepare)


if __name__ == "__main__":
    # -I leaves the script's directory out; appended, so that its piper.py never shadows the piper package
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    from fork_loop import serve

    main(sys.argv[1], sys.argv[2])
