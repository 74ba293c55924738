"""The evaluation protocol: held-out seeds, lockstep groups, reproducibility, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from macdmp.app.main import main
from macdmp.eval.evaluate import TRACE_KEYS, evaluate
from macdmp.policies import Policy
from macdmp.policies.episodes import run_episodes, run_groups
from macdmp.sim.config import PRESETS
from macdmp.sim.seeds import EVAL_SEED_BASE, check_disjoint, eval_seeds


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


def test_evaluate_json_without_traces_still_reports(tmp_path, capsys):
    base = ["evaluate", "--policy", "carried", "--scenarios", "n8-2to6", "--rf", "ideal"]
    base += ["--seeds", "1", "--frames", "20", "--quiet", "--json"]
    full, slim = tmp_path / "full.json", tmp_path / "slim.json"
    assert main([*base, str(full)]) == 0 and main([*base, str(slim), "--no-traces"]) == 0
    full_data, slim_data = json.loads(full.read_text()), json.loads(slim.read_text())
    assert "frame_delay_ms" in full_data and "delay_traces" in full_data
    assert set(slim_data) == set(full_data) - set(TRACE_KEYS)  # the rest as before:
    assert slim_data["rows"][0]["avg_reward"] == full_data["rows"][0]["avg_reward"]
    capsys.readouterr()
    assert main(["report", "--json", str(slim), "--out", str(tmp_path / "report")]) == 0
    assert "carried" in (tmp_path / "report" / "report.md").read_text()


def test_every_option_has_help():
    from macdmp.app.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("demo", "sim-study", "evaluate", "report", "collect", "simulate"):
        for action in sub.choices[name]._actions:
            assert action.help, f"macdmp {name} {action.option_strings}: no help text"


def test_demo_runs_the_whole_pipeline(tmp_path, monkeypatch, capsys):
    import macdmp.app.demo as demo_app
    from macdmp.app.evaluate import ALLOCATOR_SET

    tiny = {
        "runs": "runs-tiny",
        "train_sets": {
            "dim": 8,
            "dim_mults": (1, 2),
            "n_diffusion_steps": 6,
            "n_epochs": 1,
            "steps_per_epoch": 3,
            "inv_hidden": 16,
            "warmup_steps": 1,
            "ema_start": 0,
            "log_every": 1,
            "ckpt_every": 3,
        },
        "describe": "tiny",
        "planner": ",steps=2",
        "frames": 4,
    }
    monkeypatch.setitem(demo_app.DEMO, "fast", tiny)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seeds", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "MA-CDMP w/o MF (dpm2 2)" in text and "carried" in text
    data = json.loads((out / "results.json").read_text())
    assert len(data["rows"]) == 2 * (3 + len(ALLOCATOR_SET)) and data["frames"] == 4
    steer = json.loads((out / "runs-tiny/macdmp-steer/config.json").read_text())["config"]
    assert steer["guidance"] == "cfg" and steer["warm"] == 0.15
    assert "warm 0.15" in text  # the steer run plans with its warm-start default
    assert len(data["frame_delay_ms"]) == 8  # 4 scenarios x 2 RF conditions
    for name in ("qos.png", "delay.png", "runs-tiny/macdmp/checkpoint.pt", "results.json"):
        assert (out / name).is_file()
    assert main(["demo", "--out", str(out), "--frames", "0"]) == 2
    assert "--frames: must be >= 1 (got 0)" in capsys.readouterr().err


def test_progress_bar_writes_whole_lines_to_a_log(capsys):
    from macdmp.common.progress import progress_bar

    with progress_bar(1000, "work") as bar:
        for _ in range(1000):
            bar.update(1)
    err = capsys.readouterr().err  # pytest's captured stderr is not a terminal
    assert "\r" not in err and err.count("\n") <= 3 and "1000/1000" in err
    with progress_bar(5, "off", disable=True) as bar:
        bar.update(5)
    assert capsys.readouterr().err == ""


def test_report_aggregates_training_seeds():
    from macdmp.eval.report import training_seed_table
    from macdmp.policies.episodes import METRICS

    def row(policy, rf, delay):
        r = {"policy": policy, "rf": rf, "frames": 10}
        for m in METRICS:
            r[m], r[m + "_std"] = (delay, 0.5) if m == "mean_delay_ms" else (-delay, 0.1)
        r["loss_aware_delay_ms"], r["loss_aware_delay_ms_std"] = delay + 1.0, 0.5
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
        "| -6.0000 ± 1.0000 | 7.00 ± 1.00 |",
        "| A warm 0.15 | limited | 0, 1 | -8.00 ± 0.00 | -8.00 ± 0.00 | 8.00 ± 0.00 "
        "| -8.0000 ± 0.0000 | 9.00 ± 0.00 |",
    ]
    assert training_seed_table(rows[-1:]) == ""


def test_loss_aware_delay_counts_each_lost_packet_at_the_penalty():
    """The loss-aware delay (docs/guide/evaluating.md): (1 - loss) x delay + loss x 1,000 ms, per
    network, in every summary, evaluation row (with per-seed values) and report table; a policy that
    loses a third of its packets can no longer look better than one that loses none."""
    from macdmp.eval.report import markdown_tables
    from macdmp.policies import make_policy
    from macdmp.policies.episodes import (
        LOSS_AWARE,
        LOSS_PENALTY_MS,
        format_table,
        loss_aware_delay,
        with_loss_aware,
    )

    class Starve(Policy):
        """maxweight, with one node given nothing: its buffer (16 packets) fills and drops."""

        name = "starve"

        def __init__(self) -> None:
            self.base = make_policy("maxweight")

        def reset(self, sim) -> None:
            self.base.reset(sim)

        def act(self, obs, mf):
            d = np.array(self.base.act(obs, mf), dtype=float)
            d[:, 7] = 0.0
            return d

    assert LOSS_PENALTY_MS == 1000.0
    cfg = PRESETS["n9-2to7"].replace(queue_capacity=16)
    res = run_episodes(cfg, Starve(), eval_seeds(2), frames=200)
    loss = res.dropped / res.generated
    assert np.all(loss > 0.01)
    want = (1 - loss) * res.mean_delay_ms + loss * 1000.0
    np.testing.assert_allclose(res.loss_aware_delay_ms, want)
    s = res.summary()
    assert s[LOSS_AWARE] == pytest.approx(float(np.mean(want)))
    assert s[LOSS_AWARE + "_std"] == pytest.approx(float(np.std(want)))
    assert s[LOSS_AWARE] > s["mean_delay_ms"] + 10.0
    assert LOSS_AWARE in format_table([s]).splitlines()[0]
    # nothing delivered: every packet counts at the penalty; no loss: the delay itself
    assert loss_aware_delay(float("nan"), 0.2) == 1000.0
    assert loss_aware_delay(7.5, 0.0) == 7.5
    # the case: 33% lost at 10.2 ms against the behaviour policy's 11.0 ms
    lossy = with_loss_aware({"mean_delay_ms": 10.2, "loss_rate": 0.33})
    data = with_loss_aware({"mean_delay_ms": 11.0, "loss_rate": 0.0002})
    assert lossy[LOSS_AWARE] == pytest.approx(0.67 * 10.2 + 330.0)
    assert data[LOSS_AWARE] == pytest.approx(0.9998 * 11.0 + 0.2)
    assert data[LOSS_AWARE] < lossy[LOSS_AWARE]
    # an older result row: from its per-seed values, which it keeps
    old = {"mean_delay_ms_seeds": [10.0, 12.0], "loss_rate_seeds": [0.0, 0.01]}
    old |= {"mean_delay_ms": 11.0, "loss_rate": 0.005}
    got = with_loss_aware(old)
    assert got[LOSS_AWARE + "_seeds"] == pytest.approx([10.0, 0.99 * 12.0 + 10.0])
    assert got[LOSS_AWARE] == pytest.approx((10.0 + 21.88) / 2) and LOSS_AWARE not in old
    assert with_loss_aware(s) is s  # a row that has it keeps its own
    # every evaluation row and per-scenario summary has it, the rows with per-seed values
    ev = evaluate(["maxweight"], ["n9-2to7"], ["ideal"], 2, 20, progress=False)
    row = ev["rows"][0]
    assert len(row[LOSS_AWARE + "_seeds"]) == 2 and LOSS_AWARE in ev["per_scenario"][0]
    # a report table shows it, for files written before it too
    rows = [dict(lossy, policy="lossy", rf="ideal", avg_reward=-10.2, throughput_mbps=1.0,
                 frames=10)]  # fmt: skip
    for r in rows:
        for m in ("avg_reward", "throughput_mbps", "mean_delay_ms", "loss_rate"):
            r[m + "_std"] = 0.0
    text = markdown_tables([{k: v for k, v in rows[0].items() if "loss_aware" not in k}])
    assert "loss-aware delay" in text and "| 336.83 ± 0.00 |" in text
