"""What the stacked step copies, per update (macdmp.methods.stacked.UPDATES), on the CPU.

    PYTHONPATH=src python docs/notes/results/cpu-2026-12-05e-flat-stacked/count_copies.py

Two paper-preset MA-CDMP runs (batch 8, streams=false) stacked, one step after one warm-up
step, under torch.profiler: the operator events that lay a gradient out again (`clone` under
autograd's gradient accumulation or a view's backward, `new_empty_strided` + `copy_` under the
accumulation) and the concatenation, counted per step; and every operator whose count differs.
Counts, not times: the CPU runs multi-tensor kernels one tensor at a time, so the update's own
operators differ by hundreds here (on a GPU they are a few launches either way).
"""

import collections
import tempfile

from torch.profiler import ProfilerActivity, profile

from macdmp.methods import Trainer, make_config
from macdmp.methods.stacked import UPDATES, StackedTrainer
from macdmp.planner.synthetic import SyntheticWindows

counts = {}
relayouts = {}
for update in UPDATES:
    cfg = make_config("ma-cdmp", "paper", max_steps=10**9, streams=False, batch_size=8)
    data = SyntheticWindows(cfg.horizon, cfg.gamma, reward=cfg.reward)
    with tempfile.TemporaryDirectory() as root:
        trs = [Trainer("ma-cdmp", cfg.replace(seed=k), data, f"{root}/{k}", "cpu") for k in (0, 1)]
        st = StackedTrainer(trs, update=update)
        st.train_step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            st.train_step()
        c, r = collections.Counter(), collections.Counter()
        for e in prof.events():
            c[e.name] += 1
            parent = e.cpu_parent.name if e.cpu_parent else ""
            if e.name in ("aten::clone", "aten::new_empty_strided") and (
                "AccumulateGrad" in parent or parent == "aten::reshape"
            ):
                r[f"{e.name} under {parent}"] += 1
        counts[update], relayouts[update] = c, r
        st.close()
        for tr in trs:
            tr.close()

print("| gradients laid out again, per step | " + " | ".join(UPDATES) + " |")
print("|---|" + "---|" * len(UPDATES))
for key in sorted(set().union(*relayouts.values())):
    print(f"| {key} | " + " | ".join(str(relayouts[u][key]) for u in UPDATES) + " |")
print()
print("| operator (count per step differs) | " + " | ".join(UPDATES) + " |")
print("|---|" + "---|" * len(UPDATES))
for name in sorted(set().union(*counts.values())):
    row = [counts[u][name] for u in UPDATES]
    if len(set(row)) > 1:
        print(f"| `{name}` | " + " | ".join(map(str, row)) + " |")
