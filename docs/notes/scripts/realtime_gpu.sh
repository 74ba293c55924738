#!/usr/bin/env bash
# Real-time planning on one GPU machine (docs/guide/realtime.md), in stages that each fit the
# 10-minute limit of the lent machine. Writes markdown tables into $OUT.
#
#   docs/notes/scripts/realtime_gpu.sh train      # paper dataset + the paper and fast presets, 10k steps
#   docs/notes/scripts/realtime_gpu.sh latency    # paper run: ms per frame, 1/9/100/1000 agents
#   docs/notes/scripts/realtime_gpu.sh quality    # paper run: delay in the loop at each setting
#   docs/notes/scripts/realtime_gpu.sh fast       # fast run: latency and quality
# Each stage is meant for one call of at most 10 minutes; the tables are rewritten after every
# row, so a stage stopped by the limit still leaves what it measured.
#
# 10,000 training steps: MA-CDMP's delay at 10k steps was as good as at 100k (docs/results.md),
# and they train in about 3 minutes packed and compiled. The GPU machine has no onnxruntime, so
# the ONNX (CPU) rows are measured on the CPU machine (docs/guide/realtime.md); they need nothing here.
set -euo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
W="${REALTIME_WORK:-/root/realtime}"
OUT="${OUT:-$W/out}"
STEPS="${STEPS:-10000}"
FRAMES="${FRAMES:-300}"
SEEDS="${SEEDS:-3}"
mkdir -p "$W" "$OUT"
macdmp() { python3 -m macdmp.app "$@"; }
SETTINGS="cold10,cold5,warm,skip,warm+skip,cold10+compile,warm+compile,cold10+bf16,warm+bf16"
SETTINGS="$SETTINGS,warm+compile+bf16,warm+skip+compile+bf16,cold5+compile+bf16"

train() {
  nvidia-smi -L
  [ -f "$W/paper.h5" ] || macdmp collect --preset paper --out "$W/paper.h5" --threads 12 --quiet
  printf '[[run]]\nout = "%s"\npreset = "%s"\nsteps = %s\n' \
      "$W/runs/paper" paper "$STEPS" "$W/runs/fast" fast "$STEPS" > "$W/plan.toml"
  rc=0
  timeout -s TERM "${1:-480}" python3 -m macdmp.app train --data "$W/paper.h5" \
      --plan "$W/plan.toml" --compile --quiet || rc=$?
  for r in paper fast; do echo "$r: $(tail -n 1 "$W/runs/$r/losses.jsonl")"; done
  case $rc in 0) echo "training finished";; 124|130) echo "stopped; run again to resume";;
    *) exit $rc;; esac
}

latency() {
  python3 benchmarks/plan_latency.py --run "$W/runs/paper" --settings "$SETTINGS" \
      --quality-settings "" --out "$OUT/realtime_latency_paper.md"
}

quality() {
  python3 benchmarks/plan_latency.py --run "$W/runs/paper" --settings "" \
      --quality-settings "cold10,cold5,skip,skip0.5,warm,warm0.5,warm+skip,cold10+bf16,warm+skip+bf16" \
      --quality-frames "$FRAMES" --quality-seeds "$SEEDS" --out "$OUT/realtime_quality_paper.md"
}

fast() {
  python3 benchmarks/plan_latency.py --run "$W/runs/fast" \
      --settings "cold10,warm,warm+skip,cold10+compile+bf16,warm+skip+compile+bf16" \
      --quality-settings "cold10,skip,warm,warm+skip" \
      --quality-frames "$FRAMES" --quality-seeds "$SEEDS" --out "$OUT/realtime_fast.md"
}

case "${1:-}" in
train) train "${2:-480}" ;;
latency) latency ;;
quality) quality ;;
fast) fast ;;
*) sed -n 2,15p "$0"; exit 2 ;;
esac
ls -la "$OUT"
