#!/usr/bin/env bash
# `macdmp bench --scale paper` on the device machine, a block at a time: the machine is held 30
# minutes at most, a command 10 minutes, and nothing is kept between leases.
#
#   experiments/bench_gpu.sh FAMILIES METHODS [SECONDS] [PACK]
#
# Runs the units of those families (comma list) and learned methods (comma list, as --methods
# takes it), with the families' datasets, allocators and references, for at most SECONDS
# (default 540), then stops as on SIGTERM: a training run saves its checkpoint, an unfinished
# evaluation leaves no result. PACK (default 15) training runs go at a time: the seeds of one
# method stacked as one model, runs of different methods packed on CUDA streams (train_many).
# Call it again on the same warm machine, within its 30 s warm window, to go on from the
# checkpoints; a new lease collects the datasets again and retrains what was not finished.
#
# The committed results (docs/bench/paper/results, small JSON files) travel with the working
# tree, so a block skips every unit an earlier lease finished. The work list writes outside the
# tree ($BENCH_WORK, default /root/bench: the device machine puts the tree back as it was sent at
# the start of every call) and its results come back as $OUT/results.tgz. Unpack and rebuild:
#   tar xzf results.tgz -C docs/bench/paper
#   macdmp bench --scale paper --out docs/bench/paper --report-only
# docs/notes/bench-leases.md records which blocks ran, with their times.
#
# SCALE and RES (defaults: paper and docs/bench/$SCALE) let the mechanics be tried on the CPU at
# the smoke scale (tests/test_bench.py does). Works without installing the package.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
SECONDS_LIMIT="${3:-540}"
PACK="${4:-15}"
for v in "$SECONDS_LIMIT" "$PACK"; do
  [[ "$v" =~ ^[0-9]+$ ]] || { echo "SECONDS and PACK must be whole numbers (got '$v')" >&2; exit 2; }
done
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
SCALE="${SCALE:-paper}"
TREE_RES="${RES:-docs/bench/$SCALE}"
W="${BENCH_WORK:-/root/bench}"
OUT="${OUT:-$W/out}"
mkdir -p "$W/res/results" "$OUT"
cp -n "$TREE_RES"/results/*.json "$W/res/results/" 2>/dev/null || true  # never overwriting
command -v nvidia-smi >/dev/null && nvidia-smi -L
rc=0
python3 -m macdmp.app bench --scale "$SCALE" --families "$1" --methods "$2" --out "$W/res" \
  --work "$W/work" --pack "$PACK" --collect-threads "$(nproc)" --time-limit "$SECONDS_LIMIT" \
  --no-plots --quiet || rc=$?
tar czf "$OUT/.results.tgz.tmp" -C "$W/res" results $([ -d "$W/res/failed" ] && echo failed)
mv -f "$OUT/.results.tgz.tmp" "$OUT/results.tgz"
echo "results: $(ls "$W/res/results" | wc -l) files in $OUT/results.tgz; exit $rc (75: time limit)"
exit "$rc"
