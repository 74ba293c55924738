"""Two looks at the paper-scale results (docs/reproduction/paper/results) beyond the report.

  standing POLICY [--against A,B,...]
      POLICY's Fig. 4 evaluations (training seed 0, or an allocator) against each other policy's,
      metric by metric under both RF, by the report's paired rule (reproduce.figures.ahead):
      ahead, level or behind. Default --against: every other policy with both evaluations.
      POLICY may also be an evaluation result file made elsewhere with Fig. 4's protocol (as
      experiments/early_checkpoints.py writes them): compared under its own RF.
  curves [GLOB ...]
      Each training run's in-loop learning curve (evals of train-*.json): its peak and the step,
      its last evaluation and its mean. Default GLOB: train-*.

E.g., from the repository root:
  PYTHONPATH=src python experiments/paper_results.py standing ma-cdmp-steer-s0
  PYTHONPATH=src python experiments/paper_results.py curves 'train-ma-cdmp-*' 'train-madiff-*'
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from macdmp.reproduce.figures import FIG4_METRICS, ahead

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "reproduction" / "paper" / "results"
RFS = ("ideal", "limited")


def _row(policy: str, rf: str) -> dict:
    return json.loads((RESULTS / f"eval-{policy}-paper-{rf}.json").read_text())["rows"][0]


def _fig4_policies() -> list[str]:
    stems = (p.stem for p in RESULTS.glob("*.json"))
    names = {re.fullmatch(r"eval-(.+)-paper-(ideal|limited)", s) for s in stems}
    found = sorted({m.group(1) for m in names if m})
    return [p for p in found if all((RESULTS / f"eval-{p}-paper-{rf}.json").exists() for rf in RFS)]


def _word(a: dict, b: dict, key: str, sign: int) -> str:
    return "ahead" if ahead(a, b, key, sign) else "behind" if ahead(b, a, key, sign) else "level"


def standing(policy: str, against: list[str] | None) -> None:
    known = _fig4_policies()
    mine = {}
    if policy.endswith(".json"):  # a result file made elsewhere: its one RF
        for row in json.loads(Path(policy).read_text())["rows"]:
            mine[row["rf"]] = row
    for p in [*([] if mine else [policy]), *(against or [])]:
        if p not in known:
            raise SystemExit(
                f"policy {p!r}: no Fig. 4 evaluations under {RESULTS}; have: {', '.join(known)}"
            )
    others = against or [p for p in known if p != policy]
    for rf in RFS:
        if mine and rf not in mine:
            continue
        me = mine[rf] if mine else _row(policy, rf)
        for o in others:
            r = _row(o, rf)
            words = [f"{n}: {_word(me, r, k, s)}" for k, n, s in FIG4_METRICS]
            print(rf, o, *words, sep=" | ")


def curves(globs: list[str]) -> None:
    files = [f for g in globs for f in sorted(RESULTS.glob(g + ".json"))]
    if not files:
        raise SystemExit(f"GLOB {' '.join(globs)}: no result files under {RESULTS}")
    for f in files:
        ev = json.loads(f.read_text()).get("evals") or []
        if not ev:
            continue
        peak = max(ev, key=lambda e: e["avg_reward"])
        mean = sum(e["avg_reward"] for e in ev) / len(ev)
        print(
            f"{f.stem}: peak {peak['avg_reward']:.2f} at step {peak['step']}, "
            f"last {ev[-1]['avg_reward']:.2f} at step {ev[-1]['step']}, mean {mean:.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("standing")
    s.add_argument("policy")
    s.add_argument("--against", type=lambda v: [x for x in v.split(",") if x], default=None)
    c = sub.add_parser("curves")
    c.add_argument("globs", nargs="*", default=["train-*"])
    a = ap.parse_args()
    if a.cmd == "standing":
        standing(a.policy, a.against)
    else:
        curves(a.globs)


if __name__ == "__main__":
    main()
