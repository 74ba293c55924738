#!/usr/bin/env bash
# The paper-scale run (docs/results.md) on one GPU machine, in stages that each fit a 10-minute
# command. Long jobs run detached (setsid) between calls; `status` reports on them.
#
#   experiments/paper_run.sh setup     # GPU benchmarks, paper dataset, start both trainings
#                                      # (TRAIN_EPOCHS=10 by default: see docs/results.md)
#   experiments/paper_run.sh status    # training/evaluation progress; copies logs to $OUT
#   experiments/paper_run.sh eval      # start the evaluations (after training has finished)
#   experiments/paper_run.sh results   # result files and loss logs, as $OUT/paper-results.tgz
#
# Works from the repository root without installing the package (PYTHONPATH=src): the GPU
# machine has torch, numba, h5py and matplotlib but no package index.
set -euo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
W="${PAPER_WORK:-/root/paper}"
OUT="${OUT:-$W/out}"
mkdir -p "$W" "$OUT"
macdmp() { python3 -m macdmp.cli "$@"; }
detach() { local log=$1; shift; setsid nohup "$@" >"$log" 2>&1 < /dev/null & }

case "${1:-}" in
setup)
  nvidia-smi -L
  python3 -c "import torch, numba, numpy, h5py; print('torch', torch.__version__, 'numba', \
numba.__version__, 'numpy', numpy.__version__, 'h5py', h5py.__version__, 'cuda', torch.cuda.is_available())"
  if [ -z "${SKIP_BENCH:-}" ]; then
    python3 benchmarks/train_speed.py --quick 2>&1 | tee "$OUT/gpu_train_speed.txt"
    python3 benchmarks/plan_latency.py --quick 2>&1 | tee "$OUT/gpu_plan_latency.txt"
  fi
  [ -f "$W/paper.h5" ] || macdmp collect --preset paper --out "$W/paper.h5" --threads 8 --quiet \
      2>&1 | tee "$OUT/collect.txt"
  macdmp dataset info "$W/paper.h5" | head -12 > "$OUT/dataset_info.txt"
  # The paper preset is 100 epochs x 1,000 steps; at the measured ~14 steps/s per run (the
  # step is bound by kernel launches, docs/models.md) that is 2 hours, beyond one 30-minute
  # lease, so the lease trains TRAIN_EPOCHS epochs of the same preset.
  for v in macdmp: macdmp-nomf:--no-mf; do
    detach "$W/train-${v%%:*}.log" python3 -m macdmp.cli train --data "$W/paper.h5" \
        --out "$W/runs/${v%%:*}" --preset paper --set "n_epochs=${TRAIN_EPOCHS:-10}" \
        ${v#*:} --quiet
  done
  sleep 5; tail -n 3 "$W"/train-*.log
  ;;
status)
  for r in macdmp macdmp-nomf; do
    [ -f "$W/runs/$r/losses.jsonl" ] && { echo "$r: $(tail -n 1 "$W/runs/$r/losses.jsonl")";
      cp "$W/runs/$r/losses.jsonl" "$OUT/losses-$r.jsonl"; }
  done
  tail -n 2 "$W"/*.log 2>/dev/null || true
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
  ;;
eval)
  # Every policy sees the same held-out networks: 4 scenarios x 3 seeds x ideal/limited RF.
  mkdir -p "$W/eval"
  export OMP_NUM_THREADS=2  # seven evaluations share the machine's CPU; the models run on the GPU
  common=(--scenarios n8-2to6,n8-4to4,n9-2to7,n9-4to5 --seeds 3 --rf ideal,limited --frames 1000)
  ev() { local name=$1; shift; detach "$W/eval-$name.log" python3 -m macdmp.cli evaluate \
      "${common[@]}" "$@" --json "$W/eval/$name.json"; }
  for r in macdmp macdmp-nomf; do
    run="macdmp:$W/runs/$r"
    ev "$r-ddpm" --policy "$run,solver=ddpm"
    ev "$r-dpm" --policy "$run,solver=dpm1,steps=10" --policy "$run,solver=dpm2,steps=10" \
        --policy "$run,solver=dpm2,steps=5"
    # the levers: guidance scale (Fig. 8) and candidate plans ranked by the classifier
    ev "$r-levers" --policy "$run,solver=dpm2,guide=0" --policy "$run,solver=dpm2,guide=0.5" \
        --policy "$run,solver=dpm2,guide=2" --policy "$run,solver=dpm2,candidates=4"
  done
  ev allocators --policy behaviour --policy carried --policy equal --policy ratio \
      --policy proportional --policy maxweight --policy backpressure --policy random
  sleep 20; tail -n 2 "$W"/eval-*.log
  ;;
results)
  # one archive: the device tool brings back at most 8 files
  for r in macdmp macdmp-nomf; do cp "$W/runs/$r/losses.jsonl" "$W/eval/losses-$r.jsonl"; done
  tar czf "$OUT/paper-results.tgz" -C "$W/eval" .
  tar tzvf "$OUT/paper-results.tgz"
  ;;
*)
  echo "usage: $0 setup|status|eval|results" >&2; exit 2 ;;
esac
