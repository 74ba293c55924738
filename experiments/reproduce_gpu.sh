#!/usr/bin/env bash
# `macdmp reproduce --scale paper` on the one-GPU device machine, in blocks that each fit one
# lease of the machine (held 30 minutes at most, commands of under 10 minutes). Each command
# runs the work list for at most SECONDS (default 540) and stops as on SIGTERM: a training run
# saves its checkpoint, an unfinished evaluation leaves no result. Run the same command again
# (on the same warm machine) to go on; "block finished" says when the block is done.
#
#   experiments/reproduce_gpu.sh BLOCK [SECONDS]
#
# Blocks (docs/reproduction.md gives their estimated times; each is one lease):
#   baselines   allocators, MA-CQL, MA-TD3+BC and MA-DT x 3 seeds, packed, and their evaluations
#   cdmp-s0     MA-CDMP seed 0 (compiled) and its evaluations (Figs. 4, 6, 8; Fig. 7 at H = 16)
#   cdmp-s1     MA-CDMP seed 1 (compiled) and its evaluations (Fig. 9)
#   nomf-s2     MA-CDMP w/o MF and MA-CDMP seed 2, packed, and w/o MF's evaluations (Fig. 6)
#   h8-h32      MA-CDMP with H = 8 and H = 32, packed, and their evaluations (Fig. 7)
#   h64         MA-CDMP with H = 64 and its evaluation (Fig. 7)
#   new-s0      MA-Diffuser, MA-DD and MADiff seed 0, packed, and the evaluations of Fig. 4
#   new-s12     MA-Diffuser, MA-DD and MADiff seeds 1 and 2, packed (learning curves only)
#   all         whatever is left
#   smoke-gpu   the smoke scale on the GPU (a check of the GPU path: capture, packing, planning
#               on CUDA; a few minutes), brought back as $OUT/smoke-gpu.tgz
#
# The results live in docs/reproduction/paper/results (small JSON files): they travel to the
# machine with the working tree, so a block skips what earlier blocks did, and come back as
# $OUT/results.tgz. Unpack them here and rebuild the report:
#   tar xzf results.tgz -C docs/reproduction/paper
#   macdmp reproduce --scale paper --out docs/reproduction/paper --report-only
# The dataset and the run folders stay on the machine ($REPRO_WORK, default /root/repro) while
# it is held; a new lease collects the dataset again (about a minute) and retrains any run that
# a pending evaluation needs.
#
# Works from the repository root without installing the package (PYTHONPATH=src): the GPU
# machine has torch, numba, h5py and matplotlib but no package index (and Ray's wheel is larger
# than what may be carried there, so the fan-out there is packing, not Ray).
set -euo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
RES=docs/reproduction/paper
W="${REPRO_WORK:-/root/repro}"
OUT="${OUT:-$W/out}"
LIMIT="${2:-540}"
mkdir -p "$W" "$OUT" "$RES"

PACK=1
COMPILE=(--compile)
case "${1:-}" in
smoke-gpu)
  nvidia-smi -L
  rc=0
  python3 -m macdmp.cli reproduce --scale smoke --out "$W/smoke" --device cuda --pack 4 \
      --time-limit "$LIMIT" || rc=$?
  python3 -m pytest -q tests/test_reproduce.py -m gpu || rc=$?
  tar czf "$OUT/smoke-gpu.tgz" -C "$W/smoke" --exclude work .
  exit $rc ;;
baselines)
  UNITS='eval-behaviour-*,eval-carried-*,eval-equal-*,eval-proportional-*,eval-maxweight-*'
  UNITS+=',eval-backpressure-*,train-ma-cql-*,train-ma-td3bc-*,train-ma-dt-*'
  UNITS+=',eval-ma-cql-*,eval-ma-td3bc-*,eval-ma-dt-*'
  PACK=9; COMPILE=() ;;
cdmp-s0) UNITS='train-ma-cdmp-s0,eval-ma-cdmp-s0-*' ;;
cdmp-s1) UNITS='train-ma-cdmp-s1,eval-ma-cdmp-s1-*' ;;
nomf-s2) UNITS='train-ma-cdmp-nomf-s0,eval-ma-cdmp-nomf-s0-*,train-ma-cdmp-s2'; PACK=2 ;;
h8-h32) UNITS='train-ma-cdmp-h8-s0,train-ma-cdmp-h32-s0,eval-ma-cdmp-h8-*,eval-ma-cdmp-h32-*'
  PACK=2 ;;
h64) UNITS='train-ma-cdmp-h64-s0,eval-ma-cdmp-h64-*' ;;
new-s0)
  UNITS='train-ma-diffuser-s0,eval-ma-diffuser-*,train-ma-dd-s0,eval-ma-dd-*,train-madiff-s0'
  PACK=3; COMPILE=() ;;
new-s12)
  UNITS='train-ma-diffuser-s[12],train-ma-dd-s[12],train-madiff-s[12]'
  PACK=6; COMPILE=() ;;
all) UNITS='*'; PACK=2 ;;
*)
  echo "usage: $0 baselines|cdmp-s0|cdmp-s1|nomf-s2|h8-h32|h64|new-s0|new-s12|all|smoke-gpu" \
    "[SECONDS]" >&2
  exit 2 ;;
esac

nvidia-smi -L
rc=0
python3 -m macdmp.cli reproduce --scale paper --out "$RES" --work "$W" --units "$UNITS" \
    --time-limit "$LIMIT" --pack "$PACK" "${COMPILE[@]}" --collect-threads 12 || rc=$?
python3 -m macdmp.cli reproduce --scale paper --out "$RES" --work "$W" --units "$UNITS" --list \
  | awk '{print $1, $2}' | sort | uniq -c
tar czf "$OUT/results.tgz" -C "$RES" results $([ -d "$RES/failed" ] && echo failed)
ls -la "$OUT"
case $rc in
  0) echo "block finished" ;;
  75) echo "time limit reached: run the same command again (same lease) to go on" ;;
  *) echo "reproduce exited $rc (failed units are listed above)"; exit $rc ;;
esac
