"""Two looks at the paper-scale results (docs/reproduction/paper/results) beyond the report.

  standing POLICY [--against A,B,...]
      POLICY's Fig. 4 evaluations (training seed 0, or an allocator) against each other policy's,
      metric by metric under both RF, by the report's paired rule (reproduce.figures.ahead):
      ahead, level or behind. Default --against: every other policy with both evaluations.
      POLICY and A, B, ... may also be evaluation result files made elsewhere with Fig. 4's
      protocol (as experiments/early_checkpoints.py writes them), compared under their own RF.
  rows POLICY ...
      The Fig. 4 rows of policies (names as for standing) or of result files, under each RF they
      have: reward, throughput, delay and loss rate (mean +- std over the held-out seeds) and
      the decision time per frame.
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


def _rows(policy: str) -> list[tuple[str, dict]]:
    """(name, row) of a policy's Fig. 4 evaluations, or of a result file's rows."""
    if policy.endswith(".json"):
        return [(Path(policy).stem, r) for r in json.loads(Path(policy).read_text())["rows"]]
    known = _fig4_policies()
    if policy not in known:
        raise SystemExit(
            f"policy {policy!r}: no Fig. 4 evaluations under {RESULTS}; have: {', '.join(known)}"
        )
    return [(policy, _row(policy, rf)) for rf in RFS]


def standing(policy: str, against: list[str] | None) -> None:
    mine = {r["rf"]: r for _, r in _rows(policy)}
    others = (
        [x for o in against for x in _rows(o)]
        if against
        else [x for o in _fig4_policies() if o != policy for x in _rows(o)]
    )
    for rf in RFS:
        if rf not in mine:
            continue
        for name, r in (x for x in others if x[1]["rf"] == rf):
            words = [f"{n}: {_word(mine[rf], r, k, s)}" for k, n, s in FIG4_METRICS]
            print(rf, name, *words, sep=" | ")


def rows(policies: list[str]) -> None:
    every = [x for p in policies for x in _rows(p)]
    width = max(len(n) for n, _ in every)
    for rf in RFS:
        for name, r in (x for x in every if x[1]["rf"] == rf):
            print(
                f"{rf:7s} | {name:{width}s} | reward {r['avg_reward']:7.2f} +- "
                f"{r['avg_reward_std']:.2f} | {r['throughput_mbps']:.3f} Mbps | delay "
                f"{r['mean_delay_ms']:6.2f} +- {r['mean_delay_ms_std']:.2f} ms | loss "
                f"{r['loss_rate']:.4f} | {r['act_ms_per_frame']:5.1f} ms/frame"
            )


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
    r = sub.add_parser("rows")
    r.add_argument("policies", nargs="+")
    c = sub.add_parser("curves")
    c.add_argument("globs", nargs="*", default=["train-*"])
    a = ap.parse_args()
    if a.cmd == "standing":
        standing(a.policy, a.against)
    elif a.cmd == "rows":
        rows(a.policies)
    else:
        curves(a.globs)


if __name__ == "__main__":
    main()
