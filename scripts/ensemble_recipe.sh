#!/usr/bin/env bash
# The ensemble recipe for people's speech: the demo, then more connectors of the demo's recipe on the demo's corpus
# and encoder cache with other training seeds, joined by `sltalign ensemble` (per utterance, the transcript
# nearest the other members' is translated) and scored beside the demo's cascade on the 121 real recordings and
# the synthetic test. On a 2-core machine: the demo (~29 min), then ~16 min per further member.
#
#   bash scripts/ensemble_recipe.sh [OUT] [MEMBERS]      # defaults: runs/ensemble, 3
#
# Every step is skipped when its output exists, so the script resumes after a kill (training resumes from
# OUT/seedN/last). Results: docs/RESULTS.md, "Ensembles of connectors".
set -euo pipefail
OUT=${1:-runs/ensemble}
N=${2:-3}
if ! [[ "$N" =~ ^[0-9]+$ ]] || [ "$N" -lt 2 ]; then
  echo "ensemble_recipe.sh: MEMBERS must be a whole number >= 2, got '$N'" >&2
  exit 2
fi
DEMO=$OUT/demo
[ -f "$DEMO/results.json" ] || sltalign demo --out "$DEMO"
members=("$DEMO/connector")
for s in $(seq 1 $((N - 1))); do
  # the demo's own training config (its corpus, cache, lexicon and clock); only the seed and OUT change
  [ -f "$OUT/seed$s/summary.json" ] || sltalign train "$DEMO/train/config.yaml" "out=$OUT/seed$s" "seed=$s"
  members+=("$OUT/seed$s/best")
done
sltalign ensemble --out "$OUT/ensemble" "${members[@]}"
for set in real:"$DEMO/realspeech/manifest.jsonl" synthetic:"$DEMO/corpus/test.jsonl"; do
  name=${set%%:*}
  [ -f "$OUT/eval/$name/metrics.json" ] || sltalign evaluate --model "$OUT/ensemble" --manifest "${set#*:}" --out "$OUT/eval/$name"
done
python3 "$(dirname "$0")/../bench/score_by_subset.py" \
  ensemble="$OUT/eval/real/hyps.jsonl" demo="$DEMO/eval/real/aligned/hyps.jsonl" cascade="$DEMO/eval/real/cascade/hyps.jsonl" \
  | tee "$OUT/real_by_subset.md"
