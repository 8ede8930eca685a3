"""Data: manifests (the JSONL schema every stage reads), corpus readers, the TTS corpus builder, the
real-speech test set, the encoder-output cache and length-bucketed batching.

Submodules are imported where used (``from sltalign.data.synth import synthesize_corpus``) so that reading
a manifest never pulls in TTS or torch.
"""

from .manifest import ManifestError, Utterance, read_manifest, write_manifest

__all__ = ["Utterance", "ManifestError", "read_manifest", "write_manifest"]
