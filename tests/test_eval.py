"""The evaluation protocol: held-out seeds, lockstep groups, reproducibility, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from macdmp.cli import main
from macdmp.eval.episodes import run_episodes, run_groups
from macdmp.eval.evaluate import evaluate
from macdmp.eval.protocol import EVAL_SEED_BASE, check_disjoint, eval_seeds
from macdmp.policies import Policy
from macdmp.sim.config import PRESETS


def test_eval_seeds_are_held_out():
    assert eval_seeds(3) == [EVAL_SEED_BASE, EVAL_SEED_BASE + 1, EVAL_SEED_BASE + 2]
    check_disjoint(eval_seeds(3), range(1000))
    with pytest.raises(ValueError, match="also appear"):
        check_disjoint([5, EVAL_SEED_BASE], [5, 6])


def test_evaluation_is_reproducible():
    a = evaluate(
        ["behaviour", "maxweight"], ["n8-2to6", "n9-4to5"], ["ideal"], 2, 120, progress=False
    )
    b = evaluate(
        ["behaviour", "maxweight"], ["n8-2to6", "n9-4to5"], ["ideal"], 2, 120, progress=False
    )
    strip = [{k: v for k, v in r.items() if k != "act_ms_per_frame"} for r in a["rows"]]
    assert strip == [{k: v for k, v in r.items() if k != "act_ms_per_frame"} for r in b["rows"]]


class Greedy(Policy):
    """A decentralised test policy: demand = own backlog + the neighbours' mean backlog."""

    name = "greedy"
    decentralized = True

    def act_agents(self, obs, mean_field):
        return obs[:, 0] + obs[:, 2] + 0.5 * (mean_field[:, 0] + mean_field[:, 2])


def test_lockstep_groups_match_separate_runs():
    groups = [(PRESETS["n8-4to4"], [EVAL_SEED_BASE]), (PRESETS["n9-2to7"], [EVAL_SEED_BASE + 1])]
    together = run_groups(groups, Greedy(), frames=150)
    for (cfg, seeds), res in zip(groups, together, strict=True):
        alone = run_episodes(cfg, Greedy(), seeds, frames=150)
        assert np.array_equal(alone.delivered, res.delivered)
        assert np.array_equal(alone.avg_reward, res.avg_reward)


def test_evaluate_cli(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(
        [
            "evaluate",
            "--policy",
            "carried",
            "--policy",
            "equal",
            "--scenarios",
            "n8-2to6",
            "--seeds",
            "2",
            "--rf",
            "ideal,limited",
            "--frames",
            "100",
            "--json",
            str(out),
            "--plots",
            str(tmp_path),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "carried" in text and "limited" in text
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 4 and data["seeds"][0] >= EVAL_SEED_BASE
    assert (tmp_path / "qos.png").exists() and (tmp_path / "delay.png").exists()
    assert main(["evaluate", "--policy", "carried", "--rf", "fuzzy", "--frames", "5"]) == 2
    assert "--rf" in capsys.readouterr().err


def test_evaluate_checks_everything_before_running(capsys, monkeypatch):
    import macdmp.eval.evaluate as ev

    calls = []
    real = ev.run_groups
    monkeypatch.setattr(ev, "run_groups", lambda *a, **k: calls.append(k) or real(*a, **k))
    # the second policy is bad: nothing may run beyond the one-frame trial of the first
    rc = main(["evaluate", "--policy", "carried", "--policy", "static:x", "--quiet"])
    assert rc == 2 and all(k.get("frames") == 1 for k in calls)
    assert "--policy static:x" in capsys.readouterr().err
    for argv, option in [
        (["--frames", "0"], "--frames: must be >= 1 (got 0)"),
        (["--seeds", "0"], "--seeds: must be >= 1 (got 0)"),
        (["--seed-offset", "-1"], "--seed-offset: must be >= 0 (got -1)"),
        (["--scenarios", "n7"], "--scenarios"),
        (["--policy", "macdmp:no-such-run"], "--policy macdmp:no-such-run: "),
    ]:
        assert main(["evaluate", "--policy", "carried", *argv]) == 2
        assert f"macdmp evaluate: error: {option}" in capsys.readouterr().err


def test_evaluate_trial_frame_leaves_results_unchanged():
    seeds = [EVAL_SEED_BASE, EVAL_SEED_BASE + 1]
    direct = run_groups([(PRESETS["n8-2to6"], seeds)], "behaviour", frames=60)[0]
    via = evaluate(["behaviour"], ["n8-2to6"], ["ideal"], 2, 60, progress=False)
    assert via["rows"][0]["avg_reward"] == pytest.approx(float(np.mean(direct.avg_reward)))
    traces = via["frame_delay_ms"]["n8-2to6/ideal"]["behaviour"]
    assert len(traces) == 2 and len(traces[0]) == 60


def test_every_option_has_help():
    from macdmp.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("demo", "sim-study", "evaluate", "report", "collect", "simulate"):
        for action in sub.choices[name]._actions:
            assert action.help, f"macdmp {name} {action.option_strings}: no help text"


def test_demo_runs_the_whole_pipeline(tmp_path, monkeypatch, capsys):
    import macdmp.eval.cli as ecli

    tiny = {
        "runs": "runs-tiny",
        "train_sets": (
            "dim=8",
            "dim_mults=1,2",
            "n_diffusion_steps=6",
            "n_epochs=1",
            "steps_per_epoch=3",
            "inv_hidden=16",
            "warmup_steps=1",
            "ema_start=0",
            "log_every=1",
            "ckpt_every=3",
        ),  # fmt: skip
        "describe": "tiny",
        "planner": ",steps=2",
        "frames": 4,
    }
    monkeypatch.setitem(ecli.DEMO, "fast", tiny)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seeds", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "MA-CDMP w/o MF (dpm2 2)" in text and "carried" in text
    data = json.loads((out / "results.json").read_text())
    assert len(data["rows"]) == 2 * (3 + len(ecli.ALLOCATOR_SET)) and data["frames"] == 4
    steer = json.loads((out / "runs-tiny/macdmp-steer/config.json").read_text())["config"]
    assert steer["guidance"] == "cfg" and steer["warm"] == 0.15
    assert "warm 0.15" in text  # the steer run plans with its warm-start default
    assert len(data["frame_delay_ms"]) == 8  # 4 scenarios x 2 RF conditions
    for name in ("qos.png", "delay.png", "runs-tiny/macdmp/checkpoint.pt", "results.json"):
        assert (out / name).is_file()
    assert main(["demo", "--out", str(out), "--frames", "0"]) == 2
    assert "--frames: must be >= 1 (got 0)" in capsys.readouterr().err


def test_progress_bar_writes_whole_lines_to_a_log(capsys):
    from macdmp.progress import progress_bar

    with progress_bar(1000, "work") as bar:
        for _ in range(1000):
            bar.update(1)
    err = capsys.readouterr().err  # pytest's captured stderr is not a terminal
    assert "\r" not in err and err.count("\n") <= 3 and "1000/1000" in err
    with progress_bar(5, "off", disable=True) as bar:
        bar.update(5)
    assert capsys.readouterr().err == ""


def test_report_aggregates_training_seeds():
    from macdmp.eval.episodes import METRICS
    from macdmp.eval.report import training_seed_table

    def row(policy, rf, delay):
        r = {"policy": policy, "rf": rf, "frames": 10}
        for m in METRICS:
            r[m], r[m + "_std"] = (delay, 0.5) if m == "mean_delay_ms" else (-delay, 0.1)
        return r

    rows = [
        row("A warm 0.15", "ideal", 5.0),  # no tag: seed 0
        row("A seed 1 warm 0.15", "ideal", 6.0),
        row("A seed 2 warm 0.15", "ideal", 7.0),
        row("A warm 0.15", "limited", 8.0),
        row("A seed 1 warm 0.15", "limited", 8.0),
        row("B", "ideal", 1.0),  # one seed: no row
    ]
    lines = [ln for ln in training_seed_table(rows).splitlines() if ln.startswith("| A")]
    # the std is over the training seeds (ddof 1), not the rows' own std over network seeds
    assert lines == [
        "| A warm 0.15 | ideal | 0, 1, 2 | -6.00 ± 1.00 | -6.00 ± 1.00 | 6.00 ± 1.00 "
        "| -6.0000 ± 1.0000 |",
        "| A warm 0.15 | limited | 0, 1 | -8.00 ± 0.00 | -8.00 ± 0.00 | 8.00 ± 0.00 "
        "| -8.0000 ± 0.0000 |",
    ]
    assert training_seed_table(rows[-1:]) == ""
