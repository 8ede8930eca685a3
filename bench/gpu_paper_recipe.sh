#!/usr/bin/env bash
# The paper's recipe and the demo's recipe trained on a GPU for a few minutes each, in one ~9-minute run:
# check the GPU, synthesise a corpus, cache the frozen encoder's states on the GPU, train both recipes (bf16
# mixed precision, large batches), evaluate both on the synthetic test and the real-speech set. Everything goes
# to $OUT (default ./gpu_out): results.json (merged after every stage) and report.md (rewritten after every stage).
#
# Launch, from the repository root, on a machine where `bash scripts/setup.sh` has run (Debian packages,
# sltalign with its offline extra) and torch is a CUDA build:
#     OUT=/path/to/out bash bench/gpu_paper_recipe.sh
# The script installs nothing. scripts/setup.sh pins the CPU build of torch: on a GPU machine whose torch is
# already a CUDA build, install sltalign without touching torch instead of running setup.sh's pip lines:
#     python3 -m pip install -e ".[offline]"     # keeps the installed torch (its version satisfies the pin's range)
# (check: python3 -c "import torch; print(torch.version.cuda, torch.cuda.is_available())").
#
# The CPU path (the same stages at a tiny scale, ~1 minute; what tests/bench/test_gpu_recipe.py runs):
#     SLTALIGN_GPU_SCRIPT_CPU=1 OUT=/tmp/gpu_tiny bash bench/gpu_paper_recipe.sh     (or: bash bench/gpu_paper_recipe.sh --tiny)
#
# Time: every stage has its own limit (STAGE_LIMITS, seconds) and the run as a whole SLTALIGN_GPU_BUDGET_S
# (default 540); a stage gets at most what the budget has left. A stage that fails or is killed is recorded
# (status "failed" / "timeout") and the run goes on with the next stage that can use what is there.
# SLTALIGN_GPU_N_TRAIN (default 12000 clips) and SLTALIGN_GPU_TRAIN_MINUTES (default 1.5 per recipe) set the scale.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-./gpu_out}
TINY=${SLTALIGN_GPU_SCRIPT_CPU:-0}
[ "${1:-}" = "--tiny" ] && TINY=1
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1 TQDM_DISABLE=1
args=(--out "$OUT")
if [ "$TINY" = 1 ]; then
  args+=(--tiny)
  export CUDA_VISIBLE_DEVICES=""   # the CPU path stays on the CPU even where a GPU is visible
  # generous: a shared 2-core machine takes 10-20 s to import torch and sltalign in each stage
  BUDGET=${SLTALIGN_GPU_BUDGET_S:-900}
  declare -A STAGE_LIMITS=([check]=60 [data]=120 [encode]=120 [train_paper]=150 [eval_paper]=120 [train_demo]=150 [eval_demo]=120)
else
  BUDGET=${SLTALIGN_GPU_BUDGET_S:-540}
  # expected: check 15, data 60-90 (synthesis on every core, MT on the GPU), encode 30-40, train 90 s of training
  # + 30-60 s of loading (the demo's lexicon and phone targets are CPU work), eval 30-60
  declare -A STAGE_LIMITS=([check]=45 [data]=150 [encode]=75 [train_paper]=160 [eval_paper]=70 [train_demo]=190 [eval_demo]=70)
fi
start=$(date +%s)
log="$OUT/log.txt"
echo "gpu_paper_recipe: $(date -u +%FT%TZ) out=$OUT tiny=$TINY budget=${BUDGET}s" | tee -a "$log"
failed=0
for stage in check data encode train_paper eval_paper train_demo eval_demo; do
  left=$(( BUDGET - ($(date +%s) - start) ))
  limit=${STAGE_LIMITS[$stage]}
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    "$PY" bench/gpu_paper_recipe.py "${args[@]}" record "$stage" skipped 0
    echo "== $stage: skipped (the run's budget is spent)" | tee -a "$log"
    continue
  fi
  echo "== $stage (limit ${limit}s)" | tee -a "$log"
  t0=$(date +%s%N)
  timeout -k 10 "$limit" "$PY" bench/gpu_paper_recipe.py "${args[@]}" "$stage" >>"$log" 2>&1
  rc=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  secs=$(printf '%d.%03d' $(( ms / 1000 )) $(( ms % 1000 )))
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status=failed ;;
  esac
  "$PY" bench/gpu_paper_recipe.py "${args[@]}" record "$stage" "$status" "$secs"
  "$PY" bench/gpu_paper_recipe.py "${args[@]}" report
  echo "== $stage: $status in ${secs}s (exit $rc)" | tee -a "$log"
  if [ "$stage" = check ] && [ "$status" != ok ]; then
    tail -n 5 "$log"; echo "no usable device: stopping" | tee -a "$log"; exit 2
  fi
  [ "$status" = ok ] || failed=1
done
echo "done in $(( $(date +%s) - start ))s: $OUT/results.json, $OUT/report.md" | tee -a "$log"
exit $failed
