"""Systems read manifest spans exactly as training does."""

import numpy as np
import soundfile as sf

from sltalign.data.manifest import Utterance
from sltalign.systems import load_utterances


def test_spans_starting_at_zero_are_cut_to_their_duration(tmp_path):
    wav = np.linspace(-0.5, 0.5, 48000, dtype=np.float32)  # 3 s recording
    sf.write(tmp_path / "rec.wav", wav, 16000, subtype="FLOAT")
    utts = [
        Utterance(id="a", audio=str(tmp_path / "rec.wav"), duration=1.0),  # offset 0: first second only
        Utterance(id="b", audio=str(tmp_path / "rec.wav"), offset=1.5, duration=1.0),
    ]
    a, b = load_utterances(utts)
    assert len(a) == 16000 and len(b) == 16000
    np.testing.assert_allclose(a, wav[:16000], atol=1e-6)
    np.testing.assert_allclose(b, wav[24000:40000], atol=1e-6)
