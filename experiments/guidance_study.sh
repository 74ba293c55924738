#!/usr/bin/env bash
# The guidance study of issue 11 (docs/guidance-study.md) at paper scale on one GPU machine, in
# commands that each fit the 10-minute limit of the lent GPU machine and resume where they stop.
# Every stage writes small result files under $OUT; the datasets and run folders stay in $W.
#
#   experiments/guidance_study.sh collect          # paper + mixed-quality datasets, diagnostics (~2 min)
#   experiments/guidance_study.sh train SECONDS    # 8 runs packed on the GPU, resumable (~7 min total)
#   experiments/guidance_study.sh eval             # the paper's protocol, every run + allocators
#   experiments/guidance_study.sh sweep            # guidance scale sweep: displacement + QoS
#   experiments/guidance_study.sh confirm          # CONFIRM runs at CONFIRM_SET, other seeds
#   experiments/guidance_study.sh results          # report.md, losses, a tarball into $OUT
#
# The runs (STEPS optimiser steps each, default 20,000 -- the paper trains 100,000; the `delay`
# run is the reference at the same length):
#   paper data (behaviour sigma 0.5):  reward in {delay, own-backlog, own+neighbours-backlog}
#                                      x {MA-CDMP, w/o MF}                             6 runs
#   mixed data (--quality mixed):      reward in {delay, own+neighbours-backlog}, MA-CDMP  2 runs
#   paper data, classifier-free guidance on the own+neighbours-backlog return (item 4),
#   MA-CDMP and w/o MF                                                                  2 runs
# A run name may end in -sN: the same run with training seed N (cfg-ownnb-s1).
# Evaluation: 4 paper scenarios x 3 held-out seeds x 1,000 frames, ideal and limited RF; the
# sweep: guidance scales 0.01 .. 1000 for plan/action displacement, 11 (run, scale) units of
# QoS (SWEEP= picks others); `confirm`: the CONFIRM runs at the acting options CONFIRM_SET
# (default warm=0.15, the steer variant's) on the next 3 held-out seeds (--seed-offset 3),
# which chose nothing (the warm level was picked on the first 3), plus the allocators there.
# CONFIRM_TAG=g3 suffixes the unit names, so another CONFIRM_SET does not find the first's files.
#
# Works from the repository root without installing the package (PYTHONPATH=src).
set -euo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
W="${STUDY_WORK:-/root/study}"
OUT="${OUT:-$W/out}"
STEPS="${STEPS:-20000}"
PAR="${PAR:-3}"  # evaluation processes at once (one GPU time-slices processes)
# smaller settings for a smoke test on a CPU (docs/guidance-study.md): PRESET=demo COMPILE=
# SIZE="--preset demo --trajectories 24 --frames 300" FRAMES=20 STEPS=4 THREADS=1 PAR=2
# EVAL_EVERY=0 PUSH_STATES=32
PRESET="${PRESET:-paper}"
COMPILE="${COMPILE---compile}"
SIZE="${SIZE:---preset paper}"
FRAMES="${FRAMES:-1000}"
THREADS="${THREADS:-6}"  # Numba threads of each of the two collections
EVAL_EVERY="${EVAL_EVERY:-10000}"  # in-loop evaluation (learning curve); 0 saves ~1 min
PUSH_STATES="${PUSH_STATES:-2048}"  # states planned from by guidance_push.py (0: none)
mkdir -p "$W" "$OUT" "$W/eval"
macdmp() { python3 -m macdmp.app "$@"; }

# run folder name -> dataset, reward, w/o MF
RUNS=(delay own ownnb delay-nomf own-nomf ownnb-nomf mixed-delay mixed-ownnb cfg-ownnb
      cfg-ownnb-nomf)
# RUNS_ONLY="a b": train and evaluate only these (MIXED=0: no mixed-quality dataset);
# EVAL_ONLY="a b": `eval` evaluates only these of them
[ -z "${RUNS_ONLY:-}" ] || read -r -a RUNS <<< "$RUNS_ONLY"
EVAL_RUNS=("${RUNS[@]}")
[ -z "${EVAL_ONLY:-}" ] || read -r -a EVAL_RUNS <<< "$EVAL_ONLY"
seed_of() { case $1 in *-s[0-9]*) echo "${1##*-s}";; *) echo 0;; esac; }
data_of() { case $1 in mixed-*) echo "$W/mixed.h5";; *) echo "$W/paper.h5";; esac; }
reward_of() { case $1 in *ownnb*) echo "own+neighbours-backlog";; *own*) echo "own-backlog";;
  *) echo "delay";; esac; }
guidance_of() { case $1 in cfg-*) echo cfg;; *) echo classifier;; esac; }
label_of() { local l="MA-CDMP"; case ${1%-s[0-9]*} in *-nomf) l="$l w/o MF";; esac
  case $1 in cfg-*) l="$l CFG";; esac
  case $1 in mixed-*) l="$l mixed-data";; esac
  [ "$(seed_of "$1")" = 0 ] || l="$l seed $(seed_of "$1")"; echo "$l $(reward_of "$1")"; }
COMMON=(--scenarios n8-2to6,n8-4to4,n9-2to7,n9-4to5 --seeds 3 --frames "$FRAMES"
        --rf ideal,limited)

# run "name" "command..." in the background unless $W/eval/name.json exists; at most $PAR at
# once, and none past the stage's deadline (STAGE_S after the start): a unit still running then
# is stopped and redone by the next call of the same stage
END=$(( $(date +%s) + ${STAGE_S:-560} ))
unit() {
  local name=$1; shift
  [ -f "$W/eval/$name.json" ] && return 0
  while [ "$(jobs -rp | wc -l)" -ge "$PAR" ]; do sleep 1; done
  local left=$(( END - $(date +%s) ))
  if [ "$left" -lt 30 ]; then echo "not started (deadline): $name"; return 0; fi
  ( timeout -s TERM "$left" "$@" --json "$W/eval/$name.json" --no-traces --quiet > "$W/eval/$name.txt" 2>&1 \
      || echo "NOT DONE: $name (see $W/eval/$name.txt); run the stage again" ) &
}

case "${1:-}" in
collect)
  nvidia-smi -L || true
  pids=()
  # shellcheck disable=SC2086
  [ -f "$W/paper.h5" ] || { macdmp collect $SIZE --out "$W/paper.h5" --threads "$THREADS" \
      --quiet & pids+=($!); }
  # shellcheck disable=SC2086
  [ -f "$W/mixed.h5" ] || [ "${MIXED:-1}" = 0 ] || { macdmp collect $SIZE --quality mixed --out "$W/mixed.h5" \
      --threads "$THREADS" --quiet & pids+=($!); }
  for p in "${pids[@]}"; do wait "$p"; done
  for d in paper mixed; do
    [ -f "$W/$d.h5" ] || continue
    macdmp dataset info "$W/$d.h5" > "$OUT/info-$d.txt"
    python3 experiments/reward_diagnostic.py "$W/$d.h5" --json "$OUT/diag-$d.json" \
        > "$OUT/diag-$d.txt"
    cat "$OUT/diag-$d.txt"
  done
  ;;
train)
  {
    for r in "${RUNS[@]}"; do
      printf '[[run]]\nout = "%s"\ndata = "%s"\npreset = "%s"\nsteps = %s\nseed = %s\n' \
          "$W/runs/$r" "$(data_of "$r")" "$PRESET" "$STEPS" "$(seed_of "$r")"
      case ${r%-s[0-9]*} in *-nomf) echo "no_mf = true";; esac
      printf 'set = { reward = "%s", guidance = "%s", eval_every = %s }\n' "$(reward_of "$r")" \
          "$(guidance_of "$r")" "$EVAL_EVERY"
    done
    # EXTRA_PLAN: more [[run]] tables trained packed with the study's (gpu_session.sh)
    [ -z "${EXTRA_PLAN:-}" ] || cat "$EXTRA_PLAN"
  } > "$W/plan.toml"
  rc=0
  # shellcheck disable=SC2086
  timeout -s TERM "${2:-540}" python3 -m macdmp.app train --plan "$W/plan.toml" $COMPILE \
      --quiet || rc=$?
  for r in "${RUNS[@]}"; do echo "$r: $(tail -n 1 "$W/runs/$r/losses.jsonl")"; done
  case $rc in 0) echo "training finished";; 124|130) echo "stopped; run again to resume";;
    *) exit $rc;; esac
  ;;
eval)
  # one unit per run (every scenario, seed and both RF conditions plan as one batch: ~30 s of
  # planning per unit alone on an H100), plus the allocators on the CPU
  unit allocators python3 -m macdmp.app evaluate "${COMMON[@]}" --policy behaviour \
      --policy carried --policy maxweight --policy proportional --policy backpressure
  for r in "${EVAL_RUNS[@]}"; do
    unit "$r" python3 -m macdmp.app evaluate "${COMMON[@]}" \
        --policy "$W/runs/$r,label=$(label_of "$r")"
  done
  wait
  echo "$(ls "$W/eval"/*.json | wc -l) evaluation files (eval: 9)"
  ;;
sweep)
  # how far guided plans and actions move from the unguided ones (same noise), per scale
  for r in delay ownnb ownnb-nomf mixed-ownnb; do
    [ "$PUSH_STATES" -gt 0 ] || break  # PUSH_STATES=0: the QoS units only
    [ -f "$OUT/push-$r.json" ] || ( timeout -s TERM $(( END - $(date +%s) )) \
        python3 experiments/guidance_push.py "$W/runs/$r" --data "$(data_of "$r")" \
        --scales 0.01,0.1,0.3,1,3,10,30,100,1000 --states "$PUSH_STATES" --json "$OUT/push-$r.json" \
        > "$OUT/push-$r.txt" 2>&1 || echo "NOT DONE: push-$r" ) &
  done
  # the QoS at the scales where the demo's plans moved without breaking (0.1 is in `eval`);
  # SWEEP="run:scale ..." replaces the list (e.g. the rest of the grid: delay:0 delay:1
  # delay:30 delay:100 ownnb:0 ownnb:100 own:3 own:30 ownnb-nomf:30 mixed-ownnb:3)
  for u in ${SWEEP:-ownnb:1 ownnb:3 ownnb:10 ownnb:30 ownnb-nomf:3 ownnb-nomf:10 delay:10 own:10 \
      mixed-ownnb:10 cfg-ownnb:1 cfg-ownnb:3}; do
    r=${u%%:*}; g=${u##*:}
    opt=guide; case $r in cfg-*) opt=cfg;; esac  # a cfg-trained run's weight is `cfg`
    unit "sweep-$r-g$g" python3 -m macdmp.app evaluate "${COMMON[@]}" \
        --policy "$W/runs/$r,$opt=$g,label=$(label_of "$r") guide $g"
  done
  wait
  cat "$OUT"/push-*.txt 2>/dev/null || true
  echo "$(ls "$W/eval"/sweep-*.json | wc -l) sweep files"
  ;;
confirm)
  # the steer variant over training seeds, on held-out seeds that picked none of its settings
  CONFIRM_SET="${CONFIRM_SET:-warm=0.15}" set_txt="${CONFIRM_SET//[=,]/ }"
  unit confirm-allocators python3 -m macdmp.app evaluate "${COMMON[@]}" --seed-offset 3 \
      --policy behaviour --policy carried --policy maxweight --policy proportional
  for r in ${CONFIRM:-cfg-ownnb cfg-ownnb-nomf}; do
    unit "confirm-$r${CONFIRM_TAG:+-$CONFIRM_TAG}" python3 -m macdmp.app evaluate \
        "${COMMON[@]}" --seed-offset 3 --policy "$W/runs/$r,$CONFIRM_SET,label=$(label_of "$r") $set_txt"
  done
  wait
  echo "$(ls "$W/eval"/confirm-*.json | wc -l) confirmation files"
  ;;
results)
  macdmp report --json "$W"/eval/*.json --losses "$W"/runs/*/losses.jsonl \
      --out "$OUT/report" --title "Guidance study (issue 11), $STEPS steps"
  for r in "${RUNS[@]}"; do
    cp "$W/runs/$r/losses.jsonl" "$OUT/losses-$r.jsonl"
    [ -f "$W/runs/$r/evals.jsonl" ] && cp "$W/runs/$r/evals.jsonl" "$OUT/evals-$r.jsonl"
  done
  tar czf "$OUT/eval.tgz" -C "$W/eval" .
  ls -la "$OUT"
  ;;
*)
  echo "usage: $0 collect|train SECONDS|eval|sweep|confirm|results" >&2
  exit 2 ;;
esac
