#!/usr/bin/env bash
# The paper-scale MA-CDMP run (docs/results.md) on one GPU machine, in commands that each fit
# the 10-minute limit of the lent GPU machine. Training is one `macdmp train --plan` of both
# runs (MA-CDMP and w/o MF) packed on the GPU; each `train` stage runs it for at most SECONDS and
# then sends it SIGTERM, which saves both checkpoints; the next `train` stage resumes them.
#
#   docs/notes/scripts/paper_run.sh collect            # the paper dataset (about 1 minute)
#   docs/notes/scripts/paper_run.sh train SECONDS      # train (or resume) for at most SECONDS
#   docs/notes/scripts/paper_run.sh eval               # the paper's protocol, both runs + allocators
#   docs/notes/scripts/paper_run.sh results            # small result files into $OUT
#   docs/notes/scripts/paper_run.sh baselines SECONDS  # MA-CQL, MA-TD3+BC, MA-DT packed (resumable)
#   docs/notes/scripts/paper_run.sh eval-baselines     # the paper's protocol for the three
#   docs/notes/scripts/paper_run.sh diffusers SECONDS  # MA-Diffuser, MA-DD, MADiff packed (resumable)
#   docs/notes/scripts/paper_run.sh eval-diffusers     # the paper's protocol for those three
#
# Works from the repository root without installing the package (PYTHONPATH=src): the GPU
# machine has torch, numba, h5py and matplotlib but no package index.
set -euo pipefail
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
W="${PAPER_WORK:-/root/paper}"
OUT="${OUT:-$W/out}"
STEPS="${STEPS:-100000}"
mkdir -p "$W" "$OUT"
macdmp() { python3 -m macdmp.app "$@"; }

case "${1:-}" in
collect)
  nvidia-smi -L
  [ -f "$W/paper.h5" ] || macdmp collect --preset paper --out "$W/paper.h5" --threads 12 --quiet
  macdmp dataset info "$W/paper.h5" | head -12
  ;;
train)
  cat > "$W/plan.toml" <<TOML
# both runs of the paper preset, packed on one GPU; a learning curve every 10,000 steps
[[run]]
out = "$W/runs/macdmp"
preset = "paper"
steps = $STEPS
set = { eval_every = 10000 }
[[run]]
out = "$W/runs/macdmp-nomf"
preset = "paper"
no_mf = true
steps = $STEPS
set = { eval_every = 10000 }
TOML
  rc=0
  timeout -s TERM "${2:-540}" python3 -m macdmp.app train --data "$W/paper.h5" \
      --plan "$W/plan.toml" --compile --quiet || rc=$?
  for r in macdmp macdmp-nomf; do echo "$r: $(tail -n 1 "$W/runs/$r/losses.jsonl")"; done
  case $rc in 0) echo "training finished";; 124|130) echo "stopped; run again to resume";;
    *) exit $rc;; esac
  ;;
eval)
  # Every policy sees the same held-out networks: 4 scenarios x 3 seeds x ideal/limited RF.
  common=(--scenarios n8-2to6,n8-4to4,n9-2to7,n9-4to5 --seeds 3 --rf ideal,limited --frames 1000)
  macdmp evaluate "${common[@]}" --policy "$W/runs/macdmp" --policy "$W/runs/macdmp-nomf" \
      --policy behaviour --policy carried --policy maxweight --policy proportional \
      --policy backpressure --force --json "$OUT/paper100k.json" --quiet 2>/dev/null \
    || macdmp evaluate "${common[@]}" --policy "$W/runs/macdmp" --policy "$W/runs/macdmp-nomf" \
      --policy behaviour --policy carried --policy maxweight --policy proportional \
      --policy backpressure --force --json "$OUT/paper100k.json"
  ;;
results)
  for r in macdmp macdmp-nomf; do
    cp "$W/runs/$r/losses.jsonl" "$OUT/losses-$r.jsonl"
    cp "$W/runs/$r/evals.jsonl" "$OUT/evals-$r.jsonl"
  done
  ls -la "$OUT"
  ;;
baselines)
  printf '[[run]]\nout = "%s"\nmethod = "%s"\npreset = "paper"\n' \
      "$W/runs/ma-cql" ma-cql "$W/runs/ma-td3bc" ma-td3bc "$W/runs/ma-dt" ma-dt > "$W/base.toml"
  rc=0
  timeout -s TERM "${2:-540}" python3 -m macdmp.app train --data "$W/paper.h5" \
      --plan "$W/base.toml" --capture "${CAPTURE:-auto}" --quiet || rc=$?
  for r in ma-cql ma-td3bc ma-dt; do echo "$r: $(tail -n 1 "$W/runs/$r/losses.jsonl")"; done
  case $rc in 0) echo "training finished";; 124|130) echo "stopped; run again to resume";;
    *) exit $rc;; esac
  ;;
eval-baselines)
  mkdir -p "$W/eval"
  common=(--scenarios n8-2to6,n8-4to4,n9-2to7,n9-4to5 --seeds 3 --frames 1000)
  for r in ma-cql ma-td3bc ma-dt; do for rf in ideal limited; do
    macdmp evaluate "${common[@]}" --rf $rf --policy "$W/runs/$r" \
        --force --json "$W/eval/eval-$r-$rf.json" > "$W/eval/eval-$r-$rf.txt" 2>&1 &
  done; done
  wait
  for r in ma-cql ma-td3bc ma-dt; do cp "$W/runs/$r/losses.jsonl" "$W/eval/losses-$r.jsonl"; done
  tar czf "$OUT/baselines.tgz" -C "$W/eval" .
  ;;
diffusers)
  # the diffusion baselines of part 2, packed on one GPU, a learning curve every 10,000 steps
  # (Fig. 3 and 5); each stage stops after SECONDS with SIGTERM (checkpoints saved), the next
  # stage resumes. CUDA graphs but no --compile: compilation would be paid at every resume.
  : > "$W/diffusers.toml"
  for r in ma-diffuser ma-dd madiff; do
    printf '[[run]]\nout = "%s"\nmethod = "%s"\npreset = "paper"\nsteps = %s\n%s\n' \
        "$W/runs/$r" $r "$STEPS" 'set = { eval_every = 10000 }' >> "$W/diffusers.toml"
  done
  rc=0
  timeout -s TERM "${2:-540}" python3 -m macdmp.app train --data "$W/paper.h5" \
      --plan "$W/diffusers.toml" --capture "${CAPTURE:-auto}" --quiet || rc=$?
  for r in ma-diffuser ma-dd madiff; do echo "$r: $(tail -n 1 "$W/runs/$r/losses.jsonl")"; done
  case $rc in 0) echo "training finished";; 124|130) echo "stopped; run again to resume";;
    *) exit $rc;; esac
  ;;
eval-diffusers)
  # 6 evaluations (3 methods x ideal/limited RF) sharing the GPU; each JSON row holds the
  # QoS and act_ms_per_frame, the decision time of a frame for all 102 agents of its RF
  mkdir -p "$W/eval-diff"
  common=(--scenarios n8-2to6,n8-4to4,n9-2to7,n9-4to5 --seeds 3 --frames 1000)
  for r in ma-diffuser ma-dd madiff; do for rf in ideal limited; do
    macdmp evaluate "${common[@]}" --rf $rf --policy "$W/runs/$r" \
        --force --json "$W/eval-diff/eval-$r-$rf.json" > "$W/eval-diff/eval-$r-$rf.txt" 2>&1 &
  done; done
  wait
  for r in ma-diffuser ma-dd madiff; do
    cp "$W/runs/$r/losses.jsonl" "$W/eval-diff/losses-$r.jsonl"
    cp "$W/runs/$r/evals.jsonl" "$W/eval-diff/evals-$r.jsonl" 2>/dev/null || true
  done
  tar czf "$OUT/diffusers.tgz" -C "$W/eval-diff" .
  ;;
*)
  echo "usage: $0 collect|train SECONDS|eval|results|baselines SECONDS|eval-baselines|" \
       "diffusers SECONDS|eval-diffusers" >&2
  exit 2 ;;
esac
