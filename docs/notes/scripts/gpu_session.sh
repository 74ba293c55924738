#!/usr/bin/env bash
# One lease of the GPU machine for issues 11 and 13 together: one pair of datasets, one packed
# training of every run they need, the latency benchmark alone on the GPU, then each study's
# evaluations. It drives the per-issue scripts (guidance_study.sh, benchmarks/plan_latency.py)
# with one work folder, so nothing is collected or trained twice. Every stage stops by its
# SECONDS (default 570, under the 10-minute limit of a call), keeps what finished, and resumes
# on the next call of the same machine.
#
#   docs/notes/scripts/gpu_session.sh start SECONDS  # latency alone on the GPU while the datasets are
#                                             # collected (paper + mixed), then training
#   docs/notes/scripts/gpu_session.sh train SECONDS  # training until done, then evaluations
#   docs/notes/scripts/gpu_session.sh eval SECONDS   # evaluations: the study's units, the real-time
#                                             # quality rows, the guidance sweep, displacement
#   docs/notes/scripts/gpu_session.sh checks SECONDS # tests/test_gpu.py and `reproduce --scale smoke`
#                                             # on CUDA (needs nothing from the other stages)
#
# Every stage ends by packing the small result files of $W/res into $OUT/session.tgz.
# The runs (STEPS optimiser steps each, default 10,000, packed without compilation; the paper
# trains 100,000): the guidance study's runs named by STUDY_RUNS (guidance_study.sh's names;
# its `delay` run has the paper's settings and is the reference of issue 13's quality rows)
# and the `fast` and `fast-steer` presets of issue 13. The default list is the third block's
# (docs/notes/results/gpu-2026-11-30/): what the first two left unmeasured -- `delay` and `ownnb`
# for the quality rows and the classifier-guided QoS sweep, the two mixed-data runs, and the
# steer variant (cfg-ownnb) with and without the mean field over three training seeds, which
# `confirm` evaluates on held-out seeds that chose nothing. Latency does not depend on the
# weights, so it is measured on untrained models of each preset (benchmarks/plan_latency.py
# without --run) before training starts. Order of the evaluations: confirmation, quality rows,
# mixed-data units, then the sweep (SWEEP), so a stage that runs out of time loses the last.
set -euo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
W="${SESSION_WORK:-/root/w}"
DEV_OUT="${OUT:-$W/out}"
export STEPS="${STEPS:-10000}" STUDY_WORK="$W" COMPILE="" EVAL_EVERY="${EVAL_EVERY:-0}"
CFG_RUNS="cfg-ownnb cfg-ownnb-nomf cfg-ownnb-s1 cfg-ownnb-nomf-s1 cfg-ownnb-s2 cfg-ownnb-nomf-s2"
export RUNS_ONLY="${STUDY_RUNS:-delay ownnb mixed-delay mixed-ownnb $CFG_RUNS}"
export EVAL_ONLY="${EVAL_ONLY:-mixed-delay mixed-ownnb}" CONFIRM="${CONFIRM:-$CFG_RUNS}"
export SWEEP="${SWEEP:-ownnb:1 ownnb:3 ownnb:10 ownnb:30 delay:10 mixed-ownnb:10}"
mkdir -p "$W/res/study" "$W/res/realtime" "$W/res/quality" "$DEV_OUT"
T0=$(date +%s)
left() { echo $(( ${LIMIT:-570} - ($(date +%s) - T0) )); }

pack() {
  mkdir -p "$W/res/study-eval"
  cp "$W"/eval/*.json "$W/res/study-eval/" 2>/dev/null || true
  tar czf "$DEV_OUT/session.tgz" -C "$W/res" . && ls -la "$DEV_OUT"
}

# GPU latency, 1/9/100/1000 agents, per preset (untrained: same architecture); the paper
# preset's reference settings again on this machine, then the steer presets (CFG, warm 0.15)
LAT_PLAN="${LAT_PLAN:-paper:cold10,warm+skip+compile \
paper-steer:cold10,warm0.15,warm0.15+skip,warm0.15+skip+compile,warm0.15+skip+compile+bf16 \
fast-steer:cold10,warm0.15+skip,warm0.15+skip+compile,warm0.15+skip+compile+bf16}"
latency() {
  local item
  for item in $LAT_PLAN; do
    timeout -s TERM 150 python3 benchmarks/plan_latency.py --preset "${item%%:*}" \
        --settings "${item#*:}" --quality-settings "" \
        --out "$W/res/realtime/latency_${item%%:*}.md" >> "$W/res/latency.log" 2>&1 || true
  done
  tail -n 12 "$W/res/realtime"/latency_*.md
}

train() {
  local secs=$1
  [ "$secs" -gt 30 ] || return 0
  : > "$W/extra.toml"
  for p in fast fast-steer; do
    printf '[[run]]\nout = "%s"\ndata = "%s"\npreset = "%s"\nsteps = %s\n' \
        "$W/runs/$p" "$W/paper.h5" "$p" "$STEPS" >> "$W/extra.toml"
  done
  EXTRA_PLAN="$W/extra.toml" OUT="$W/res/study" experiments/guidance_study.sh train "$secs" \
      | tee "$W/res/train.log"
  mkdir -p "$W/res/losses"
  for d in "$W"/runs/*/; do cp "$d/losses.jsonl" "$W/res/losses/$(basename "$d").jsonl"; done
}

trained() { grep -q "training finished" "$W/res/train.log" 2>/dev/null; }

# one quality row of benchmarks/plan_latency.py per file, so a stopped stage resumes by row
quality_row() {  # RUN SETTING FILE
  [ -f "$3" ] && return 0
  [ "$(left)" -gt 60 ] || { echo "not started (deadline): $3"; return 0; }
  timeout -s TERM $(( $(left) - 10 )) python3 benchmarks/plan_latency.py --run "$1" \
      --settings "" --quality-settings "$2" --quality-frames 300 --quality-seeds 3 \
      --out "$3.tmp" > /dev/null 2>&1 && mv "$3.tmp" "$3" || echo "NOT DONE: $3"
}

evaluate() {
  trained || { echo "training not finished: no evaluations"; return 0; }
  [ "$(left)" -gt 60 ] || return 0
  # one GPU time-slices processes, so 3 at a time: more only adds switching
  OUT="$W/res/study" PAR=3 STAGE_S=$(( $(left) - 5 )) experiments/guidance_study.sh confirm \
      > "$W/res/study-confirm.log" 2>&1 || true
  tail -n 3 "$W/res/study-confirm.log"
  (  # issue 13's quality rows beside the study's other units
    for s in cold10 warm warm+skip skip; do
      quality_row "$W/runs/delay" "$s" "$W/res/quality/paper-$s.md"
    done
    for s in warm0.15 cold10; do  # fast-steer: its default (warm 0.15), then from scratch
      quality_row "$W/runs/fast-steer" "$s" "$W/res/quality/fast-steer-$s.md"
    done
    for s in cold10 warm+skip; do
      quality_row "$W/runs/fast" "$s" "$W/res/quality/fast-$s.md"
    done
  ) > "$W/res/quality.log" 2>&1 &
  local q=$!
  OUT="$W/res/study" PAR=2 STAGE_S=$(( $(left) - 5 )) experiments/guidance_study.sh eval \
      > "$W/res/study-eval.log" 2>&1 || true
  OUT="$W/res/study" PAR=2 STAGE_S=$(( $(left) - 5 )) PUSH_STATES=0 \
      experiments/guidance_study.sh sweep > "$W/res/study-sweep.log" 2>&1 || true
  wait $q || true
  tail -n 3 "$W/res/study-eval.log" "$W/res/study-sweep.log" "$W/res/quality.log"
  cat "$W"/res/quality/*.md 2>/dev/null | grep '^| [a-z]' | grep -v '^| setting' || true
  OUT="$W/res/study" experiments/guidance_study.sh results > /dev/null 2>&1 || true
}

case "${1:-}" in
start)
  LIMIT="${2:-570}"
  nvidia-smi -L || true
  OUT="$W/res/study" THREADS="${THREADS:-5}" experiments/guidance_study.sh collect > "$W/res/collect.log" 2>&1 &
  c=$!
  latency
  wait $c || { cat "$W/res/collect.log"; exit 1; }
  tail -n 12 "$W/res/collect.log"
  train $(( $(left) - 15 ))
  pack
  ;;
train)
  LIMIT="${2:-570}"
  trained || train $(( $(left) - 15 ))
  evaluate
  pack
  ;;
eval)
  LIMIT="${2:-570}"
  evaluate
  pack
  ;;
checks)
  LIMIT="${2:-570}"
  timeout -s TERM $(( $(left) - 200 )) python3 -m pytest -q tests/test_gpu.py \
      > "$W/res/gpu-tests.log" 2>&1 || true
  tail -n 8 "$W/res/gpu-tests.log"
  OUT="$W/res" REPRO_WORK="$W/repro" timeout -s TERM $(( $(left) - 10 )) \
      experiments/reproduce_gpu.sh smoke-gpu $(( $(left) - 40 )) > "$W/res/smoke-gpu.log" 2>&1 \
      || true
  tail -n 15 "$W/res/smoke-gpu.log"
  pack
  ;;
*)
  sed -n 2,23p "$0"; exit 2 ;;
esac
