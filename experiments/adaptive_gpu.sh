#!/usr/bin/env bash
# The adaptive study's MA-CDMP levers (docs/adaptive-study.md) on the device machine, one variant
# at a time: three training seeds of one MA-CDMP configuration trained together on one GPU (one
# stacked model where the runs allow it) under the bench's protocol (a validation point every
# 10,000 steps on 2 validation seeds x 1,000 frames of every scenario of the family, which keeps
# the best checkpoint), then the held-out test of each seed's selected and last checkpoints
# (3 test seeds x 1,000 frames, ideal and limited RF).
#
#   experiments/adaptive_gpu.sh FAMILY NAME PRESET [KEY=VALUE ...]
#
#   experiments/adaptive_gpu.sh load100 steer paper-steer
#   experiments/adaptive_gpu.sh load100 steer-invnow paper-steer inv_mf=now
#   experiments/adaptive_gpu.sh sessions top-nomf top-steer use_mf=false inv_mf=none
#
# Training stops after TIME_LIMIT seconds (default 480) as on SIGTERM, its checkpoints saved;
# the same command on the same warm machine goes on from them (a fresh machine starts again:
# nothing is kept between leases). Once the runs reach STEPS (default 30,000) the test runs, in
# the same call if less than SPLIT seconds have gone (default 540 less 10 per policy tested:
# the test takes about 10 s a policy on an H200 at 3 test networks, more with TEST_SEEDS),
# else in the next: it writes
# $OUT/eval-FAMILY-NAME.json and .txt (rows labelled 'NAME seed S [best|last]', which
# `macdmp report --json eval-*.json --out DIR` averages over the training seeds), and the runs'
# learning curves go to $OUT/train-FAMILY-NAME.tgz (small files; no checkpoints). Exit 75: call
# again to go on. ACTING (space-separated option sets, e.g. "target=-135 target=-45,warm=0") also
# tests each seed's selected checkpoint with those planner options, no training needed: rows
# 'NAME+target=-135 seed S [best]'.
# COLLECT (default "--family FAMILY") collects the data another way, e.g. another behaviour mix:
#   COLLECT="--scenarios S1,S2 --policies behaviour:0.5,maxweight,proportional:0.3
#   --trajectories 400 --frames 3000"; the test stays on the family's scenarios.
# TEST_SEEDS (default 3) is the number of held-out networks per scenario the test runs (where
# one test's spread hides an effect: docs/adaptive-study.md, "Demands that fill the frame").
# TEST_ONLY=1 tests the runs already on this machine as they are (with ACTING, say) and
# collects and trains nothing (its files: eval-FAMILY-NAME-testonly.json and .txt); on a
# machine without them (a fresh one, the warm one having gone back) it stops at once, exit 3.
# Smaller settings for a try on a CPU: SIZE="--trajectories 12 --frames 100" STEPS=20
# EVAL_EVERY=20 EVAL_FRAMES=20 FRAMES=20 with the demo preset (tests/test_experiments.py).
# Works without installing the package (PYTHONPATH=src).
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
FAMILY="$1" NAME="$2" PRESET="$3"
shift 3
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
W="${STUDY_WORK:-/root/adaptive}"
OUT="${OUT:-$W/out}"
STEPS="${STEPS:-30000}"
TIME_LIMIT="${TIME_LIMIT:-480}"
EVAL_EVERY="${EVAL_EVERY:-10000}"
EVAL_FRAMES="${EVAL_FRAMES:-1000}"
FRAMES="${FRAMES:-1000}"
SIZE="${SIZE:-}"  # the dataset's size, as macdmp collect takes it (default: the family's own)
COLLECT="${COLLECT:---family $FAMILY}"  # how the data is collected (default: the family's)
ACTING="${ACTING:-}"  # acting settings to test beside the defaults (space-separated)
read -ra SETS <<<"$ACTING"
TEST_SEEDS="${TEST_SEEDS:-3}"
case "$TEST_SEEDS" in
  "" | *[!0-9]* | 0*) echo "TEST_SEEDS: '$TEST_SEEDS'; allowed: a whole number >= 1" >&2; exit 2 ;;
esac
# the test takes about 10 s a policy at 3 networks on an H200
SPLIT="${SPLIT:-$((540 - 10 * (6 + 3 * ${#SETS[@]}) * TEST_SEEDS / 3))}"
RUN="$W/$FAMILY-$NAME"
TEST_ONLY="${TEST_ONLY:-0}"
case "$TEST_ONLY" in 0 | 1) ;; *) echo "TEST_ONLY: '$TEST_ONLY'; allowed: 0 or 1" >&2; exit 2 ;; esac
if [ "$TEST_ONLY" = 1 ]; then
  for s in 0 1 2; do
    [ -f "$RUN/seed-$s/checkpoint.pt" ] || {
      echo "TEST_ONLY: no trained run $RUN/seed-$s on this machine (a fresh one?): nothing done" >&2
      exit 3
    }
  done
fi
mkdir -p "$W" "$OUT"
macdmp() { python3 -m macdmp.app "$@"; }
SCEN=$(python3 -c "import sys; from macdmp.sim.families import family; print(','.join(family(sys.argv[1]).scenarios))" "$FAMILY")
DATA="$W/$FAMILY.h5"  # the family's own dataset; another recipe gets a file of its own
[ "$COLLECT" = "--family $FAMILY" ] || DATA="$W/$FAMILY-$(md5sum <<<"$COLLECT" | cut -c1-8).h5"
if [ "$TEST_ONLY" = 0 ]; then
  # shellcheck disable=SC2086  # COLLECT and SIZE are lists of options
  [ -f "$DATA" ] || macdmp collect $COLLECT --out "$DATA" --threads "$(nproc)" $SIZE --quiet
  rc=0
  timeout -s TERM "$TIME_LIMIT" python3 -m macdmp.app train --data "$DATA" --out "$RUN" \
    --preset "$PRESET" --seeds 0,1,2 --steps "$STEPS" --eval-every "$EVAL_EVERY" --quiet \
    --set eval_seeds=2 eval_frames="$EVAL_FRAMES" "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "training stopped (exit $rc; 124: the time limit): run the same command to go on"
    exit 75
  fi
fi
if [ "$SECONDS" -gt "$SPLIT" ]; then  # bash's seconds since the script started
  echo "trained in this call ($SECONDS s): run the same command for the test"
  exit 75
fi
TAG=""
if [ "$TEST_ONLY" = 0 ]; then
  tar czf "$OUT/train-$FAMILY-$NAME.tgz" -C "$W" \
    $(cd "$W" && ls -d "$FAMILY-$NAME"/seed-*/{config.json,losses.jsonl,evals.jsonl} 2>/dev/null)
else
  TAG="-testonly"  # beside the first test's files, not over them
fi
P=()
for s in 0 1 2; do
  for c in best last; do P+=(--policy "$RUN/seed-$s,checkpoint=$c,label=$NAME seed $s [$c]"); done
  for o in "${SETS[@]}"; do  # acting settings on the selected checkpoint, no training
    P+=(--policy "$RUN/seed-$s,checkpoint=best,$o,label=$NAME+${o//,/+} seed $s [best]")
  done
done
macdmp evaluate --scenarios "$SCEN" "${P[@]}" --rf ideal,limited --seeds "$TEST_SEEDS" --frames "$FRAMES" \
  --json "$OUT/eval-$FAMILY-$NAME$TAG.json" --no-traces --quiet | tee "$OUT/eval-$FAMILY-$NAME$TAG.txt"
