set -e
M=/work/main/.venv/bin/macdmp
date
OMP_NUM_THREADS=1 $M train --data load100-family.h5 --out fs-base --preset fast-steer --steps 6000 --device cpu --eval-every 0 --quiet > fs-base.log 2>&1 &
# fs-invmf ran with the option's first form, inv_mf=true, which is inv_mf=both today
OMP_NUM_THREADS=1 $M train --data load100-family.h5 --out fs-invmf --preset fast-steer --steps 6000 --device cpu --eval-every 0 --set inv_mf=both --quiet > fs-invmf.log 2>&1 &
wait
date
