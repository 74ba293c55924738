"""`macdmp bench`: the work list per family, the seed ranges, model selection on the validation
seeds, the rules of the three answers, the cells that say why they are empty, the leaderboard
rebuilt from the committed result files, and the smoke scale end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_reproduce import gpu_script_env

from macdmp.app.main import main
from macdmp.bench.leaderboard import NO, NOT_ANSWERED, PARTLY, YES, write_report
from macdmp.bench.plan import BENCH_METHODS, LEARNED, build_bench
from macdmp.bench.scales import SCALES
from macdmp.data.collect import SEED_STRIDE
from macdmp.methods.base import get_method, make_config
from macdmp.methods.checkpoint import read_checkpoint
from macdmp.methods.trainer import read_evals
from macdmp.policies.allocators import DEPLOYABLE, REFERENCES
from macdmp.policies.episodes import LOSS_AWARE
from macdmp.reproduce.units import product_path
from macdmp.reproduce.worklist import Store, run_local
from macdmp.sim.families import FAMILIES
from macdmp.sim.seeds import (
    TEST_SEEDS,
    TRAIN_SEED_LIMIT,
    VALIDATION_SEED_BASE,
    eval_seeds,
    seed_range,
    validation_seeds,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "bench"


# -- the work list ------------------------------------------------------------------------------
def test_smoke_plan_has_every_family_method_seed_and_allocator():
    b = build_bench("smoke")
    sc, units = b.scale, b.plan.units
    assert b.families == ["paper", "load100", "sessions"] and len(sc.seeds) == 3
    assert list(b.methods) == list(BENCH_METHODS)  # every method, %BC and the variants
    for fam in b.families:
        data = units[f"data-{fam}"].params
        assert data["scenarios"] == list(FAMILIES[fam].scenarios)
        mix = list(FAMILIES[fam].behaviour)
        assert data["policies"] == ([] if mix == ["behaviour:0.5"] else mix)
        for r in b.rows:
            cell = b.cells[(r.name, fam, "ideal")]
            if cell.missing:
                assert cell.missing.startswith("not run: ") and not cell.best
                continue
            if r.kind != LEARNED:
                assert units[cell.best[0]].params["policy"] == {"name": r.name}
                continue
            assert len(cell.runs) == len(cell.best) == len(cell.last) == 3
            for run, best, last in zip(cell.runs, cell.best, cell.last, strict=True):
                p = units[run].params
                assert p["data"] == f"data-{fam}" and units[run].needs == (f"data-{fam}",)
                assert p["config"]["eval_every"] > 0  # the in-loop validation keeps best.pt
                assert units[best].params["policy"]["options"]["checkpoint"] == "best"
                assert "checkpoint" not in units[last].params["policy"]["options"]
                assert units[best].params["scenarios"] == fam
    rows = {r.name: r.kind for r in b.rows}
    assert [n for n, k in rows.items() if k == "deployable"] == list(DEPLOYABLE)
    assert [n for n, k in rows.items() if k == "reference"] == list(REFERENCES)
    cfg = units["train-paper-bc-filtered-s0"].params["config"]
    assert (
        cfg["filtered"] is True and units["train-paper-bc-s0"].params["config"]["filtered"] is False
    )
    assert units["train-paper-ma-cdmp-nomf-s1"].params["config"]["use_mf"] is False
    # at the smoke scale fast-steer is paper-steer (the smoke sizes replace its architecture)
    assert "paper-steer" in b.cells[("fast-steer", "paper", "ideal")].missing


def test_paper_scale_settings():
    b = build_bench("paper")
    units = b.plan.units
    assert b.families == list(FAMILIES) and b.scale.rfs == ("ideal", "limited")
    assert not any(c.missing for c in b.cells.values())
    for name, preset in (("ma-cdmp", "paper"), ("paper-steer", "paper-steer"),
                         ("fast-steer", "fast-steer")):  # fmt: skip
        cfg = units[f"train-load100-{name}-s2"].params["config"]
        want = make_config("ma-cdmp", preset, max_steps=100_000, eval_every=10_000,
                           eval_seeds=2, eval_frames=1000, seed=2).to_dict()  # fmt: skip
        assert cfg == want
    # the adaptive study's preset, and its w/o MF twin with nothing left that reads the field
    top = units["train-sessions-top-steer-s0"].params["config"]
    twin = units["train-sessions-top-steer-nomf-s0"].params["config"]
    assert (top["filtered"], top["inv_mf"], top["use_mf"]) == (True, "now", True)
    assert "inv_mf" not in twin  # omitted from the dict at its default, "none"
    assert twin == {**{k: v for k, v in top.items() if k != "inv_mf"}, "use_mf": False}
    for name in BENCH_METHODS:
        cfg = units[f"train-paper-{name}-s0"].params["config"]
        assert cfg["max_steps"] == 100_000 and cfg["eval_every"] == 10_000
    ev = units["eval-sessions-madiff-s1-best-limited"].params
    assert (ev["seeds"], ev["frames"], ev["rf"]) == (3, 1000, "limited")
    fam = FAMILIES["large"]
    data = units["data-large"].params
    assert (data["trajectories"], data["frames"]) == (fam.trajectories, fam.frames)


def test_options_name_the_allowed_values(capsys, tmp_path):
    out = str(tmp_path / "out")
    assert main(["bench", "--families", "paper,nope", "--out", out, "--list"]) == 2
    assert "--families: nope not allowed; use a comma list of paper," in capsys.readouterr().err
    assert main(["bench", "--methods", "xx", "--out", out, "--list"]) == 2
    assert "--methods: xx not allowed; use a comma list of ma-cdmp," in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any work
    with pytest.raises(ValueError, match="--scale: 'big' is not one of smoke, demo, paper"):
        build_bench("big")


def test_unregistered_method_says_why():
    reg = ("ma-cdmp", "bc", "ma-cql")
    b = build_bench("smoke", ["paper"], ["ma-cdmp", "madiff", "bc"], registered=reg)
    why = b.cells[("madiff", "paper", "ideal")].missing
    assert why == "not run: method 'madiff' is not registered (macdmp.methods.base)"
    assert not any(k.startswith("train-paper-madiff") for k in b.plan.units)


@pytest.mark.parametrize("scale", list(SCALES))
def test_validation_episodes_are_as_long_as_the_test_s(scale):
    """The in-loop evaluations that choose best.pt run episodes of the test's length (shorter
    ones favoured policies whose backlog grows: docs/guide/bench.md, model selection)."""
    b = build_bench(scale)
    train = next(u for u in b.plan.units.values() if u.kind == "train")
    test = next(u for k, u in b.plan.units.items() if k.endswith("-best-ideal"))
    assert train.params["config"]["eval_frames"] == test.params["frames"] > 0


def test_a_family_is_a_scenario_set():
    b = build_bench("smoke", ["sessions"], ["bc"])
    ev = b.plan.units["eval-sessions-maxweight-ideal"].params
    assert ev["scenario_names"] == list(FAMILIES["sessions"].scenarios)


# -- seeds and model selection ------------------------------------------------------------------
def test_training_validation_and_test_seeds_never_overlap():
    assert TRAIN_SEED_LIMIT <= min(eval_seeds(1)) and max(eval_seeds(5, TEST_SEEDS - 5)) < (
        VALIDATION_SEED_BASE
    )
    with pytest.raises(ValueError, match="validation range starts there"):
        eval_seeds(2, TEST_SEEDS - 1)
    for sc in SCALES.values():
        base = sc.base
        b = build_bench(sc)
        test = set(eval_seeds(base.eval_seeds))
        val = set(validation_seeds(base.common["eval_seeds"]))
        train: set[int] = set()
        for fam in b.families:
            d = b.plan.units[f"data-{fam}"].params
            assert d["trajectories"] <= SEED_STRIDE
            train |= {d["seed"] * SEED_STRIDE + k for k in range(d["trajectories"])}
        assert not (train & test or train & val or test & val)
        assert {seed_range(s) for s in train} == {"training"}
        assert {seed_range(s) for s in test} == {"test"}
        assert {seed_range(s) for s in val} == {"validation"}


@pytest.mark.parametrize("stacked", [False, True], ids=["alone", "stacked"])
def test_selected_checkpoint_is_chosen_on_validation_results_only(tmp_path, monkeypatch, stacked):
    """The trainer's in-loop evaluations see validation networks only, and best.pt is the one
    of the evaluation with the lowest loss-aware delay, whatever comes later; also for runs
    trained stacked (two seeds, pack 2), each with its own best."""
    import macdmp.methods.trainer as trainer

    seen: list[int] = []
    # alone: the first evaluation (step 20) is the better one; stacked, the runs evaluate in
    # turn after each step: seed 0 is best at step 20, seed 1 at step 40
    delays = iter([5.0, 9.0, 9.0, 5.0] if stacked else [5.0, 9.0])

    def fake_run_groups(groups, policy, frames, *a, **kw):
        v = next(delays)
        out = []
        for _cfg, seeds in groups:
            seen.extend(seeds)
            one = np.full(len(seeds), v)
            out.append(SimpleNamespace(avg_reward=-one, mean_delay_ms=one, throughput_mbps=one,
                                       loss_rate=0 * one, **{LOSS_AWARE: one}))  # fmt: skip
        return out

    monkeypatch.setattr(trainer, "run_groups", fake_run_groups)
    b = build_bench("smoke", ["paper"], ["bc"])
    store, work = Store(tmp_path / "out"), tmp_path / "work"
    runs = [f"train-paper-bc-s{s}" for s in ((0, 1) if stacked else (0,))]
    out = run_local(b.plan, store, work, ["data-paper", *runs], "cpu", pack=2, quiet=True)
    assert sorted(out.ran) == ["data-paper", *runs]
    assert seen and {seed_range(s) for s in seen} == {"validation"}
    for key, (step, value) in zip(runs, [(20, 5.0), (40, 5.0)], strict=False):
        run = product_path(b.plan.units[key], work)
        evals = read_evals(run)
        assert [e[LOSS_AWARE] for e in evals if e["step"] == step] == [value]
        best = read_checkpoint(run / "best.pt")
        assert best["step"] == step and best["selected"]["seeds"] == "validation"
        assert read_checkpoint(run / "checkpoint.pt")["step"] == 40
        assert store.read(key)["best"] == {"value": value, "step": step}
        assert store.read(key)["trained"] == ("stacked" if stacked else "packed")


# -- the answers' rules, on made-up results -----------------------------------------------------
def _fake(bench, out: Path, value) -> Store:
    """Result files for every unit of ``bench``: ``value(row, fam, seed, which)`` gives the
    loss-aware delay on each held-out network (seed and which are None for an allocator)."""
    store = Store(out)
    units = bench.plan.units
    for (row, fam, rf), cell in bench.cells.items():
        for which in ("best", "last"):
            for i, key in enumerate(getattr(cell, which)):
                seed = i if cell.runs else None
                v = list(value(row, fam, seed, which if cell.runs else None))
                r = {"policy": row, "rf": rf, LOSS_AWARE: float(np.mean(v)),
                     LOSS_AWARE + "_std": float(np.std(v)), LOSS_AWARE + "_seeds": v}  # fmt: skip
                store.write(units[key], {"rows": [r]})
        for run in cell.runs:
            store.write(units[run], {"step": 40, "best": {"step": 20, "value": 1.0}})
    for u in units.values():
        if u.kind == "data":
            store.write(u, {})
    return store


def _bench():
    return build_bench("smoke", ["paper"], ["ma-cdmp", "ma-cdmp-nomf", "bc", "ma-cql"])


def _values(bc=8.0, mf_gain=1.0, central=8.0, noise=(0.1, -0.1)):
    alloc = {"maxweight": 10.0, "proportional": 10.5, "centralized": central}

    def value(row, fam, seed, which):
        if seed is None:
            return [alloc.get(row, 20.0) + n for n in noise]
        base = {"bc": bc, "ma-cql": 15.0, "ma-cdmp-nomf": 12.0}.get(row)
        if row == "ma-cdmp":  # its own noise on the networks: the pairs' spread
            base, noise_ = 12.0 - mf_gain, noise[::-1]
        else:
            noise_ = noise
        return [base + 0.05 * seed + n for n in noise_]

    return value


def test_answers_follow_their_rules(tmp_path):
    b = _bench()
    _fake(b, tmp_path / "a", _values())
    a = write_report(b, tmp_path / "a", plots=False)["answers"]["paper"]
    assert a["beats_allocator"]["answer"] == YES and a["beats_allocator"]["which"] == ["BC"]
    assert "`maxweight`" in a["beats_allocator"]["text"]
    assert a["mean_field"]["answer"] == YES and a["mean_field"]["which"] == ["MA-CDMP"]
    assert a["to_centralized"]["answer"] == "level" and a["to_centralized"]["which"] == ["BC"]
    # 8% below the allocator is not 10%; the mean field level within the pairs' spread
    _fake(b, tmp_path / "b", _values(bc=9.2, mf_gain=0.05, central=6.0, noise=(0.5, -0.5)))
    a = write_report(b, tmp_path / "b", plots=False)["answers"]["paper"]
    assert a["beats_allocator"]["answer"] == NO and a["beats_allocator"]["which"] == []
    assert a["mean_field"]["answer"] == NO and "MA-CDMP: level" in a["mean_field"]["text"]
    assert a["to_centralized"]["answer"] == "above" and a["to_centralized"]["gap"] > 0.5
    # a missing cell: no answer that reads it, and the cell says why
    store = Store(tmp_path / "b")
    store.path("eval-paper-bc-s1-best-ideal").unlink()
    store.fail(b.plan.units["eval-paper-bc-s1-best-ideal"], "RuntimeError: boom")
    rec = write_report(b, tmp_path / "b", plots=False)
    assert rec["cells"]["BC"]["paper"] == (
        "not run: 1 of 3 evaluations have no current result (eval-paper-bc-s1-best-ideal "
        "failed (RuntimeError: boom))"
    )
    a = rec["answers"]["paper"]
    assert a["beats_allocator"]["answer"] == NOT_ANSWERED and "BC" in a["beats_allocator"]["text"]
    # a cell none of whose evaluations has run shares one short reason with every such cell
    for s in range(3):
        store.path(f"eval-paper-bc-s{s}-best-ideal").unlink(missing_ok=True)
    (tmp_path / "b" / "failed" / "eval-paper-bc-s1-best-ideal.json").unlink()
    rec = write_report(b, tmp_path / "b", plots=False)
    assert rec["cells"]["BC"]["paper"] == (
        "not run: not run yet (none of its 3 evaluations has a result)"
    )
    assert a["mean_field"]["answer"] == NO  # reads only MA-CDMP and w/o MF


def test_mean_field_partly_and_stale_results(tmp_path):
    b = build_bench("smoke", ["paper"], ["ma-cdmp", "ma-cdmp-nomf", "paper-steer",
                                         "paper-steer-nomf"])  # fmt: skip

    def value(row, fam, seed, which):
        if seed is None:
            return [10.0, 10.2]
        base = {"ma-cdmp": 11.0, "ma-cdmp-nomf": 12.0, "paper-steer": 12.5}.get(row, 12.0)
        return [base + 0.05 * seed, base - 0.05 * seed]

    _fake(b, tmp_path, value)
    a = write_report(b, tmp_path, plots=False)["answers"]["paper"]["mean_field"]
    assert a["answer"] == PARTLY and a["which"] == ["MA-CDMP"]
    assert "MA-CDMP paper-steer: behind" in a["text"]
    # a result made with other settings is stale: left out unless asked for
    res = json.loads(Store(tmp_path).path("eval-paper-ma-cdmp-s0-best-ideal").read_text())
    res["digest"] = "0" * 16
    Store(tmp_path).path("eval-paper-ma-cdmp-s0-best-ideal").write_text(json.dumps(res))
    rec = write_report(b, tmp_path, plots=False)
    assert "is stale" in rec["cells"]["MA-CDMP"]["paper"]
    assert rec["answers"]["paper"]["mean_field"]["answer"] == NOT_ANSWERED
    again = write_report(b, tmp_path, plots=False, use_stale=True)
    assert again["answers"]["paper"]["mean_field"]["answer"] == PARTLY


# -- committed results and the smoke scale end to end --------------------------------------------
COMMITTED = sorted(p.parent for p in DOCS.glob("*/answers.json"))


def _rebuild(folder: Path, tmp: Path) -> dict:
    rec = json.loads((folder / "answers.json").read_text())
    shutil.copytree(folder / "results", tmp / "results")
    bench = build_bench(rec["scale"], rec["families"], rec["methods"])
    return write_report(bench, tmp, plots=False, use_stale=True)


def test_committed_smoke_results_exist():
    assert (DOCS / "smoke" / "answers.json").is_file(), "docs/bench/smoke: rerun the smoke bench"


@pytest.mark.parametrize("folder", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_results_rebuild_to_the_same_answers(folder, tmp_path):
    """The leaderboard rebuilt from the committed result files alone gives the committed
    answers and cells."""
    committed = json.loads((folder / "answers.json").read_text())
    rebuilt = _rebuild(folder, tmp_path)
    assert rebuilt["answers"] == committed["answers"]
    assert rebuilt["cells"] == committed["cells"]
    brief = (tmp_path / "leaderboard.md").read_text()
    assert brief == (folder / "leaderboard.md").read_text()


def test_the_readme_shows_the_committed_paper_scale_leaderboard():
    readme = (DOCS.parents[1] / "README.md").read_text()
    start = readme.index("<!-- leaderboard: a copy of docs/bench/paper/leaderboard.md")
    block = readme[readme.index("\n", start) + 1 : readme.index("<!-- /leaderboard -->")]
    assert block == (DOCS / "paper" / "leaderboard.md").read_text(), (
        "README.md: copy docs/bench/paper/leaderboard.md between the leaderboard markers"
    )


def _cells_filled_or_marked(rec: dict) -> None:
    for row, cells in rec["cells"].items():
        for col, text in cells.items():
            if text.startswith("not run: "):
                assert len(text) > len("not run: ") + 10, (row, col, text)
            else:
                mean, _, sd = text.partition(" ± ")
                assert float(mean) > 0 and sd, (row, col, text)


@pytest.mark.slow
def test_smoke_bench_end_to_end_then_no_work(tmp_path, capsys):
    out = tmp_path / "smoke"
    assert main(["bench", "--scale", "smoke", "--out", str(out), "--quiet"]) == 0
    rec = json.loads((out / "answers.json").read_text())
    assert rec["families"] == ["paper", "load100", "sessions"]
    assert set(rec["answers"]) == set(rec["families"])
    _cells_filled_or_marked(rec)
    # every learned method is in the table: run, or marked with the reason
    labels = {m.label for m in BENCH_METHODS.values()}
    assert labels <= set(rec["cells"])
    report = (out / "report.md").read_text()
    for png in ["heatmap.png", *(f"bars-{f}.png" for f in rec["families"])]:
        assert (out / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in report
    for answers in rec["answers"].values():
        assert set(answers) == {"beats_allocator", "mean_field", "to_centralized"}
        assert all(a["answer"] != NOT_ANSWERED for a in answers.values())
    # a second run does no work
    results = sorted(out.glob("results/*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in results}
    capsys.readouterr()
    assert main(["bench", "--scale", "smoke", "--out", str(out), "--quiet"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    # the leaderboard rebuilt from the result files alone, without the work folder
    shutil.rmtree(out / "work")
    again = tmp_path / "again"
    shutil.copytree(out / "results", again / "results")
    assert main(["bench", "--scale", "smoke", "--out", str(again), "--report-only"]) == 0
    rebuilt = json.loads((again / "answers.json").read_text())
    assert rebuilt["answers"] == rec["answers"] and rebuilt["cells"] == rec["cells"]


@pytest.mark.slow
def test_ray_runs_a_family_s_units(tmp_path):
    pytest.importorskip("ray")
    from macdmp.reproduce.worklist import run_ray, to_run

    b = build_bench("smoke", ["load100"], ["bc"])
    store, work = Store(tmp_path / "out"), tmp_path / "work"
    keys = ["data-load100", "train-load100-bc-s0", "eval-load100-bc-s0-best-ideal",
            "eval-load100-bc-s0-last-ideal", "eval-load100-centralized-ideal"]  # fmt: skip
    out = run_ray(b.plan, store, work, keys, "auto", quiet=True)
    assert sorted(out.ran) == sorted(keys) and not out.failed
    run = product_path(b.plan.units["train-load100-bc-s0"], work)
    assert (run / "best.pt").is_file() and (run / "checkpoint.pt").is_file()
    assert to_run(b.plan, store, work, None, keys) == []


def test_methods_are_registered():
    for m in BENCH_METHODS.values():
        get_method(m.method)


def test_gpu_script_runs_a_block_on_the_cpu(tmp_path):
    """experiments/bench_gpu.sh at the smoke scale on the CPU: one family and one method run
    to the end, the results come back whole in results.tgz and the tree's results are left as
    they were; the same block again, over the results it brought back, does no work."""
    root = Path(__file__).resolve().parents[1]
    tree = tmp_path / "tree"  # stands for the committed results (none)
    env = gpu_script_env(tmp_path, "BENCH_WORK")
    cmd = ["bash", str(root / "experiments" / "bench_gpu.sh"), "sessions", "bc", "300", "3"]
    run = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with tarfile.open(tmp_path / "out" / "results.tgz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    runs = {f"train-sessions-bc-s{s}.json" for s in (0, 1, 2)}
    evals = {f"eval-sessions-bc-s{s}-{w}-ideal.json" for s in (0, 1, 2) for w in ("best", "last")}
    assert {"data-sessions.json", "eval-sessions-maxweight-ideal.json"} | runs | evals <= names
    assert not tree.exists()
    # the next lease, on a fresh machine: the tree holds what came back; nothing is left to do
    with tarfile.open(tmp_path / "out" / "results.tgz") as tar:
        tar.extractall(tree, filter="data")
    env2 = {**env, "BENCH_WORK": str(tmp_path / "w2"), "OUT": str(tmp_path / "out2")}
    run = subprocess.run(cmd, cwd=root, env=env2, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "nothing to do" in run.stdout, run.stdout[-3000:]
