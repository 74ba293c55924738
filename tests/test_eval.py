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
