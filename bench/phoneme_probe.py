"""Probe: phonemes in the middle. Does a speech -> phonemes -> MT tokens split beat CTC straight onto MT tokens?

The demo's connector is a speech recogniser whose CTC classes are the MT's 32k source tokens; its error
analysis (docs/RESULTS.md) blames rare words: most tokens are heard too few times in 12k clips to be
learned. This probe splits the job in two, each part trained on what it can learn from:

1. acoustic: frozen whisper-base states (from the training cache) -> a small phone recogniser, CTC over
   eSpeak's own phonemes of the transcript (in the accent of the clip's voice, so the targets are exactly
   what the synthesiser said). About 100 phone units over the eight accents, most heard thousands of times.
2. spelling (P2T): phonemes -> the MT's source tokens, CTC, trained on *text only*: eSpeak phonemises
   English sentences and dictionary phrases (no audio, no encoder), with random phone substitutions,
   deletions and insertions standing in for the recogniser's errors. Text is cheap, so rare words get
   seen.
3. lexicon: the same text's phonemisation, word by word, gives a table from phone words to written words
   (``Lexicon``); the recogniser's phones are read through it, unseen phone words by their nearest entry.
   No training.

Each read-out (speller, lexicon, and both on eSpeak's phones of the true transcript, their ceilings) is
translated by the frozen MT (beam 4), like the read-outs of bench/ctc_word_lm.py; a ``--baseline``
connector's greedy CTC read-out is scored the same way on the same clips. Corpus sacrebleu (BLEU, chrF) with signatures; WER with the package's normalisation; PER on the
synthetic sets. Outside the package: it needs ``pip install phonemizer``.

    python3 bench/phoneme_probe.py --train corpus/train.jsonl --dev corpus/dev.jsonl \
        --eval corpus/dev.jsonl corpus/test.jsonl realspeech/manifest.jsonl --cache cache \
        --exclude corpus/dev.jsonl corpus/test.jsonl \
        --minutes 16 --p2t_minutes 0 --baseline base12k/best --out runs/phoneme_probe

(``--p2t_minutes 0`` skips the speller; a saved OUT/acoustic.pt is reused, so a rerun only rescores.)
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import sacrebleu
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from sltalign.data.cache import EncoderCache
from sltalign.data.manifest import read_manifest
from sltalign.data.lexicon_text import phrase_lines
from sltalign.data.synth import load_sentences
from sltalign.evaluate import word_error_rate
from sltalign.foundation import load_speech_encoder, load_translator
from sltalign.foundation.base import pad_id_rows
from sltalign.objectives import Objectives

ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
WORD = "|"
_backends: dict = {}


def accent_of(audio: str) -> str:
    """The eSpeak language of a synthetic clip's voice (from the json beside it); en-us otherwise."""
    meta = Path(audio).with_suffix(".json")
    if meta.is_file():
        voice = json.loads(meta.read_text()).get("voice", "")
        base = voice.split("+")[0]
        base = "en-gb" if base == "en" else base
        if base in ACCENTS:
            return base
    return "en-us"


def phonemize(texts: Sequence[str], accents: Sequence[str]) -> list[list[str]]:
    """texts -> phone lists with WORD between words, each text in its own accent (eSpeak via phonemizer)."""
    from phonemizer.backend import EspeakBackend
    from phonemizer.separator import Separator

    sep = Separator(phone=" ", word=f" {WORD} ", syllable="")
    out: list[list[str] | None] = [None] * len(texts)
    for acc in sorted(set(accents)):
        idx = [i for i, a in enumerate(accents) if a == acc]
        if acc not in _backends:
            _backends[acc] = EspeakBackend(acc, preserve_punctuation=False, with_stress=False, language_switch="remove-flags")
        res = _backends[acc].phonemize([texts[i] for i in idx], separator=sep, strip=True, njobs=1)
        for i, s in zip(idx, res):
            units = s.split()
            while units and units[-1] == WORD:
                units.pop()
            out[i] = units
    return out  # type: ignore[return-value]


def held_sentences(manifests: Sequence[str]) -> set[str]:
    """Every sentence of the manifests' transcripts: a long clip's transcript joins several sentences, so the
    whole transcripts are not enough; the synthesiser's sidecar json lists them, and a split at sentence ends
    covers manifests without one."""
    held: set[str] = set()
    for m in manifests:
        for u in read_manifest(m, require=("transcript",)):
            held.add(u.transcript)
            held.update(t for t in re.split(r"(?<=[.!?])\s+", u.transcript) if t)
            meta = Path(u.audio).with_suffix(".json")
            if meta.is_file():
                held.update(json.loads(meta.read_text()).get("sentences", []))
    return held


def ding_phrase_lines(n: int, held: set[str], seed: int) -> list[str]:
    """n pseudo-sentences of 3-6 English phrase entries of the Ding dictionary (trans-de-en), e.g.
    "Carpenter's plane, credit point, sales policy, at legal interest.": the package's own source of them."""
    return phrase_lines(n, held, seed=seed)


# ---------------------------------------------------------------------------------------------------
class PhoneRecognizer(nn.Module):
    """states (B, T_s, D_s), mask (B, T_s) -> logits (B, T_s / stack, P + 1) (blank last), mask."""

    def __init__(
        self, *, in_dim: int, n_units: int, stack: int = 2, d: int = 256, layers: int = 2, heads: int = 4, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.stack = stack
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim * stack, d)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout, batch_first=True, norm_first=True, activation="gelu")
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, n_units + 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        pad = (-t) % self.stack
        x = F.pad(self.norm(x) * mask[..., None], (0, 0, 0, pad))
        m = F.pad(mask, (0, pad)).reshape(b, -1, self.stack).any(-1)
        h = self.enc(F.gelu(self.proj(x.reshape(b, m.shape[1], -1))), src_key_padding_mask=~m)
        return self.head(h), m


class Speller(nn.Module):
    """phones (B, N) (pad = P) -> hidden (B, N, d); CTC rows over a token subset are applied by the caller."""

    def __init__(
        self,
        *,
        n_units: int,
        n_tokens: int,
        d: int = 192,
        layers: int = 3,
        heads: int = 4,
        dropout: float = 0.1,
        max_len: int = 2048,
    ) -> None:
        super().__init__()
        self.emb = nn.Embedding(n_units + 1, d)
        self.pos = nn.Embedding(max_len, d)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout, batch_first=True, norm_first=True, activation="gelu")
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.rows = nn.Parameter(torch.randn(n_tokens + 1, d) * d**-0.5)  # last row: blank
        self.bias = nn.Parameter(torch.zeros(n_tokens + 1))

    def hidden(self, phones: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(phones.shape[1], device=phones.device).clamp(max=self.pos.num_embeddings - 1)
        return self.norm(self.enc(self.emb(phones) + self.pos(pos)[None], src_key_padding_mask=~mask))

    def logits(self, h: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """rows: token indices to score (blank is always appended last); None: all tokens."""
        if rows is None:
            return h @ self.rows.T + self.bias
        r = torch.cat([rows, torch.tensor([self.rows.shape[0] - 1])])
        return h @ self.rows[r].T + self.bias[r]


def greedy(logits: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    """(B, S, C+1) blank last -> collapsed label lists."""
    blank = logits.shape[-1] - 1
    pred = logits.argmax(-1).masked_fill(~mask, blank).tolist()
    out = []
    for row in pred:
        seq, prev = [], blank
        for p in row:
            if p != blank and p != prev:
                seq.append(p)
            prev = p
        out.append(seq)
    return out


def ctc(logits: torch.Tensor, mask: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
    """logits (B, S, C+1) blank last, mask (B, S), label lists -> the package's CTC loss (mean per target)."""
    tgt, tgt_mask = pad_id_rows(targets, 0)
    return Objectives._ctc_loss(logits, tgt, mask, tgt_mask)


def lr_at(step: int, frac: float, lr: float, warmup: int) -> float:
    return lr * min(1.0, (step + 1) / warmup) * max(0.0, 1.0 - frac)


def pad_states(arrs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(a.shape[0] for a in arrs)
    x = torch.zeros(len(arrs), t, arrs[0].shape[1])
    m = torch.zeros(len(arrs), t, dtype=torch.bool)
    for i, a in enumerate(arrs):
        x[i, : a.shape[0]] = torch.from_numpy(np.asarray(a, dtype=np.float32))
        m[i, : a.shape[0]] = True
    return x, m


def batches_by_length(lengths: Sequence[int], size: int, rng: random.Random) -> list[list[int]]:
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    out = []
    for s in range(0, len(idx), size * 50):  # sort within pools of 50 batches: little padding, still random
        pool = sorted(idx[s : s + size * 50], key=lambda i: lengths[i])
        out += [pool[k : k + size] for k in range(0, len(pool), size)]
    rng.shuffle(out)
    return out


# ---------------------------------------------------------------------------------------------------
def train_timed(
    model: nn.Module,
    desc: str,
    minutes: float,
    epoch: Callable[[], list[list[int]]],
    batch_loss: Callable[[list[int]], torch.Tensor],
) -> nn.Module:
    """AdamW (lr 1e-3, 300 warmup steps, linear decay to 0 over ``minutes`` of wall clock), clipping at 1, over
    the batches of ``epoch()`` (called again at each pass) until the clock runs out; returns the model in eval."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    t0, step, ema = time.perf_counter(), 0, None
    bar = tqdm(total=int(minutes * 60), unit="s", desc=desc, dynamic_ncols=True)
    model.train()
    while True:
        for b in epoch():
            frac = (time.perf_counter() - t0) / (minutes * 60)
            if frac >= 1:
                bar.close()
                print(f"{desc}: {step} steps in {minutes} min, loss {ema:.3f}")
                return model.eval()
            for g in opt.param_groups:
                g["lr"] = lr_at(step, frac, 1e-3, 300)
            loss = batch_loss(b)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            bar.n = int(time.perf_counter() - t0)
            bar.set_postfix(step=step, loss=f"{ema:.3f}")
            bar.refresh()


def train_acoustic(
    cache: EncoderCache, utts, phones: list[list[int]], n_units: int, minutes: float, seed: int
) -> PhoneRecognizer:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = PhoneRecognizer(in_dim=cache.dim or 512, n_units=n_units)
    lengths = [cache.frames(u) for u in utts]

    def batch_loss(b: list[int]) -> torch.Tensor:
        x, m = pad_states([cache.get(utts[i]) for i in b])
        logits, om = model(x, m)
        return ctc(logits, om, [phones[i] for i in b])

    return train_timed(model, "acoustic", minutes, lambda: batches_by_length(lengths, 32, rng), batch_loss)


def add_noise(seq: list[int], n_units: int, rate: float, rng: random.Random) -> list[int]:
    """Substitutions, deletions and insertions, each at rate / 3 per phone (the recogniser's errors)."""
    out = []
    for p in seq:
        r = rng.random()
        if r < rate / 3:
            out.append(rng.randrange(n_units))
        elif r < 2 * rate / 3:
            pass
        else:
            out.append(p)
        if rng.random() < rate / 3:
            out.append(rng.randrange(n_units))
    return out or seq


def train_speller(
    phones: list[list[int]],
    tokens: list[list[int]],
    n_units: int,
    n_tokens: int,
    minutes: float,
    noise: float,
    seed: int,
    sampled: int = 1024,
) -> Speller:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Speller(n_units=n_units, n_tokens=n_tokens)
    lengths = [len(p) for p in phones]

    def batch_loss(b: list[int]) -> torch.Tensor:
        x, m = pad_id_rows([add_noise(phones[i], n_units, noise, rng) for i in b], n_units)
        tg = [tokens[i] for i in b]
        present = torch.tensor(sorted({t for row in tg for t in row}), dtype=torch.long)
        rows = torch.unique(torch.cat([present, torch.randint(0, n_tokens, (sampled,), generator=gen)]))
        pos = {int(r): k for k, r in enumerate(rows.tolist())}
        return ctc(model.logits(model.hidden(x, m), rows), m, [[pos[t] for t in row] for row in tg])

    return train_timed(model, "speller", minutes, lambda: batches_by_length(lengths, 48, rng), batch_loss)


@torch.no_grad()
def spell(model: Speller, seqs: list[list[int]], n_units: int) -> list[list[int]]:
    out = []
    for s in range(0, len(seqs), 64):
        x, m = pad_id_rows([q or [n_units] for q in seqs[s : s + 64]], n_units)  # an empty hearing: padding only
        read = greedy(model.logits(model.hidden(x, m)), m)
        out += [r if q else [] for q, r in zip(seqs[s : s + 64], read)]
    return out


def edit_rate(hyps: list[list[int]], refs: list[list[int]]) -> float:
    import jiwer

    f = lambda seq: " ".join(f"u{p}" for p in seq)  # noqa: E731
    pairs = [(f(r), f(h)) for h, r in zip(hyps, refs) if r]
    return jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])


class Lexicon:
    """Phone words -> written words, read off eSpeak's own phonemisation of the speller's text.

    Every text line whose phone words (between WORD marks) pair one to one with its written words adds
    (phone word -> written word) counts, in the accent it was phonemised in; the reading of a phone word is
    its most frequent written word. A phone word never seen is read as its nearest entry by edit distance
    over phones (rapidfuzz), or as two entries when it splits exactly into two (a missed word boundary).
    """

    _WORDS = re.compile(r"[A-Za-z0-9']+")

    def __init__(self, texts: Sequence[str], phones: Sequence[Sequence[int]], word_id: int) -> None:
        from collections import Counter, defaultdict

        counts: dict[str, Counter] = defaultdict(Counter)
        self.word_id = word_id
        kept = 0
        for text, seq in zip(texts, phones):
            words = self._WORDS.findall(text)
            groups = self._groups(seq)
            if len(words) != len(groups):
                continue
            kept += 1
            for k, (w, g) in enumerate(zip(words, groups)):
                # a line's first word is capitalised by position, not by spelling: count it lower-cased
                counts[g][w.lower() if k == 0 and w != "I" and not w.isupper() else w] += 1
        self.table = {k: c.most_common(1)[0][0] for k, c in counts.items()}
        self.keys = list(self.table)
        self.kept = kept

    def _groups(self, seq: Sequence[int]) -> list[str]:
        groups, cur = [], []
        for p in seq:
            if p == self.word_id:
                if cur:
                    groups.append("".join(chr(0xE000 + q) for q in cur))
                cur = []
            else:
                cur.append(p)
        if cur:
            groups.append("".join(chr(0xE000 + q) for q in cur))
        return groups

    def read_word(self, key: str) -> list[str]:
        if key in self.table:
            return [self.table[key]]
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        best = process.extractOne(key, self.keys, scorer=Levenshtein.distance)
        if best[1] >= 2:  # two exact entries (a missed word mark) beat an entry two or more phones away
            for i in range(1, len(key)):
                if key[:i] in self.table and key[i:] in self.table:
                    return [self.table[key[:i]], self.table[key[i:]]]
        return [self.table[best[0]]]

    def read(self, seq: Sequence[int]) -> str:
        words = [w for g in self._groups(seq) for w in self.read_word(g)]
        if not words:
            return ""
        return words[0][:1].upper() + words[0][1:] + (" " + " ".join(words[1:]) if words[1:] else "") + "."


def score(hyps: list[str], refs: list[str]) -> dict:
    bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
    b, c = bleu.corpus_score(hyps, [refs]), chrf.corpus_score(hyps, [refs])
    return {
        "bleu": round(b.score, 1),
        "chrf": round(c.score, 1),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


# ---------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--dev", required=True, help="not used for selection; only reported")
    ap.add_argument("--eval", nargs="+", required=True)
    ap.add_argument("--cache", required=True, help="the training cache (whisper-base, trim, bf16)")
    ap.add_argument("--eval_cache", default=None, help="where to encode eval clips missing from --cache (default: CACHE_eval)")
    ap.add_argument("--text_extra", nargs="*", default=[], help="files of more English lines for the speller and lexicon")
    ap.add_argument(
        "--ding_phrases", type=int, default=60000, help="pseudo-sentences of Ding dictionary phrases to add (0: none)"
    )
    ap.add_argument("--exclude", nargs="*", default=[], help="manifests whose transcripts the speller must not read")
    ap.add_argument("--minutes", type=float, default=16)
    ap.add_argument("--p2t_minutes", type=float, default=10)
    ap.add_argument("--noise", type=float, default=0.15)
    ap.add_argument("--max_duration", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", default=None, help="a connector checkpoint whose greedy CTC read-out is scored beside")
    ap.add_argument("--speller_only", action="store_true", help="train and save the speller (OUT/speller.pt), then stop")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    enc = load_speech_encoder("packaged:whisper-base", mode="trim", precision="bf16")
    cache = EncoderCache(args.cache, encoder_fingerprint=enc.fingerprint(), mode=enc.cache_mode)
    tr = load_translator("packaged:bergamot-en-pt")
    train = [u for u in read_manifest(args.train, require=("transcript",)) if u.duration <= args.max_duration]
    missing = [u.id for u in train if u not in cache]
    if missing:
        raise SystemExit(
            f"{len(missing)} training clips are not in {args.cache} (first: {missing[0]}); train on them once to cache them"
        )

    # phone inventory and targets
    t0 = time.perf_counter()
    train_ph = phonemize([u.transcript for u in train], [accent_of(u.audio) for u in train])
    held = held_sentences(args.exclude)
    rng = random.Random(args.seed)
    text = [s for s, _ in load_sentences(None) if s not in held]
    for f in args.text_extra:
        text += [ln.strip() for ln in open(f, encoding="utf-8") if ln.strip() and ln.strip() not in held]
    if args.ding_phrases:
        text += ding_phrase_lines(args.ding_phrases, held, args.seed)
    text_acc = [rng.choice(ACCENTS) for _ in text]
    text_ph = phonemize(text, text_acc)
    units = sorted({p for seq in train_ph + text_ph for p in seq})
    ac_path = out / "acoustic.pt"
    n_heard = len(units)  # the units the recogniser has classes for
    if ac_path.is_file():
        # a saved recogniser keeps its inventory (and ids); units only the new text has go after it: the
        # recogniser never emits them, the lexicon and PER still see them
        saved_units = torch.load(ac_path)["units"]
        units = saved_units + sorted(set(units) - set(saved_units))
        n_heard = len(saved_units)
    uid = {p: i for i, p in enumerate(units)}
    print(
        f"phonemised {len(train)} transcripts + {len(text)} text lines in {time.perf_counter() - t0:.0f} s; {len(units)} phone units"
    )
    train_ids = [[uid[p] for p in seq] for seq in train_ph]

    # the speller's token subset: every MT source token of its text and of the training transcripts
    spell_text = text + [u.transcript for u in train]
    spell_ph = [[uid[p] for p in seq] for seq in text_ph] + train_ids
    tok = [row[:-1] for row in tr.tokenize_source(spell_text)]  # drop </s>
    vocab = sorted({t for row in tok for t in row})
    vid = {t: i for i, t in enumerate(vocab)}
    tok_sub = [[vid[t] for t in row] for row in tok]
    keep = [i for i, (p, t) in enumerate(zip(spell_ph, tok_sub)) if p and t]
    print(f"speller: {len(keep)} lines, {len(vocab)} MT tokens")

    # The speller reads text only, so it may be trained apart (beside other work) and reused: OUT/speller.pt.
    sp_path = out / "speller.pt"
    speller = None
    if not args.p2t_minutes:
        print("speller: skipped (--p2t_minutes 0)")
    elif sp_path.is_file():
        saved = torch.load(sp_path)
        if saved["units"] != units or saved["vocab"] != vocab:
            raise SystemExit(f"{sp_path} was trained on other phone units or tokens; delete it")
        speller = Speller(n_units=len(units), n_tokens=len(vocab))
        speller.load_state_dict(saved["speller"])
        speller.eval()
        print(f"speller: loaded {sp_path}")
    else:
        speller = train_speller(
            [spell_ph[i] for i in keep],
            [tok_sub[i] for i in keep],
            len(units),
            len(vocab),
            args.p2t_minutes,
            args.noise,
            args.seed,
        )
        torch.save({"units": units, "vocab": vocab, "speller": speller.state_dict()}, sp_path)
    if args.speller_only:
        return
    if ac_path.is_file():  # a finished run's recogniser: rescore without retraining
        saved = torch.load(ac_path)
        acoustic = PhoneRecognizer(in_dim=cache.dim or 512, n_units=n_heard)
        acoustic.load_state_dict(saved["acoustic"])
        acoustic.eval()
        print(f"acoustic: loaded {ac_path}")
    else:
        acoustic = train_acoustic(cache, train, train_ids, len(units), args.minutes, args.seed)
        torch.save({"units": units, "acoustic": acoustic.state_dict()}, ac_path)
    lexicon = Lexicon(spell_text, spell_ph, uid[WORD])
    print(f"lexicon: {len(lexicon.table)} phone words from {lexicon.kept} of {len(spell_text)} lines")

    baseline = None
    if args.baseline:
        from sltalign.checkpoint import load_connector

        baseline, _ = load_connector(args.baseline)
        baseline.eval()

    eval_cache = EncoderCache(
        args.eval_cache or f"{args.cache.rstrip('/')}_eval", encoder_fingerprint=enc.fingerprint(), mode=enc.cache_mode
    )
    results = {}
    for man in args.eval:
        utts = [u for u in read_manifest(man, require=("transcript",)) if u.duration <= args.max_duration]
        with_mt = all(u.translation for u in utts)  # without references: PER and WER only
        todo = [u for u in utts if u not in cache]
        if todo:
            eval_cache.build(enc, todo, batch_size=8, progress=False)
        get = lambda u: cache.get(u) if u in cache else eval_cache.get(u)  # noqa: E731
        heard: list[list[int]] = []
        base_txt: list[str] = []
        with torch.no_grad():
            for s in range(0, len(utts), 8):
                x, m = pad_states([get(u) for u in utts[s : s + 8]])
                logits, om = acoustic(x, m)
                heard += greedy(logits, om)
                if baseline is not None:
                    base_txt += baseline.ctc_transcribe(x, m)
        gold_ph = [
            [uid.get(p, 0) for p in seq] for seq in phonemize([u.transcript for u in utts], [accent_of(u.audio) for u in utts])
        ]
        rows = {}
        if speller is not None:
            rows["probe (phones -> speller)"] = [
                tr.detokenize_source([[vocab[t] for t in row]])[0] for row in spell(speller, heard, len(units))
            ]
            rows["speller on eSpeak's phones of the transcript"] = [
                tr.detokenize_source([[vocab[t] for t in row]])[0] for row in spell(speller, gold_ph, len(units))
            ]
        refs = [u.translation for u in utts]
        transcripts = [u.transcript for u in utts]
        rows["lexicon (phones -> lexicon)"] = [lexicon.read(q) for q in heard]
        rows["lexicon on eSpeak's phones of the transcript"] = [lexicon.read(q) for q in gold_ph]
        if baseline is not None:
            rows["baseline greedy CTC read-out"] = base_txt
        res = {"n": len(utts), "per": round(100 * edit_rate(heard, gold_ph), 1), "systems": {}}
        for name, hyp in rows.items():
            mt = tr.translate_text(hyp, beam=4) if with_mt else [""] * len(hyp)
            res["systems"][name] = {
                "wer": round(100 * word_error_rate(hyp, transcripts), 1),
                **(score(mt, refs) if with_mt else {}),
            }
            (
                out / f"{Path(man).parent.name}_{Path(man).stem}_{re.sub(r'[^a-z]+', '_', name.lower()).strip('_')[:40]}.jsonl"
            ).write_text("".join(json.dumps({"id": u.id, "heard": h, "translation": t}) + "\n" for u, h, t in zip(utts, hyp, mt)))
        results[man] = res
        print(man, json.dumps(res, indent=1))
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
