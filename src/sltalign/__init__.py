"""sltalign: end-to-end speech translation by aligning a frozen speech encoder and a frozen MT model.

Public API:
    SpeechTranslator.from_pretrained(dir).translate(paths_or_arrays)
    load_speech_encoder(spec, mode="trim"), load_translator(spec)
    AlignedST, build_connector
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Everything loads on first use: `import sltalign` (e.g. in spawned TTS workers) must not import torch.
    if name in ("load_speech_encoder", "load_translator"):
        from . import foundation

        return getattr(foundation, name)
    if name == "SpeechTranslator":
        from .api import SpeechTranslator

        return SpeechTranslator
    if name == "AlignedST":
        from .model import AlignedST

        return AlignedST
    if name == "build_connector":
        from .connectors import build_connector

        return build_connector
    raise AttributeError(name)


__all__ = ["SpeechTranslator", "AlignedST", "build_connector", "load_speech_encoder", "load_translator", "__version__"]
