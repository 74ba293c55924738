#!/usr/bin/env bash
# One lease of the GPU machine for issues 10, 11 and 13 together: one pair of datasets, one
# packed training of every run they need, then each study's evaluations and the latency
# benchmark. It drives the per-issue scripts (paper_run.sh, guidance_study.sh, realtime_gpu.sh)
# with one work folder, so nothing is collected or trained twice.
#
#   experiments/gpu_session.sh prep SECONDS   # GPU tests, datasets (paper + mixed), then train
#   experiments/gpu_session.sh train SECONDS  # train on until done or SECONDS
#   experiments/gpu_session.sh eval           # diffusion baselines, guidance study + sweep, quality
#   experiments/gpu_session.sh latency        # benchmarks/plan_latency.py, alone on the GPU
#
# Every stage ends by packing the small result files of $W/res into $OUT/session.tgz.
# The runs (STEPS optimiser steps each, default 10,000; the paper trains 100,000, which did not
# fit one lease with every run of the three issues):
#   guidance study (issue 11): 8 MA-CDMP runs (guidance_study.sh's list; `delay` is MA-CDMP
#     with the paper's settings and serves as the reference run of issue 13 too)
#   diffusion baselines (issue 10): ma-diffuser, ma-dd, madiff
#   real-time planning (issue 13): the `fast` preset
set -euo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
W="${SESSION_WORK:-/root/w}"
DEV_OUT="${OUT:-$W/out}"
export STEPS="${STEPS:-10000}" STUDY_WORK="$W" PAPER_WORK="$W" REALTIME_WORK="$W"
mkdir -p "$W/res" "$DEV_OUT"

pack() { tar czf "$DEV_OUT/session.tgz" -C "$W/res" . && ls -la "$DEV_OUT"; }

train() {
  local secs=$1
  # the study's runs, as guidance_study.sh's `train` lists them (run folder -> data, reward)
  : > "$W/session.toml"
  for r in delay own ownnb delay-nomf own-nomf ownnb-nomf mixed-delay mixed-ownnb; do
    local data="$W/paper.h5" reward=delay
    case $r in mixed-*) data="$W/mixed.h5";; esac
    case $r in *ownnb*) reward="own+neighbours-backlog";; *own*) reward="own-backlog";; esac
    printf '[[run]]\nout = "%s"\ndata = "%s"\npreset = "paper"\nsteps = %s\n' \
        "$W/runs/$r" "$data" "$STEPS" >> "$W/session.toml"
    case $r in *-nomf) echo "no_mf = true" >> "$W/session.toml";; esac
    printf 'set = { reward = "%s" }\n' "$reward" >> "$W/session.toml"
  done
  for r in ma-diffuser ma-dd madiff; do
    printf '[[run]]\nout = "%s"\ndata = "%s"\nmethod = "%s"\npreset = "paper"\nsteps = %s\n' \
        "$W/runs/$r" "$W/paper.h5" "$r" "$STEPS" >> "$W/session.toml"
  done
  printf '[[run]]\nout = "%s"\ndata = "%s"\npreset = "fast"\nsteps = %s\n' \
      "$W/runs/fast" "$W/paper.h5" "$STEPS" >> "$W/session.toml"
  rc=0
  timeout -s TERM "$secs" python3 -m macdmp.cli train --plan "$W/session.toml" --quiet || rc=$?
  for d in "$W"/runs/*/; do echo "$(basename "$d"): $(tail -n 1 "$d/losses.jsonl")"; done
  mkdir -p "$W/res/losses"
  for d in "$W"/runs/*/; do cp "$d/losses.jsonl" "$W/res/losses/$(basename "$d").jsonl"; done
  ln -sfn "$W/runs/delay" "$W/runs/paper"
  case $rc in 0) echo "training finished";; 124|130) echo "stopped; run again to resume";;
    *) exit $rc;; esac
}

case "${1:-}" in
prep)
  nvidia-smi -L || true
  start=$(date +%s)
  mkdir -p "$W/res/study"
  python3 -m pytest -q tests/test_gpu.py > "$W/res/gpu-tests.log" 2>&1 &
  OUT="$W/res/study" experiments/guidance_study.sh collect
  wait || true
  tail -n 5 "$W/res/gpu-tests.log"
  train $(( ${2:-540} - ($(date +%s) - start) ))
  pack
  ;;
train)
  train "${2:-540}"
  pack
  ;;
eval)
  # the quality of the real-time settings in the loop, beside the two studies' evaluations;
  # everything stops by 560 s (the 10-minute limit of a call), keeping what finished
  start=$(date +%s)
  OUT="$W/res/realtime" timeout -s TERM 560 experiments/realtime_gpu.sh quality \
      > "$W/res/quality.log" 2>&1 &
  q=$!
  OUT="$W/res/diffusers" timeout -s TERM 560 experiments/paper_run.sh eval-diffusers \
      > "$W/res/diffusers.log" 2>&1 &
  d=$!
  # the study's evaluations, then its guidance sweep (displacement tables and QoS per scale);
  # units still running at the deadline are stopped and listed as NOT DONE
  OUT="$W/res/study" PAR=6 STAGE_S=330 experiments/guidance_study.sh eval \
      > "$W/res/study-eval.log" 2>&1 || true
  OUT="$W/res/study" PAR=6 STAGE_S=$(( 550 - ($(date +%s) - start) )) \
      experiments/guidance_study.sh sweep > "$W/res/study-sweep.log" 2>&1 || true
  wait $d || echo "eval-diffusers failed (see diffusers.log)"
  wait $q || echo "quality failed (see quality.log)"
  OUT="$W/res/study" experiments/guidance_study.sh results > /dev/null 2>&1 || true
  mkdir -p "$W/res/eval-diff" "$W/res/study-eval"
  cp "$W"/eval-diff/* "$W/res/eval-diff/" 2>/dev/null || true
  cp "$W"/eval/* "$W/res/study-eval/" 2>/dev/null || true
  pkill -f "macdmp.cli evaluate" || true  # units a timeout left behind
  pkill -f "plan_latency.py" || true
  tail -n 3 "$W/res"/*.log
  pack
  ;;
latency)
  start=$(date +%s)
  OUT="$W/res/realtime" timeout -s TERM 400 experiments/realtime_gpu.sh latency || true
  OUT="$W/res/realtime" timeout -s TERM $(( 560 - ($(date +%s) - start) )) \
      experiments/realtime_gpu.sh fast || true
  pkill -f "plan_latency.py" || true
  pack
  ;;
*)
  sed -n 2,19p "$0"; exit 2 ;;
esac
