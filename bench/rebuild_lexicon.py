"""Rebuild the pronunciation lexicon of a phone-head checkpoint with the current code, keeping its connector.

The connector only hears phones; what it writes is the lexicon's business, built at the start of training
from text (``model.lexicon_text``). This copies RUN/best to RUN/best_relex with a lexicon made again from the
run's own config (plus ``key=value`` overrides, e.g. other ``model.lexicon_text``), so two lexicons can be
compared on one connector, or a checkpoint from before the lexicon search gets the current search options
(``model.phone_search``) and its word LM. The phone units must come out the same (they depend on the same
phonemisation), or, with ``--keep_units``, entries that need units the checkpoint lacks are dropped.

    python3 bench/rebuild_lexicon.py runs/pkg_ph12k
    sltalign evaluate --model runs/pkg_ph12k/best_relex --manifest corpus/test.jsonl --out eval/relex
    python3 bench/rebuild_lexicon.py runs/demo/train \
        'model.lexicon_text=[trans-de-en:sentences,trans-de-en:phrases,wordnet:examples,fortunes:sentences]' --keep_units
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from sltalign.checkpoint import write_dir_atomically
from sltalign.config import load_config
from sltalign.connectors.phones import PhoneCTCHead
from sltalign.train import prepare_head_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a training output directory (config.yaml and best/)")
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    ap.add_argument("--out", default=None, help="default: RUN/best_relex")
    ap.add_argument("--force", action="store_true", help="replace --out if it exists")
    ap.add_argument(
        "--keep_units",
        action="store_true",
        help="where new text brings phone units the checkpoint lacks, keep its units and drop the lexicon entries that "
        "need others (the connector cannot emit them anyway)",
    )
    args = ap.parse_args()
    run = Path(args.run)
    cfg = load_config(run / "config.yaml", args.overrides)
    if cfg.model.ctc_head != "phones":
        raise SystemExit(f"{run}: its config has model.ctc_head={cfg.model.ctc_head!r}; this rebuilds phone heads only")
    state = prepare_head_data(cfg)  # made from the run's data and lexicon text, as at the start of training
    old = PhoneCTCHead.read_data(run / "best")
    if args.keep_units and state["units"] != old["units"]:
        known = set(old["units"])
        n = len(state["lexicon"])
        state["lexicon"] = [e for e in state["lexicon"] if set(e[0].split()) <= known]
        print(f"--keep_units: {n - len(state['lexicon'])} of {n} lexicon entries need units the checkpoint lacks; dropped")
        state["units"] = old["units"]
    if state["units"] != old["units"]:
        raise SystemExit(
            f"the rebuilt head has {len(state['units'])} units, the checkpoint {len(old['units'])}: not the same phonemisation"
        )
    dst = Path(args.out) if args.out else run / "best_relex"
    if dst.exists() and not args.force:
        raise SystemExit(f"{dst} exists; pass --force to replace it")

    def fill(tmp: Path) -> None:
        shutil.copytree(run / "best", tmp, dirs_exist_ok=True)
        PhoneCTCHead.from_state(state, embed_dim=1).write_data(tmp)  # units, lexicon, search; the LM's text beside

    write_dir_atomically(dst, fill)  # a crash leaves the old directory or none, never half of one
    same = sorted(map(tuple, state["lexicon"])) == sorted(map(tuple, old["lexicon"]))
    print(
        f"{dst}: lexicon of {len(old['lexicon'])} -> {len(state['lexicon'])} phone words ({'the same' if same else 'changed'}); "
        f"search {old.get('search', 'greedy')} -> {state['search']} (LM over {len(state.get('lm_text', []))} sentences)"
    )


if __name__ == "__main__":
    main()
