set -e
M=/work/main/.venv/bin/macdmp
S=n8-2to6-load100,n8-4to4-load100,n9-2to7-load100,n9-4to5-load100
date
$M train --data load100-family.h5 --out fs-invnow --preset fast-steer --steps 6000 --device cpu --eval-every 0 --set inv_mf=now --quiet > fs-invnow.log 2>&1
date
$M evaluate --scenarios $S --policy fs-invnow,label=fast-steer+inv_mf=now --rf ideal,limited --seeds 3 --frames 1000 --json pilot2.json --quiet > pilot2-eval.txt 2>&1
date
