"""The work list of ``macdmp reproduce``: units of work and the figures they feed.

A :class:`Unit` is one dataset collection, one training run or one evaluation. Its ``key`` names
its result file (``OUT/results/KEY.json``); its ``params`` (JSON) say everything that determines
it (the scale's settings, the method's full configuration, the policy and its options, the
scenarios, seeds and frames), so a result made with other settings is recognised as stale; its
``needs`` are the units whose products (the dataset file, a run folder) it reads.

A :class:`Figure` is one of the paper's Figs. 3-9: the claim, the rule that turns the numbers
into a verdict, and its series, each a list of unit keys. A method that is not registered
(``macdmp.methods.base``) has no units: its series says "not available" and the figure and its
verdict are made from what exists.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from macdmp.diffusion.sampler import DEFAULT_GUIDE
from macdmp.methods.base import get_method, make_config, method_names, plugin_methods
from macdmp.methods.config import config_fields
from macdmp.planner.models import STEER_CHANGES
from macdmp.reproduce.scales import Scale, get_scale
from macdmp.sim.config import PAPER_SCENARIOS, PRESETS, ScenarioConfig, load_scenario
from macdmp.sim.families import FAMILIES

# The paper's methods (Figs. 3-5): registry name -> label. MA-CDMP first.
METHODS = {
    "ma-cdmp": "MA-CDMP",
    "ma-cql": "MA-CQL",
    "ma-td3bc": "MA-TD3+BC",
    "ma-diffuser": "MA-Diffuser",
    "ma-dt": "MA-DT",
    "ma-dd": "MA-DD",
}
CTDE_METHOD = ("madiff", "MADiff")  # Fig. 5
# The non-learning allocators beside them in Fig. 4 (policies/registry.py)
ALLOCATORS = ("behaviour", "carried", "equal", "proportional", "maxweight", "backpressure")
RF_CONDITIONS = ("ideal", "limited")
# MA-CDMP's planner defaults (planner/policy.py): options equal to these are left out of keys
PLANNER_DEFAULTS = {"solver": "dpm2", "guide": DEFAULT_GUIDE, "candidates": 1}
# Fig. 6: (nodes, high-rate nodes) of each network size; 8 and 9 are the dataset's scenarios
NODE_SCENARIOS = {
    6: ((6, 2), (6, 3)),
    8: ((8, 2), (8, 4)),
    9: ((9, 2), (9, 4)),
    12: ((12, 3), (12, 6)),
    16: ((16, 4), (16, 8)),
}
TRAINED_NODE_COUNTS = (8, 9)
# How the verdicts compare two evaluations on the same held-out networks (figures.ahead)
AHEAD = (
    "(ahead: on the same held-out networks, the per-seed difference has a mean larger than "
    "its standard deviation; a smaller difference is level)"
)
# How the learning-curve verdicts compare two methods' training seeds (figures.ahead_of_seeds)
AHEAD_SEEDS = (
    "(ahead: the means over training seeds differ by more than the larger of the two "
    "methods' standard deviations over their seeds; a smaller difference is level)"
)


@dataclass(frozen=True)
class Unit:
    key: str
    kind: str  # data | train | eval
    params: dict[str, Any]
    needs: tuple[str, ...] = ()
    label: str = ""

    @property
    def digest(self) -> str:
        """A hash of the params: a result with another digest was made with other settings."""
        text = json.dumps(self.params, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Series:
    label: str
    keys: list[str] = field(default_factory=list)
    x: list[Any] = field(default_factory=list)  # x of each key (sweeps); empty otherwise
    missing: str = ""  # why the series has no units ("" when it has them)
    group: str = "method"  # method | allocator | ablation | variant (reported, not judged)


@dataclass
class Figure:
    name: str
    title: str
    claim: str
    rule: str
    kind: str  # curves | bars | nodes | sweep
    series: list[Series]
    xlabel: str = ""
    notes: str = ""


@dataclass
class Plan:
    scale: Scale
    units: dict[str, Unit]
    figures: list[Figure]

    def figure(self, name: str) -> Figure:
        for f in self.figures:
            if f.name == name:
                return f
        raise KeyError(name)

    def needed(self, figures: list[str] | None = None, units: list[str] | None = None) -> list[str]:
        """Keys of every unit the figures use (with ``units``: those of them, or of what they
        need, that match a glob; ``data`` alone is the dataset), with what they need,
        dependencies first."""
        chosen = [f for f in self.figures if figures is None or f.name in figures]
        roots = [k for f in chosen for s in f.series for k in s.keys]
        if units is not None:
            every = self.needed(figures)
            roots = [k for k in every if any(fnmatch.fnmatchcase(k, u) for u in units)]
        order: list[str] = []
        seen: set[str] = set()

        def visit(k: str) -> None:
            if k in seen:
                return
            seen.add(k)
            for d in self.units[k].needs:
                visit(d)
            order.append(k)

        for k in roots:
            visit(k)
        return order


def node_scenarios(n_nodes: int) -> list[ScenarioConfig]:
    """Fig. 6's networks of ``n_nodes`` nodes. 8 and 9 nodes are the paper's presets; the other
    sizes are built the same way (sim/network.py): the same area, range, radio and frame, and
    rates set by the same load rule, sum_i rate_i x mean_hops_i = load x M x L with high-rate
    nodes at rate_ratio times the low rate, so every size loads the frame equally."""
    if n_nodes not in NODE_SCENARIOS:
        raise ValueError(f"nodes: {n_nodes} is not one of {tuple(NODE_SCENARIOS)}")
    out = []
    for n, high in NODE_SCENARIOS[n_nodes]:
        name = f"n{n}-{high}to{n - high}"
        out.append(PRESETS.get(name) or ScenarioConfig(name=name, n_nodes=n, n_high=high))
    return out


def scenario_set(name: str) -> list[ScenarioConfig]:
    """``paper``: the dataset's four scenarios; ``nN``: Fig. 6's networks of N nodes; the name
    of a scenario family (``macdmp.sim.families``): its scenarios."""
    if name == "paper":
        return [PRESETS[s] for s in PAPER_SCENARIOS]
    if name.startswith("n") and name[1:].isdigit():
        return node_scenarios(int(name[1:]))
    if name in FAMILIES:
        return [load_scenario(s) for s in FAMILIES[name].scenarios]
    raise ValueError(
        f"scenario set: {name!r} is neither 'paper', 'nN' nor a family ({', '.join(FAMILIES)})"
    )


def train_config(scale: Scale, method: str, seed: int, **extra: Any) -> dict[str, Any]:
    """The full configuration (a dict) of one training run at this scale."""
    fields = config_fields(method)
    overrides = dict(scale.common)
    overrides.update({k: v for k, v in scale.sized.items() if k in fields})
    overrides.update(scale.per_method.get(method, {}))
    overrides.update(extra)
    overrides["seed"] = seed
    bad = sorted(set(overrides) - set(fields))
    if bad:
        raise ValueError(f"{method}: configuration has no field(s) {bad}")
    cfg = make_config(method, scale.preset, **overrides)
    get_method(method)  # importable
    return cfg.to_dict()


class _Builder:
    def __init__(self, scale: Scale, registered: tuple[str, ...]) -> None:
        self.scale = scale
        self.registered = registered
        self.units: dict[str, Unit] = {}
        self.add(
            Unit(
                "data",
                "data",
                {
                    "kind": "data",
                    "scale": scale.name,
                    "scenarios": list(PAPER_SCENARIOS),
                    "trajectories": scale.trajectories,
                    "frames": scale.frames,
                    "seed": 0,
                    "behaviour_noise": 0.5,
                },
                label="offline dataset (behaviour policy)",
            )
        )

    def add(self, unit: Unit) -> str:
        return add_unit(self.units, unit)

    def base_horizon(self) -> int:
        return int(train_config(self.scale, "ma-cdmp", 0)["horizon"])

    def train(
        self,
        method: str,
        seed: int,
        no_mf: bool = False,
        horizon: int | None = None,
        steer: bool = False,
    ):
        extra: dict[str, Any] = {}
        tag = ""
        if no_mf:
            extra.update(get_method(method).no_mf_changes)
            tag += "-nomf"
        if steer:  # the guidance study's variant: paper-steer's changes at this scale
            extra.update(STEER_CHANGES)
            tag += "-steer"
        if horizon is not None and horizon != self.base_horizon():
            extra["horizon"] = horizon
            tag += f"-h{horizon}"
        key = f"train-{method}{tag}-s{seed}"
        cfg = train_config(self.scale, method, seed, **extra)
        label = {**METHODS, CTDE_METHOD[0]: CTDE_METHOD[1]}.get(method, method)
        label += " w/o MF" if no_mf else ""
        label += " (paper-steer)" if steer else ""
        if horizon is not None:
            label += f" (H={cfg['horizon']})"
        params = {
            "kind": "train",
            "scale": self.scale.name,
            "method": method,
            "preset": self.scale.preset,
            "config": cfg,
        }
        return self.add(Unit(key, "train", params, ("data",), label=f"{label}, seed {seed}"))

    def evaluate(
        self, policy: str, sset: str, rf: str, options: dict[str, Any] | None = None
    ) -> str:
        """An evaluation of an allocator (``policy`` a name) or a run (``policy`` a train key)."""
        return self.add(eval_unit(self.scale, self.units, policy, sset, rf, options))


def add_unit(units: dict[str, Unit], unit: Unit) -> str:
    """Add ``unit`` to a work list (``units``, which holds what it needs), its inputs recorded."""
    # what a unit reads is part of what determines it: a changed dataset or run makes
    # every result made from it stale
    unit.params["inputs"] = {k: units[k].digest for k in unit.needs}
    old = units.get(unit.key)
    if old is not None and old.digest != unit.digest:
        raise RuntimeError(f"work list: two different units share the key {unit.key}")
    units[unit.key] = unit
    return unit.key


def eval_unit(
    scale: Scale,
    units: dict[str, Unit],
    policy: str,
    sset: str,
    rf: str,
    options: dict[str, Any] | None = None,
) -> Unit:
    """The evaluation of an allocator (``policy`` a name) or a run (``policy`` the key of a
    training unit in ``units``) on the scenario set ``sset`` (``scenario_set``) at this scale."""
    run = policy if policy.startswith("train-") else None
    opts = {}
    if run is not None:
        opts = dict(options or {})
        if units[run].params["method"] == "ma-cdmp":
            opts = {**scale.planner, **opts}  # None: leave the option out
            opts = {k: v for k, v in opts.items() if v is not None and PLANNER_DEFAULTS.get(k) != v}
    tag = policy.removeprefix("train-") + "".join(
        f"-{k}{v:g}" if isinstance(v, float) else f"-{k}{v}" for k, v in sorted(opts.items())
    )
    key = f"eval-{tag}-{sset}-{rf}"
    params = {
        "kind": "eval",
        "scale": scale.name,
        "policy": {"run": run, "options": opts} if run else {"name": policy},
        "scenarios": sset,
        "scenario_names": [c.name for c in scenario_set(sset)],
        "rf": rf,
        "seeds": scale.eval_seeds,
        "frames": scale.eval_frames,
    }
    needs = (run,) if run else ()
    label = (units[run].label if run else policy) + (f" {opts}" if opts else "")
    return Unit(key, "eval", params, needs, label=f"{label}: {sset}, {rf} RF")


def _unavailable(name: str) -> str:
    return f"not available: method {name!r} is not registered (macdmp.methods.base)"


def build_plan(scale: str | Scale, registered: tuple[str, ...] | None = None) -> Plan:
    """Every unit and figure of the paper's experiments at this scale."""
    sc = get_scale(scale) if isinstance(scale, str) else scale
    reg = method_names() if registered is None else registered
    b = _Builder(sc, reg)
    figures = []
    seed0 = sc.seeds[0]

    # methods registered from outside the package (plugins) join Fig. 4's bars
    plugins = [m for m in plugin_methods() if m in reg and m not in METHODS]
    broken: dict[str, str] = {}  # registered methods whose configuration cannot be built
    for m in (*METHODS, CTDE_METHOD[0], *plugins):
        if m in reg:
            try:
                train_config(sc, m, seed0)
            except (ValueError, TypeError, ImportError) as exc:
                broken[m] = (
                    f"not available: the {sc.name} configuration of {m!r} is refused ({exc}); "
                    "set its overrides in reproduce/scales.py (per_method)"
                )

    def why_missing(m: str) -> str:
        return _unavailable(m) if m not in reg else broken.get(m, "")

    def curves(methods: dict[str, str]) -> list[Series]:
        out = []
        for m, label in methods.items():
            if why_missing(m):
                out.append(Series(label, missing=why_missing(m)))
                continue
            out.append(Series(label, [b.train(m, s) for s in sc.seeds], list(sc.seeds)))
        return out

    seeds_txt = f"{len(sc.seeds)} training seed{'s' * (len(sc.seeds) > 1)}"
    figures.append(
        Figure(
            "fig3",
            "Average reward during training: MA-CDMP and the DTDE baselines",
            "MA-CDMP reaches the highest average reward and converges more smoothly than "
            "MA-CQL, MA-TD3+BC, MA-Diffuser, MA-DT and MA-DD.",
            "Final reward: the mean over seeds of the last in-loop evaluation. Roughness: the "
            "mean absolute change of the average reward between consecutive evaluations, "
            "averaged over seeds. Highest: MA-CDMP's final reward is ahead of every other "
            f"method's {AHEAD_SEEDS}. Smoothest: MA-CDMP's roughness (one value per seed) is "
            "lower than every other method's by the same margin over the seeds' spread. Holds "
            "if MA-CDMP has the highest final reward and is the smoothest of the methods "
            "present; holds partly if one of the two; does not hold if neither.",
            "curves",
            curves(METHODS),
            xlabel="training step",
            notes=f"The trainer's in-loop evaluation (evals.jsonl) of the EMA policy, {seeds_txt}"
            ": line = mean, band = min..max over the seeds. Held-out networks (seeds 2^31 + "
            "10^6 onward), ideal RF.",
        )
    )

    bars: list[Series] = []
    for m, label in METHODS.items():
        if why_missing(m):
            bars.append(Series(label, missing=why_missing(m)))
            continue
        run = b.train(m, seed0)
        bars.append(Series(label, [b.evaluate(run, "paper", rf) for rf in RF_CONDITIONS]))
    if not why_missing("ma-cdmp"):
        run = b.train("ma-cdmp", seed0, steer=True)
        keys = [b.evaluate(run, "paper", rf) for rf in RF_CONDITIONS]
        bars.append(Series("MA-CDMP (paper-steer)", keys, group="variant"))
    for m in plugins:  # methods registered from outside the package, beside the others
        if broken.get(m):
            bars.append(Series(m, missing=broken[m], group="plugin"))
            continue
        run = b.train(m, seed0)
        keys = [b.evaluate(run, "paper", rf) for rf in RF_CONDITIONS]
        bars.append(Series(m, keys, group="plugin"))
    for a in ALLOCATORS:
        keys = [b.evaluate(a, "paper", rf) for rf in RF_CONDITIONS]
        bars.append(Series(a, keys, group="allocator"))
    figures.append(
        Figure(
            "fig4",
            "QoS under ideal and limited RF: every method and the allocators",
            "MA-CDMP has the best throughput, delay and packet loss of the compared methods "
            "under both ideal and limited RF.",
            "Six conditions: throughput (higher is better), delay and loss rate (lower is "
            "better), each under ideal and limited RF. MA-CDMP wins a condition when it is "
            f"ahead of every other learned method present {AHEAD}. Holds if it wins all six; "
            "holds partly if it wins at least three; does not hold otherwise. Its standing "
            "against the allocators is reported beside it.",
            "bars",
            bars,
            notes=f"The run of training seed {seed0} of each method, evaluated with the paper's "
            f"protocol: the four dataset scenarios x {sc.eval_seeds} held-out seeds x "
            f"{sc.eval_frames} frames. MA-CDMP (paper-steer), this project's variant (the "
            "backlog return, classifier-free guidance, warm starts; docs/guidance-study.md), is "
            "shown beside the others and is not part of the verdict"
            + ("; so are the methods registered as plugins." if plugins else "."),
        )
    )

    name, label = CTDE_METHOD
    figures.append(
        Figure(
            "fig5",
            "Average reward during training: MA-CDMP (DTDE) against MADiff (CTDE)",
            "MA-CDMP beats the CTDE MADiff: a higher average reward, reached faster, with less "
            "variance.",
            "Three parts: a higher final reward (the last evaluation); faster: a higher mean "
            "reward over the whole curve (area under the learning curve, per seed); less "
            "variance: a smaller standard deviation over seeds, averaged over the evaluations "
            "(needs two seeds or more). The first two count when MA-CDMP is ahead "
            f"{AHEAD_SEEDS}; the third when, paired over the evaluation steps both curves "
            "have, MA-CDMP's seed standard deviation is smaller by more than the standard "
            "deviation of the difference. Holds if every part that can be computed holds; holds "
            "partly if some do; does not hold if none does.",
            "curves",
            curves({"ma-cdmp": "MA-CDMP", name: label}),
            xlabel="training step",
            notes=f"As Fig. 3, {seeds_txt}.",
        )
    )

    node_series = []
    for no_mf, lab in ((False, "MA-CDMP"), (True, "MA-CDMP w/o MF")):
        run = b.train("ma-cdmp", seed0, no_mf=no_mf)
        keys = [b.evaluate(run, f"n{n}", "ideal") for n in sc.node_counts]
        node_series.append(
            Series(lab, keys, list(sc.node_counts), group="ablation" if no_mf else "method")
        )
    unseen = [n for n in sc.node_counts if n not in TRAINED_NODE_COUNTS]
    figures.append(
        Figure(
            "fig6",
            "Average reward against the number of nodes: MA-CDMP and w/o MF",
            "MA-CDMP beats MA-CDMP w/o MF at every node count, including network sizes never "
            "seen in training.",
            f"At each node count, MA-CDMP wins when its average reward is ahead of w/o MF's "
            f"{AHEAD}. Holds if it wins at every node count; holds partly "
            "if it wins at more than half of them; does not hold otherwise.",
            "nodes",
            node_series,
            xlabel="nodes",
            notes=f"Trained on the 8- and 9-node dataset; {unseen} nodes never seen in "
            "training. Two networks per size (few and many high-rate nodes), rates from the "
            f"same load rule (docs/guide/reproducing.md), ideal RF, {sc.eval_seeds} held-out seeds "
            f"x {sc.eval_frames} frames.",
        )
    )

    hs = [b.train("ma-cdmp", seed0, horizon=h) for h in sc.horizons]
    figures.append(
        Figure(
            "fig7",
            "Average reward against the planning horizon H",
            "The planning horizon H has an interior optimum: longer horizons help, then hurt.",
            "Holds if the best mean reward is at neither the shortest nor the longest H and is "
            "above both ends by more than the larger standard deviation over the held-out seeds; "
            "holds partly if the best is interior and above one end by that margin; does not "
            "hold if the best is at an end or within that margin of both ends (level).",
            "sweep",
            [Series("MA-CDMP", [b.evaluate(k, "paper", "ideal") for k in hs], list(sc.horizons))],
            xlabel="planning horizon H (frames)",
            notes=f"One training run per H (seed {seed0}), ideal RF.",
        )
    )

    main = b.train("ma-cdmp", seed0)
    figures.append(
        Figure(
            "fig8",
            "Average reward against the guidance scale zeta",
            "A larger guidance scale helps modestly, and the results are robust to it.",
            f"Helps: the average reward at the largest scale is ahead of that at the smallest "
            f"{AHEAD}. Robust: "
            "the spread (max - min) of the means over the scales is at most 10% of their mean "
            "magnitude, and the scale does something measurable: at least one scale is ahead of "
            "or behind the smallest by the same rule (a knob that changes nothing is not "
            "robust, it is idle). Holds if both; holds partly if one; does not hold if "
            "neither.",
            "sweep",
            [
                Series(
                    "MA-CDMP",
                    [b.evaluate(main, "paper", "ideal", {"guide": g}) for g in sc.guide_scales],
                    list(sc.guide_scales),
                )
            ],
            xlabel="guidance scale zeta",
            notes=f"One trained model (seed {seed0}); the scale is a planner option at "
            "evaluation, ideal RF.",
        )
    )

    # Fig. 9 evaluates another seed's model than Fig. 8 where there is one: on the GPU each
    # block of work then trains one run and evaluates it within one lease
    # (docs/guide/reproducing.md)
    seed9 = sc.seeds[1] if len(sc.seeds) > 1 else seed0
    run9 = b.train("ma-cdmp", seed9)
    ddpm = b.evaluate(run9, "paper", "ideal", {"solver": "ddpm", "steps": None})
    dpm = [b.evaluate(run9, "paper", "ideal", {"solver": "dpm1", "steps": s}) for s in sc.dpm_steps]
    k = train_config(sc, "ma-cdmp", seed9)["n_diffusion_steps"]
    figures.append(
        Figure(
            "fig9",
            "Average reward against the number of sampling steps",
            "Fewer DPM-Solver steps cost little: DPM-Solver at 20, 10, 5 and 3 steps stays close "
            f"to DDPM with all K = {k} steps.",
            "The reference is the best sampler measured (the highest mean reward, DDPM or "
            "DPM-Solver). The cost of a DPM-Solver setting is its drop below the reference, "
            "the mean of the per-seed differences plus their standard deviation (the same "
            "held-out networks), relative to the reference's magnitude. Holds if every setting "
            "costs at most 10%; holds partly if the settings of 10 steps or more do; does not "
            "hold otherwise.",
            "sweep",
            [Series("MA-CDMP", [ddpm, *dpm], [f"DDPM {k}", *(f"DPM {s}" for s in sc.dpm_steps)])],
            xlabel="sampler and steps",
            notes=f"One trained model (seed {seed9}, K = {k}), first-order DPM-Solver as in "
            "the paper, ideal RF; the decision time per frame is drawn beside it.",
        )
    )
    return Plan(sc, b.units, figures)


FIGURE_NAMES = ("fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9")


def parse_only(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in FIGURE_NAMES]
    if bad or not names:
        raise ValueError(f"--only: {bad or text!r} not allowed; use a comma list of {FIGURE_NAMES}")
    return names
