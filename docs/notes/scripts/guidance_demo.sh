#!/usr/bin/env bash
# The guidance study at demo scale on a CPU (docs/guidance-study.md, the demo rows): the `fast`
# demo's training settings (600 steps, 2-level U-Net), 3 solver steps, 200-frame episodes.
# About 40 minutes on the 2-core machine; re-running skips what exists.
#
#   docs/notes/scripts/guidance_demo.sh [DIR]        # default /tmp/guidance-demo
set -euo pipefail
export PYTHONPATH="$PWD/src" OMP_NUM_THREADS=1
D="${1:-/tmp/guidance-demo}"
PY="${PYTHON:-python3}"
mkdir -p "$D"
macdmp() { "$PY" -m macdmp.app "$@"; }

[ -f "$D/demo.h5" ] || macdmp collect --preset demo --out "$D/demo.h5" --quiet
[ -f "$D/demo-mixed.h5" ] || macdmp collect --preset demo --quality mixed \
    --out "$D/demo-mixed.h5" --quiet
{
  for r in delay own ownnb delay-nomf ownnb-nomf mixed-delay mixed-ownnb; do
    case $r in mixed-*) data="$D/demo-mixed.h5";; *) data="$D/demo.h5";; esac
    case $r in *ownnb*) reward="own+neighbours-backlog";; *own*) reward="own-backlog";;
      *) reward="delay";; esac
    printf '[[run]]\nout = "%s"\ndata = "%s"\n' "$D/runs/$r" "$data"
    case $r in *-nomf) echo "no_mf = true";; esac
    printf 'set = { reward = "%s" }\n' "$reward"
  done
} > "$D/plan.toml"
macdmp train --plan "$D/plan.toml" --set dim_mults=1,2 lr=1e-3 n_epochs=3 steps_per_epoch=200 \
    ckpt_every=200 --quiet

R="$D/runs"
[ -f "$D/eval.json" ] || macdmp evaluate --frames 200 --quiet --json "$D/eval.json" \
    --policy "$R/delay,steps=3,label=MA-CDMP delay" \
    --policy "$R/own,steps=3,label=MA-CDMP own-backlog" \
    --policy "$R/ownnb,steps=3,label=MA-CDMP own+neighbours-backlog" \
    --policy "$R/delay-nomf,steps=3,label=MA-CDMP w/o MF delay" \
    --policy "$R/ownnb-nomf,steps=3,label=MA-CDMP w/o MF own+neighbours-backlog" \
    --policy "$R/mixed-delay,steps=3,label=MA-CDMP mixed-data delay" \
    --policy "$R/mixed-ownnb,steps=3,label=MA-CDMP mixed-data own+neighbours-backlog" \
    --policy behaviour --policy carried --policy maxweight --policy proportional \
    --policy backpressure
for r in delay own ownnb delay-nomf ownnb-nomf mixed-delay mixed-ownnb; do
  case $r in mixed-*) data="$D/demo-mixed.h5";; *) data="$D/demo.h5";; esac
  "$PY" experiments/guidance_push.py "$R/$r" --data "$data" --steps 3 --states 512 \
      --scales 0.01,0.1,1,10,100,1000 --json "$D/push-$r.json"
done
P=()
for r in delay ownnb; do for g in 0 1 10 100; do
  P+=(--policy "$R/$r,steps=3,guide=$g,label=MA-CDMP $r guide $g")
done; done
[ -f "$D/sweep.json" ] || macdmp evaluate "${P[@]}" --rf ideal --frames 200 --quiet \
    --json "$D/sweep.json"
[ -f "$D/sweep2.json" ] || macdmp evaluate --frames 200 --quiet --json "$D/sweep2.json" \
    --policy "$R/ownnb,steps=3,guide=3,label=MA-CDMP ownnb guide 3" \
    --policy "$R/ownnb,steps=3,guide=10,label=MA-CDMP ownnb guide 10" \
    --policy "$R/ownnb-nomf,steps=3,guide=10,label=MA-CDMP w/o MF ownnb guide 10" \
    --policy "$R/own,steps=3,guide=10,label=MA-CDMP own guide 10" \
    --policy "$R/delay-nomf,steps=3,guide=10,label=MA-CDMP w/o MF delay guide 10"
