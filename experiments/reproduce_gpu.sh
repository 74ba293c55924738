#!/usr/bin/env bash
# `macdmp reproduce --scale paper` on the device machine, in blocks that fit one lease of it
# (held 30 minutes at most, commands of under 10 minutes, checkpoints do not come back).
#
#   experiments/reproduce_gpu.sh BLOCK [SECONDS]     one block in the foreground
#   experiments/reproduce_gpu.sh detach CHAIN... [-- SECONDS]
#   experiments/reproduce_gpu.sh wait [SECONDS]
#
# BLOCK: runs the block's units for at most SECONDS (default 540), then stops as on SIGTERM: a
# training run saves its checkpoint, an unfinished evaluation leaves no result. Run the same
# command again (on the same warm machine) to go on; "block finished" says when it is done. A
# resumed compiled run compiles again (about 1.5 minutes), so on a machine that stays warm
# between calls `detach` is cheaper:
#
# detach: collects the dataset, then starts each CHAIN (BLOCK[+BLOCK...], run one after the
# other) on its own GPU (CUDA_VISIBLE_DEVICES; chains beyond the GPU count share them) in its
# own process session, which outlives the command (the machine keeps it until it is given back),
# with no time limit; then waits as `wait` does for at most SECONDS (default 540). `wait` waits
# for the detached chains (at most SECONDS), prints their progress and brings the results back.
# Call `wait` again within the machine's 30 s warm window to keep the chains running.
#
# Blocks (docs/notes/paper-scale-leases.md gives their measured and estimated times, and which were run):
#   baselines   allocators, MA-CQL, MA-TD3+BC and MA-DT x 3 seeds, packed, and their evaluations
#   cdmp-s0     MA-CDMP seed 0 (compiled) and its evaluations of Figs. 4 and 6 (Fig. 7: H = 16)
#   guide-s0    the guidance-scale sweep of Fig. 8 on MA-CDMP seed 0 (waits for a chain that
#               trains seed 0; trains it itself when no chain does)
#   cdmp-s1     MA-CDMP seed 1 (compiled) and its evaluations (Fig. 9)
#   cdmp-s2     MA-CDMP seed 2 (compiled; learning curves only)
#   nomf        MA-CDMP w/o MF (compiled) and its evaluations (Fig. 6)
#   steer       MA-CDMP paper-steer (compiled) and its evaluations (Fig. 4, a variant)
#   h8, h32, h64  MA-CDMP with that horizon H (compiled) and its evaluation (Fig. 7)
#   dd          MA-DD x 3 seeds, packed, and the evaluations of seed 0 (Figs. 3, 4)
#   diffuser-sN MA-Diffuser seed N (compiled); seed 0 with its evaluations (Figs. 3, 4)
#   madiff-sN   MADiff seed N (compiled; learning curves, Fig. 5)
#   early-RUN   not a unit of the work list: experiments/early_checkpoints.py train-RUN, the run
#               retrained and evaluated as Fig. 4 evaluates it when stopped at each of the steps
#               EARLY_STEPS (default 10000,100000), with hybrids of the part EARLY_SWAP (default
#               invdyn; empty: none); its files come back in results.tgz under early/. It
#               has no time limit and does not resume: run it as a chain of `detach`
#   all         whatever is left
#   =GLOBS      the units matching GLOB[,GLOB...] (`macdmp reproduce --list` shows the keys),
#               training runs packed two at a time on the GPU, captured, not compiled (two
#               MA-CDMP runs take 1.25 times as long as one captured run alone, not twice;
#               quote the globs)
#   smoke-gpu   the smoke scale on the GPU (a check of the GPU path: capture, packing, planning
#               on CUDA; a few minutes), brought back as $OUT/smoke-gpu.tgz
#   ray-check   `reproduce --ray auto` on the GPU with fractional GPUs (training 0.5, evaluations
#               0.25), the smoke units of Fig. 8; needs .raybundle carried (experiments/ray_bundle.sh)
# For example, on a 2-GPU machine: `detach cdmp-s1 nomf -- 570`, then `wait 580` twice.
#
# The results of earlier leases live in docs/reproduction/paper/results (small JSON files):
# they travel to the machine with the working tree, so a block skips what earlier blocks did.
# On the machine the work list writes to $REPRO_WORK/res-paper; its results come back as
# $OUT/results.tgz, renewed while a call waits whenever a unit finishes (a call stopped early
# still brings back what was done) and at its end. Unpack them here and rebuild the report:
#   tar xzf results.tgz -C docs/reproduction/paper
#   macdmp reproduce --scale paper --out docs/reproduction/paper --report-only
# The dataset and the run folders stay on the machine ($REPRO_WORK, default /root/repro) while
# it is held; a new lease collects the dataset again (about a minute) and retrains any run that
# a pending evaluation needs.
#
# Works from the repository root without installing the package (PYTHONPATH=src): the GPU
# machine has torch, numba, h5py and matplotlib but no package index, and Ray's wheel (79 MB)
# is larger than what may be carried there (64 MiB; a slimmed copy fits and `ray-check` runs
# it, but Ray trains each run alone), so the fan-out there is packing runs on a GPU and one
# detached chain per GPU.
# SCALE, RES (defaults: paper and docs/reproduction/paper) and POLL (seconds between looks at the
# chains, default 15) let the mechanics be tried on the CPU at the smoke scale
# (tests/test_reproduce.py does).
set -euo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
SCALE="${SCALE:-paper}"
TREE_RES="${RES:-docs/reproduction/$SCALE}"
W="${REPRO_WORK:-/root/repro}"
OUT="${OUT:-$W/out}"
CHAINS="$W/chains"
THREADS="$(nproc)"
POLL="${POLL:-15}"  # seconds between looks at the detached chains
# The device machine puts the working tree back as it was sent at the start of every call,
# which deletes result files written into it by an earlier call of the same lease. So the work
# list's results live outside the tree, in $W, seeded from the tree's (never overwriting).
RES="$W/res-$SCALE"
mkdir -p "$W" "$OUT" "$RES/results" "$CHAINS"
cp -n "$TREE_RES"/results/*.json "$RES/results/" 2>/dev/null || true
# An earlier lease's dataset record without its file (a fresh machine) would let `detach` skip
# the collection and leave every chain to collect it again, side by side into one file (it
# did, on 2026-11-30: twice 222 s instead of 41 s once). Without a dataset here, it is pending.
compgen -G "$W/data-*.h5" >/dev/null || rm -f "$RES/results/data.json"

seconds() {  # seconds NAME VALUE: VALUE must be a whole number of seconds
  [[ "$2" =~ ^[0-9]+$ ]] || { echo "$1: SECONDS must be a whole number (got '$2')" >&2; exit 2; }
}

reproduce() {
  python3 -m macdmp.app reproduce --scale "$SCALE" --out "$RES" --work "$W" "$@"
}

# block_units BLOCK: sets UNITS, PACK, COMPILE and AFTER (a unit another chain may be making)
block_units() {
  PACK=1; COMPILE=(--compile); AFTER=""; EARLY=""
  case "$1" in
  baselines)
    UNITS='eval-behaviour-*,eval-carried-*,eval-equal-*,eval-proportional-*,eval-maxweight-*'
    UNITS+=',eval-backpressure-*,train-ma-cql-*,train-ma-td3bc-*,train-ma-dt-*'
    UNITS+=',eval-ma-cql-*,eval-ma-td3bc-*,eval-ma-dt-*'
    PACK=9; COMPILE=() ;;
  cdmp-s0) UNITS='train-ma-cdmp-s0,eval-ma-cdmp-s0-paper-*,eval-ma-cdmp-s0-n*' ;;
  guide-s0) UNITS='eval-ma-cdmp-s0-guide*'; AFTER=train-ma-cdmp-s0 ;;
  cdmp-s1) UNITS='train-ma-cdmp-s1,eval-ma-cdmp-s1-*' ;;
  cdmp-s2) UNITS='train-ma-cdmp-s2' ;;
  nomf) UNITS='train-ma-cdmp-nomf-s0,eval-ma-cdmp-nomf-s0-*' ;;
  steer) UNITS='train-ma-cdmp-steer-s0,eval-ma-cdmp-steer-s0-*' ;;
  h8 | h32 | h64) UNITS="train-ma-cdmp-$1-s0,eval-ma-cdmp-$1-s0-*" ;;
  dd) UNITS='train-ma-dd-*,eval-ma-dd-*'; PACK=3; COMPILE=() ;;
  diffuser-s[0-9]) UNITS="train-ma-diffuser-${1#diffuser-},eval-ma-diffuser-${1#diffuser-}-*" ;;
  madiff-s[0-9]) UNITS="train-madiff-${1#madiff-}" ;;
  early-?*) UNITS=""; EARLY="train-${1#early-}" ;;
  all) UNITS='*'; PACK=2 ;;
  =*) UNITS="${1#=}"; PACK=2; COMPILE=() ;;
  *)
    echo "unknown block '$1': one of baselines, cdmp-s0, guide-s0, cdmp-s1, cdmp-s2, nomf," \
      "steer, h8, h32, h64, dd, diffuser-sN, madiff-sN, early-RUN, all, =GLOB[,GLOB...]" >&2
    return 2 ;;
  esac
}

chain_alive() {  # chain_alive NAME: its detached process is still running
  local f="$CHAINS/$1.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

others_alive() {  # a detached chain other than $1 still runs
  local f n
  for f in "$CHAINS"/*.pid; do
    [ -e "$f" ] || continue
    n="$(basename "$f" .pid)"
    [ "$n" != "$1" ] && chain_alive "$n" && return 0
  done
  return 1
}

# run_block BLOCK [SECONDS] [CHAIN]: the block's units (for at most SECONDS); exits as reproduce
run_block() {
  block_units "$1" || return 2
  if [ -n "$AFTER" ]; then
    while [ ! -f "$RES/results/$AFTER.json" ] && others_alive "${3:-}"; do sleep "$POLL"; done
  fi
  if [ -n "$EARLY" ]; then
    local swap=()
    [ -n "${EARLY_SWAP-invdyn}" ] && swap=(--swap "${EARLY_SWAP-invdyn}")
    reproduce --units data --collect-threads "$THREADS"  # the chains' dataset (made once)
    python3 experiments/early_checkpoints.py "$EARLY" --scale "$SCALE" --work "$W" \
      --out "$RES/early" --steps "${EARLY_STEPS:-10000,100000}" "${swap[@]}"
    return
  fi
  local limit=()
  [ -n "${2:-}" ] && limit=(--time-limit "$2")
  reproduce --units "$UNITS" --pack "$PACK" "${COMPILE[@]}" --collect-threads "$THREADS" \
    "${limit[@]}"
}

# bring_back: $OUT/results.tgz, replaced whole (a call killed while it writes keeps the last one)
bring_back() {
  tar czf "$OUT/.results.tgz.tmp" -C "$RES" results $([ -d "$RES/failed" ] && echo failed) \
    $([ -d "$RES/early" ] && echo early)
  mv -f "$OUT/.results.tgz.tmp" "$OUT/results.tgz"
}

summary() {
  reproduce --list | awk '{print $1, $2}' | sort | uniq -c
}

# wait_chains SECONDS: until every detached chain has ended or SECONDS have passed
# The results come back after each unit that finishes, not only at the end, so that a call the
# device machine stops early (its device time spent) still brings back what was done.
wait_chains() {
  local t0=$SECONDS f n alive seen="" now
  while :; do
    now="$( (ls -l --time-style=+%s "$RES"/{results,failed,early} 2>/dev/null || true) | md5sum)"
    [ "$now" != "$seen" ] && { bring_back; seen="$now"; }
    alive=""
    for f in "$CHAINS"/*.pid; do
      [ -e "$f" ] || continue
      n="$(basename "$f" .pid)"
      chain_alive "$n" && alive+=" $n"
    done
    [ -z "$alive" ] && break
    [ $((SECONDS - t0)) -ge "$1" ] && break
    sleep "$POLL"
  done
  for f in "$CHAINS"/*.log; do
    [ -e "$f" ] || continue
    n="$(basename "$f" .log)"
    echo "== chain $n: $(chain_alive "$n" && echo running || cat "$CHAINS/$n.rc" 2>/dev/null)"
    # progress bars rewrite their line with \r: show the last lines as the terminal would
    tr '\r' '\n' <"$f" | grep -v '^\s*$' | grep -v '^train\|^evaluate\|it/s\]$' | tail -n 8
    chain_alive "$n" && tr '\r' '\n' <"$f" | grep -v '^\s*$' | tail -n 1
  done
  summary
  bring_back
  if [ -n "$alive" ]; then
    echo "chains still running:$alive (call wait again within the warm window)"
  else
    echo "all chains ended"
  fi
}

case "${1:-}" in
smoke-gpu)
  nvidia-smi -L
  rc=0
  python3 -m macdmp.app reproduce --scale smoke --out "$W/smoke" --device cuda --pack 4 \
      --time-limit "${2:-540}" || rc=$?
  python3 -m pytest -q tests/test_reproduce.py -m gpu || rc=$?
  tar czf "$OUT/smoke-gpu.tgz" -C "$W/smoke" --exclude work .
  exit $rc ;;
ray-check)
  if [ ! -f .raybundle/ray.tar.xz ]; then
    echo "ray-check: carry .raybundle (made by experiments/ray_bundle.sh)" >&2
    exit 2
  fi
  mkdir -p /tmp/site
  tar xJf .raybundle/ray.tar.xz -C /tmp/site
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .raybundle/*.whl
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
  python3 -c "import ray, torch; print('ray', ray.__version__, 'GPUs', torch.cuda.device_count())"
  python3 -m macdmp.app reproduce --scale smoke --out "$W/ray-smoke" --ray auto --device cuda \
    --units 'eval-ma-cdmp-s0-guide*' --train-gpus 0.5 --eval-gpus 0.25 --no-plots
  exit ;;
chain)  # (internal) chain NAME BLOCK[+BLOCK...]: what `detach` runs in each process session
  rc=0
  for b in ${3//+/ }; do
    echo "-- block $b ($(date -u +%T))"
    run_block "$b" "" "$2" || { rc=$?; echo "block $b exited $rc"; }
  done
  echo "$rc" >"$CHAINS/$2.rc"
  echo "-- chain ended ($(date -u +%T)), exit $rc"
  exit $rc ;;
detach)
  shift
  chains=(); limit=540
  while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then limit="${2:-540}"; seconds detach "$limit"; break; fi
    for b in ${1//+/ }; do block_units "$b" || exit 2; done
    chains+=("$1"); shift
  done
  [ ${#chains[@]} -gt 0 ] || { echo "detach: name at least one chain" >&2; exit 2; }
  t0=$SECONDS
  ngpu="$(nvidia-smi -L 2>/dev/null | grep -c GPU || true)"
  nvidia-smi -L || true
  reproduce --units data --collect-threads "$THREADS"  # once, before the chains share it
  rm -f "$CHAINS"/*
  i=0
  for c in "${chains[@]}"; do
    name="c$i-${c//[^A-Za-z0-9-]/_}"
    gpu=$(( ngpu > 0 ? i % ngpu : 0 ))
    CUDA_VISIBLE_DEVICES="$gpu" setsid nohup bash "$0" chain "$name" "$c" \
      >"$CHAINS/$name.log" 2>&1 </dev/null &
    echo $! >"$CHAINS/$name.pid"
    echo "chain $name on GPU $gpu: pid $!"
    i=$((i + 1))
  done
  wait_chains $(( limit - (SECONDS - t0) > 30 ? limit - (SECONDS - t0) : 30 ))
  exit 0 ;;
wait)
  seconds wait "${2:-540}"
  wait_chains "${2:-540}"
  exit 0 ;;
"") echo "usage: $0 BLOCK [SECONDS] | detach CHAIN... [-- SECONDS] | wait [SECONDS]" \
      "| smoke-gpu [SECONDS] | ray-check" >&2
  exit 2 ;;
esac

# one block in the foreground
block_units "$1" || exit 2
seconds "$1" "${2:-540}"
nvidia-smi -L || true
rc=0
run_block "$1" "${2:-540}" || rc=$?
summary
bring_back
ls -la "$OUT"
case $rc in
  0) echo "block finished" ;;
  75) echo "time limit reached: run the same command again (same lease) to go on" ;;
  *) echo "reproduce exited $rc (failed units are listed above)"; exit $rc ;;
esac
