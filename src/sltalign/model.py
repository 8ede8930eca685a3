"""AlignedST: frozen speech encoder -> trainable connector -> frozen translation model.

Shapes follow the legend in ``sltalign.foundation.base`` (B, T_s, S, L, V, D_s, D_m).

Two arrangements (arXiv 2411.18294):
- ``ecd``:  connector output is the MT decoder's cross-attention memory; the MT encoder is bypassed.
- ``eced``: connector output enters the MT encoder in place of token embeddings, optionally after an
  embedded text prompt, and the MT encoder's output is the decoder's memory.

Beyond the paper (the "fast alignment" recipes): an optional CTC head tied to the MT's frozen
source-embedding matrix, and CTC compression (hard / soft / posterior) of the connector output before it
reaches the MT; or a CTC head over a few hundred word pieces (``connectors.pieces``) or ~100 phones read
through a pronunciation lexicon (``connectors.phones``), whose greedy transcript is tokenized with the MT's
source tokenizer and handed over as the MT's own embedding rows (hard compression through text). AlignedST alone knows ECD from ECED; the connector knows nothing of either foundation.

The soft cascade: with the frozen Whisper decoder as the speech source (``foundation/whisper_decoder.py``,
mode "decoder"), states carry the recogniser's 1-best tokens in two extra channels. ``hypothesis`` reads
that text back; the connector sees the decoder states only, and a connector with ``fuse`` (the
"hypothesis" connector) corrects the MT's own embeddings of the 1-best text with them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .connectors import Connector
from .connectors.compress import compress
from .connectors.ctc_head import CTCHead
from .foundation.base import SpeechEncoder, Translator, pad_id_rows
from .foundation.whisper_decoder import TOKEN_CHANNELS, WhisperText

ARRANGEMENTS = ("ecd", "eced")
#: padding value of target and source token batches (PyTorch's ignore index)
IGNORE = -100
COMPRESSION_MODES = (None, "hard", "soft", "posterior")
#: an ensemble member's phone head must share at least this share of the first head's units (``add_members``)
MIN_SHARED_UNITS = 0.9
#: how an ensemble combines its members (``add_members``): "mean_probability" averages the frame posteriors
#: (members of one training run, whose CTC spikes fall on the same frames); "medoid" reads each member's
#: posteriors and keeps, per utterance, the transcript nearest the others by word edit distance (any members);
#: "vote" reads each member too and takes a word-by-word majority (ROVER)
MEMBER_COMBINE = ("mean_probability", "medoid", "vote")


@dataclass
class BridgeOutput:
    """What the connector side hands to the MT decoder, plus what the objectives need."""

    memory: torch.Tensor  # (B, S', D_m) decoder cross-attention memory
    memory_mask: torch.Tensor  # (B, S')
    connector_out: torch.Tensor  # (B, S, D_m) raw connector output
    connector_mask: torch.Tensor  # (B, S)
    ctc_logits: torch.Tensor | None  # (B, S, V+1), blank last; None without a CTC head
    #: an ensemble that combines transcripts (``member_combine`` "medoid" or "vote"): the other members' CTC log-probs,
    #: each (B, S, V+1) over this head's classes; None otherwise
    ctc_alternatives: list[torch.Tensor] | None = None
    #: the transcript the MT translates where the bridge goes through text (a text head with compression: one
    #: string per utterance, what ``ctc_transcribe`` reads); None otherwise. Kept so that a caller who wants
    #: both the translation and what was heard does not search the CTC posteriors a second time.
    texts: list[str] | None = None


class AlignedST(nn.Module):
    """The aligned speech translator. Only ``connector`` (and ``ctc_head``) train.

    Freezing is decided here, once: the foundations' parameters never require grad and they stay in eval
    mode whatever ``train()`` is called with (they are FrozenModules), so dropout runs only in the connector.
    """

    def __init__(
        self,
        *,
        speech_encoder: SpeechEncoder | None,
        connector: Connector,
        translator: Translator,
        arrangement: str = "eced",
        prompt: str | None = None,
        ctc_head: CTCHead | None = None,
        compression: str | None = None,
        compression_temperature: float = 1.0,
        hypothesis: WhisperText | None = None,
    ) -> None:
        super().__init__()
        arrangement = arrangement.lower()
        if arrangement not in ARRANGEMENTS:
            raise ValueError(f"arrangement must be one of {ARRANGEMENTS}, got {arrangement!r}")
        if compression not in COMPRESSION_MODES:
            raise ValueError(f"compression must be one of {COMPRESSION_MODES}, got {compression!r}")
        if compression is not None and ctc_head is None:
            raise ValueError("CTC compression needs a CTC head (set model.ctc_head in the config)")
        if ctc_head is not None and ctc_head.TEXT and compression not in (None, "hard"):
            raise ValueError(
                f"a CTC head over pieces or phones supports compression 'hard' or none, got {compression!r}: its "
                "vectors are not in the MT's embedding space, so soft/posterior averaging has nothing meaningful to give the MT"
            )
        if hypothesis is None and getattr(speech_encoder, "mode", None) == "decoder":
            hypothesis = speech_encoder.text_reader()
        if hasattr(connector, "fuse"):
            if hypothesis is None:
                raise ValueError(
                    f"the {connector.name!r} connector corrects the recogniser's 1-best text: it needs the Whisper decoder "
                    "as the speech source (model.encoder_mode: decoder)"
                )
            if arrangement != "eced" or compression is not None:
                raise ValueError(
                    f"the {connector.name!r} connector feeds the MT encoder: use arrangement 'eced' and no compression"
                )
        if prompt and arrangement != "eced":
            raise ValueError("a text prompt only applies to the ECED arrangement (it is embedded and fed to the MT encoder)")
        if speech_encoder is not None and getattr(connector, "in_dim", speech_encoder.dim) != speech_encoder.dim:
            raise ValueError(f"connector in_dim {connector.in_dim} != speech encoder dim {speech_encoder.dim}")
        if getattr(connector, "out_dim", translator.embed_dim) != translator.embed_dim:
            raise ValueError(f"connector out_dim {connector.out_dim} != translator embed_dim {translator.embed_dim}")
        # The speech encoder is optional so that training on cached states never loads it.
        self.speech_encoder = speech_encoder
        self.connector = connector
        self.translator = translator
        self.ctc_head = ctc_head
        self.arrangement = arrangement
        self.prompt = prompt or None
        self.compression = compression
        self.compression_temperature = compression_temperature
        self.hypothesis = hypothesis
        # more connectors of the same recipe whose hearing is combined with this one's (an ensemble,
        # ``add_members``); inference only: they never train and stay in eval mode
        self.members = nn.ModuleList()
        self.member_combine = "mean_probability"
        for frozen in (speech_encoder, translator):
            if frozen is not None:
                frozen.freeze()
        # The prompt is embedded once with the MT's own frozen table: a buffer, not a parameter. It is embedded
        # even when empty: multilingual MTs (mBART, NLLB, M2M100) prepend their source-language token there.
        prompt_emb = (
            translator.embed_prompt(self.prompt or "").detach() if arrangement == "eced" else torch.zeros(0, translator.embed_dim)
        )
        self.register_buffer("prompt_embeddings", prompt_emb, persistent=False)  # (L_p, D_m)

    # ------------------------------------------------------------------------------------------
    def add_members(self, members: Sequence[tuple[Connector, CTCHead]], *, combine: str = "mean_probability") -> None:
        """Make this model an ensemble: what ``members`` (connector, CTC head) pairs hear is combined with what it
        hears before the MT reads it, as ``combine`` says (``MEMBER_COMBINE``).

        Every member must have this model's connector sizes (so its frames line up) and a phone head; its units
        are matched to this head's by name. Heads of one recipe trained with other seeds differ in a few rare
        units (the lexicon text's accents are drawn by the seed): a unit a member lacks has probability 0 in
        that member, and a member's units this head lacks are left out before the average is renormalised;
        members sharing under ``MIN_SHARED_UNITS`` of the units are refused. The read-out (lexicon, word LM,
        search) is this model's head's. ``combine``: one of ``MEMBER_COMBINE``; frame averaging needs members
        whose CTC spikes fall on the same frames (snapshots of one run): connectors trained with other seeds
        place them on neighbouring frames, and their average is mostly blank (docs/RESULTS.md, "Ensembles of
        connectors"). Members are for inference: they get no gradient, stay in eval mode,
        and checkpoints of this model keep only its own weights (``sltalign.ensemble`` writes and reads
        ensemble directories)."""
        if combine not in MEMBER_COMBINE:
            raise ValueError(f"combine must be one of {MEMBER_COMBINE}, got {combine!r}")
        self.member_combine = combine
        head = self.ctc_head
        if head is None or head.KIND != "phones" or self.compression != "hard" or self.hypothesis is not None:
            raise ValueError(
                "an ensemble averages phone posteriors before the lexicon read-out: it needs a phone CTC head with "
                "compression 'hard' on the Whisper encoder's states"
            )
        for i, (conn, member_head) in enumerate(members, start=1):
            if conn.config() != self.connector.config():
                raise ValueError(f"ensemble member {i}: its connector {conn.config()} differs from {self.connector.config()}")
            if getattr(member_head, "KIND", None) != "phones":
                raise ValueError(f"ensemble member {i}: its CTC head is not over phones")
            ids = {u: k for k, u in enumerate(member_head.units)}
            shared = sum(u in ids for u in head.units)
            if shared < MIN_SHARED_UNITS * len(head.units):
                raise ValueError(
                    f"ensemble member {i}: its phone head shares {shared} of the first head's {len(head.units)} units "
                    f"(at least {MIN_SHARED_UNITS:.0%} expected: a head of the same recipe)"
                )
            # the member's class of each of this head's classes (blank last); -1 where the member has none
            index = torch.tensor([ids.get(u, -1) for u in head.units] + [member_head.vocab_size])
            conn.requires_grad_(False)
            member_head.requires_grad_(False)
            member = nn.ModuleDict({"connector": conn.eval(), "ctc_head": member_head.eval()})
            member.register_buffer("class_index", index, persistent=False)
            self.members.append(member)

    def train(self, mode: bool = True) -> AlignedST:
        """As nn.Module.train, except that ensemble members stay in eval mode (they never train)."""
        super().train(mode)
        self.members.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_report(self) -> dict[str, int | float]:
        """Trainable vs frozen parameter counts and the connector's share of the aligned models."""
        count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
        connector = count(self.connector) + count(self.ctc_head)
        speech = count(self.speech_encoder)
        mt = count(self.translator)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        total = connector + speech + mt
        return {
            "connector": connector,
            "speech_encoder": speech,
            "translator": mt,
            "trainable": sum(p.numel() for p in self.trainable_parameters()),
            "frozen": frozen,
            "connector_share": connector / total if total else float("nan"),
        }

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_audio(self, waveforms: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen speech encoder: list of 16 kHz waveforms -> states (B, T_s, D_s), mask (B, T_s)."""
        if self.speech_encoder is None:
            raise RuntimeError("this AlignedST was built without a speech encoder (training on cached states)")
        return self.speech_encoder.encode(waveforms)

    def bridge(self, states: torch.Tensor, mask: torch.Tensor) -> BridgeOutput:
        """states (B, T_s, D_s), mask (B, T_s) -> decoder memory (B, S', D_m) and its mask."""
        if states.dim() != 3 or mask.shape != states.shape[:2]:
            raise ValueError(
                f"expected states (B, T_s, D_s) and mask (B, T_s), got {tuple(states.shape)} and {tuple(mask.shape)}"
            )
        hyp_texts = self.hypothesis.texts(states, mask) if hasattr(self.connector, "fuse") else None
        out, out_mask, ctc_logits, alternatives = self._connect(self._speech_states(states), mask)
        x, x_mask, texts = out, out_mask, None
        if hyp_texts is not None:
            q, x_mask = self._text_embeddings(hyp_texts, out_mask.device)  # the cascade's MT input (B, L, D_m)
            x = self.connector.fuse(q.to(out.dtype), x_mask, out, out_mask)
        elif self.compression is not None and self.ctc_head.TEXT:
            # Hard compression through text: the transcript read off the head -> MT source tokens -> their
            # embedding rows, exactly what the MT's own text path embeds (same tokenizer, same EOS), so ECED's MT
            # encoder reads input from its training distribution. No gradient passes a search over text.
            with torch.no_grad():
                texts = self._read_ctc(ctc_logits, out_mask, alternatives)
                x, x_mask = self._text_embeddings(texts, out_mask.device)  # (B, S', D_m)
            x = x.to(ctc_logits.dtype)
        elif self.compression is not None:
            x, x_mask = compress(
                out,
                out_mask,
                ctc_logits,
                mode=self.compression,
                embedding_matrix=self.translator.source_embedding_matrix(),
                temperature=self.compression_temperature,
            )  # (B, S', D_m)
        if self.arrangement == "eced":
            if self.prompt_embeddings.numel():
                p = self.prompt_embeddings.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, L_p, D_m)
                x = torch.cat([p, x], dim=1)
                x_mask = torch.cat([torch.ones(p.shape[:2], dtype=torch.bool, device=x_mask.device), x_mask], dim=1)
            memory = self.translator.encode_embeddings(x, x_mask)
        else:
            memory = x
        return BridgeOutput(memory, x_mask, out, out_mask, ctc_logits, alternatives, texts)

    def forward(self, states: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, BridgeOutput]:
        """Teacher-forced: -> logits (B, L, V) over target tokens, and the bridge output."""
        bridged = self.bridge(states, mask)
        # Batches pad targets with -100 (the ignore index) because some MT models (Marian-native) use one id
        # for both EOS and padding; the decoder itself gets the translator's own pad id there.
        dec_targets = targets.masked_fill(targets == IGNORE, self.translator.pad_id)
        logits = self.translator.decoder_logits(bridged.memory, bridged.memory_mask, dec_targets)
        return logits, bridged

    def loss(
        self, states: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        """The paper's objective: token cross-entropy of the frozen MT decoder on the target translation."""
        logits, _ = self(states, mask, targets)
        return target_cross_entropy(logits, targets, label_smoothing=label_smoothing)

    @torch.no_grad()
    def generate(
        self, states: torch.Tensor, mask: torch.Tensor, *, beam: int = 4, max_len: int = 150, length_penalty: float = 1.0
    ) -> list[list[int]]:
        """Batched beam search (beam 1: greedy) -> target token ids per utterance."""
        return self._search(self.bridge(states, mask), beam=beam, max_len=max_len, length_penalty=length_penalty)

    def _search(self, bridged: BridgeOutput, **kw) -> list[list[int]]:
        """The frozen MT decoder's beam search over a bridge output (shared by generate and dev evaluation)."""
        return self.translator.generate(bridged.memory, bridged.memory_mask, **kw)

    @torch.no_grad()
    def translate_states(self, states: torch.Tensor, mask: torch.Tensor, **kw) -> list[str]:
        return self.translator.detokenize(self.generate(states, mask, **kw))

    @torch.no_grad()
    def ctc_transcribe(self, states: torch.Tensor, mask: torch.Tensor) -> list[str]:
        """Greedy CTC transcript of each utterance over the MT's full source vocabulary: what the connector
        "hears", read off the CTC head. With the tied head it is a diagnostic (translation never goes through
        this text); with a word-pieces head and compression it is exactly the text the MT translates.
        states (B, T_s, D_s), mask (B, T_s) -> B strings ("" where the head emits only blanks)."""
        if self.ctc_head is None:
            raise ValueError("ctc_transcribe needs a CTC head: build the model with a ctc_head")
        _, out_mask, ctc_logits, alternatives = self._connect(self._speech_states(states), mask)  # no MT needed here
        return self._read_ctc(ctc_logits, out_mask, alternatives)

    @torch.no_grad()
    def translate_and_transcribe(
        self, states: torch.Tensor, mask: torch.Tensor, *, beam: int = 4, max_len: int = 150, length_penalty: float = 1.0
    ) -> tuple[list[str], list[str]]:
        """``translate_states`` and ``ctc_transcribe`` from one connector pass (what dev evaluation and
        ``translate_segments(sources=True)`` need). Where the MT translates a transcript (a text head with
        compression) that transcript is the one returned: the posteriors are searched once, not twice."""
        if self.ctc_head is None:
            raise ValueError("translate_and_transcribe needs a CTC head: build the model with a ctc_head")
        bridged = self.bridge(states, mask)
        ids = self._search(bridged, beam=beam, max_len=max_len, length_penalty=length_penalty)
        heard = bridged.texts
        if heard is None:
            heard = self._read_ctc(bridged.ctc_logits, bridged.connector_mask, bridged.ctc_alternatives)
        return self.translator.detokenize(ids), heard

    def _connect(
        self, states: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[torch.Tensor] | None]:
        """Connector (and CTC head): states (B, T_s, D_s), mask (B, T_s) -> out (B, S, D_m), out_mask (B, S),
        CTC logits (B, S, V+1) or None, and the other ensemble members' log-probs where they are read one by one.
        With members combined by "mean_probability" the logits are the log of the members' and this model's
        mean CTC probabilities (normalised log-probabilities: every read-out takes them as logits)."""
        out, out_mask = self.connector(states, mask)  # (B, S, D_m), (B, S)
        if self.ctc_head is None:
            return out, out_mask, None, None
        emb = self.translator.source_embedding_matrix()
        logits = self.ctc_head(out, emb)  # (B, S, V+1)
        if len(self.members):
            log_probs = [torch.log_softmax(logits.float(), -1)]
            for m in self.members:
                m_out, m_mask = m["connector"](states, mask)
                if not torch.equal(m_mask, out_mask):  # same sizes, so only a bug gets here
                    raise RuntimeError("an ensemble member's connector output does not line up with the first member's")
                lp = torch.log_softmax(m["ctc_head"](m_out, emb).float(), -1)  # (B, S, U_m + 1)
                index = m.class_index
                lp = lp[..., index.clamp(min=0)].masked_fill(index < 0, -math.inf)  # (B, S, U + 1)
                log_probs.append(torch.log_softmax(lp, -1))  # renormalised: the member's units this head lacks
            if self.member_combine != "mean_probability":
                return out, out_mask, logits, log_probs[1:]
            mean = torch.logsumexp(torch.stack(log_probs), 0) - math.log(len(log_probs))
            logits = mean.to(logits.dtype)
        return out, out_mask, logits, None

    def _read_ctc(
        self, ctc_logits: torch.Tensor, out_mask: torch.Tensor, alternatives: list[torch.Tensor] | None = None
    ) -> list[str]:
        """(B, S, V+1) -> texts; with ``alternatives`` (an ensemble's other members) each member's reading is
        made and combined per utterance (``member_combine``: the medoid transcript or a word vote)."""
        texts = self.ctc_head.read_logits(ctc_logits, out_mask, self.translator)
        if not alternatives:
            return texts
        from .ensemble import medoid_transcripts, vote_transcripts

        readings = [texts] + [self.ctc_head.read_logits(a, out_mask, self.translator) for a in alternatives]
        return (vote_transcripts if self.member_combine == "vote" else medoid_transcripts)(readings)

    def _speech_states(self, states: torch.Tensor) -> torch.Tensor:
        """What the connector sees: the states without the hypothesis token channels, if they carry them."""
        return states[..., :-TOKEN_CHANNELS] if self.hypothesis is not None else states

    def _text_embeddings(self, texts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> the MT's own source embeddings x (B, L, D_m) and mask (B, L), as its text path embeds them."""
        ids = self.translator.tokenize_source(texts)
        ids = [row if row else [self.translator.eos_id] for row in ids]  # the MT always gets an input
        batch, x_mask = pad_id_rows(ids, self.translator.pad_id, device=device)
        return self.translator.embed_source_ids(batch) * x_mask[..., None], x_mask  # zeros on padding


def target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean token cross-entropy; logits (B, L, V), targets (B, L) padded with -100. The final EOS counts."""
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE, label_smoothing=label_smoothing
    )
