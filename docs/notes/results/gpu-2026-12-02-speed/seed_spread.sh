#!/usr/bin/env bash
# Issue 31, item 1: does TF32 change training beyond the spread between training seeds?
# Run from the repository root of the GPU machine (torch, no package index): the paper dataset,
# then six paper-preset runs packed on the GPU (captured, not compiled): seeds 0, 1, 2 in
# float32 and the same seeds with tf32=true, STEPS steps each, the EMA policy evaluated in the
# loop at the end (eval_seeds networks per scenario, eval_frames frames); then a second timing
# of captured against tf32. Small result files go to $OUT.
set -euo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
W=/root/speed
STEPS="${STEPS:-8000}"
mkdir -p "$W" "$OUT"
t0=$(date +%s)
python -m macdmp.cli collect --preset paper --out "$W/paper.h5" --threads 16 --quiet
echo "collect: $(( $(date +%s) - t0 )) s"
{
  for sw in fp32 tf32; do
    for s in 0 1 2; do
      extra=""; [ $sw = tf32 ] && extra="tf32 = true, "
      printf '[[run]]\nout = "%s/runs/%s-s%d"\npreset = "paper"\nsteps = %d\nseed = %d\n' \
        "$W" "$sw" "$s" "$STEPS" "$s"
      printf 'set = { %seval_every = %d, eval_seeds = 2, eval_frames = 400 }\n' "$extra" "$STEPS"
    done
  done
} > "$W/plan.toml"
cp "$W/plan.toml" "$OUT/plan.toml"
t1=$(date +%s)
rc=0
timeout -s TERM "${TRAIN_S:-330}" python -m macdmp.cli train --data "$W/paper.h5" \
  --plan "$W/plan.toml" --quiet || rc=$?
echo "train: rc $rc, $(( $(date +%s) - t1 )) s"
for d in "$W"/runs/*; do
  n=$(basename "$d"); mkdir -p "$OUT/runs/$n"
  cp "$d"/losses.jsonl "$d"/config.json "$OUT/runs/$n/"
  [ -f "$d/evals.jsonl" ] && cp "$d/evals.jsonl" "$OUT/runs/$n/"
done
timeout 120 python benchmarks/train_speed.py --preset paper --window 100 --repeats 5 \
  --warmup 20 --modes captured,tf32,captured,tf32 --json "$OUT/train_speed_repeat.json" \
  2>/dev/null | tee "$OUT/train_speed_repeat.txt" || true
