#!/usr/bin/env bash
# temporary: the first call of the 2026-12-05b lease (not committed)
set -u
export PYTHONUNBUFFERED=1
nvidia-smi -L > $OUT/machine.txt; python3 -c "import torch; print(torch.__version__)" >> $OUT/machine.txt
TS="--preset paper --window 100 --repeats 3 --warmup 20"
echo "== new code" 
PYTHONPATH=src timeout 200 python3 benchmarks/train_speed.py $TS --modes captured,stacked8+streams+native,stacked8+streams+rows,stacked3+streams+rows,stacked8+streams+native,captured+streams+flat --json $OUT/new.json 2>&1 | tee $OUT/new.txt
echo "== old code (HEAD b933791)"
PYTHONPATH=old/src timeout 100 python3 old/benchmarks/train_speed.py $TS --modes captured,stacked8+streams,stacked3+streams --json $OUT/old.json 2>&1 | tee $OUT/old.txt
for n in native rows; do
  PYTHONPATH=src timeout 70 python3 benchmarks/step_profile.py --stacked 8 --norm $n --top 25 --steps 10 2>&1 | grep -v Warning > $OUT/profile_$n.txt
done
PYTHONPATH=src timeout 150 python3 -m pytest -q -m gpu tests/test_stacked.py -x 2>&1 | tail -15 > $OUT/gpu_tests.txt
tail -3 $OUT/gpu_tests.txt
