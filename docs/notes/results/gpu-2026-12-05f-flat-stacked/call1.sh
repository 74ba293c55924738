#!/usr/bin/env bash
# The first call of the 2026-12-05f lease (issue 31): the flat update for stacked runs, timed
# beside the per-tensor one, profiled, then the stacked GPU tests. Run from the repository root
# on the device: bash docs/notes/results/gpu-2026-12-05f-flat-stacked/call1.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=src
nvidia-smi -L > $OUT/machine.txt; python3 -c "import torch; print(torch.__version__)" >> $OUT/machine.txt
TS="--preset paper --window 100 --repeats 3 --warmup 20"
timeout 200 python3 benchmarks/train_speed.py $TS \
  --modes captured,stacked8+streams+rows,stacked8+streams+rows+flat,stacked3+streams+rows,stacked3+streams+rows+flat,stacked8+streams+rows+flat+tf32,stacked8+streams+rows \
  --json $OUT/speed.json 2>&1 | grep -v Warning | tee $OUT/speed.txt
for u in tensors flat; do
  timeout 60 python3 benchmarks/step_profile.py --stacked 8 --update $u --top 25 --steps 10 2>&1 | grep -v Warning > $OUT/profile_$u.txt
  tail -4 $OUT/profile_$u.txt
done
timeout 240 python3 -m pytest -q -m gpu tests/test_stacked.py 2>&1 | tail -15 > $OUT/gpu_tests.txt
tail -3 $OUT/gpu_tests.txt
