"""Paper-steer against the other policies of Fig. 4, by the report's paired rule (figures.ahead).

Run from the repository root: PYTHONPATH=src python docs/results/gpu-2026-11-30f/steer_standing.py
"""

import json
from macdmp.reproduce.figures import FIG4_METRICS, ahead

R = "docs/reproduction/paper/results/"


def row(k):
    return json.load(open(R + k + ".json"))["rows"][0]


for rf in ("ideal", "limited"):
    me = row(f"eval-ma-cdmp-steer-s0-paper-{rf}")
    for o in ("ma-cdmp-s0", "ma-cql-s0", "ma-td3bc-s0", "ma-dt-s0", "carried"):
        r = row(f"eval-{o}-paper-{rf}")
        print(
            rf,
            o,
            *(
                f"{n}: {'ahead' if ahead(me, r, k, s) else 'behind' if ahead(r, me, k, s) else 'level'}"
                for k, n, s in FIG4_METRICS
            ),
            sep=" | ",
        )
