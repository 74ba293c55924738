"""A training run folder as a policy of the common interface, whatever method trained it.

    --policy RUN_DIR[,key=value...]        (also macdmp:RUN_DIR[,key=value...])

:func:`load_policy` is how every command reads ``--policy``: a run folder, or any name of
``macdmp.policies.make_policy`` (the allocators).

Options every run accepts: ``device`` (cpu, cuda, cuda:1; default the GPU if there is one),
``threads`` (CPU threads for torch, default 1), ``weights`` (ema or raw, default ema),
``checkpoint`` (last, or best: the one the run's validation evaluations chose; default last),
``label`` (the row's name in result tables, default the actor's own label), ``boost`` (ask
``boost`` times the actor's demand, at most the node's own backlog: :class:`ActorPolicy`; default
1, the demand as it is), ``seed`` (the actor's random seed, which draws a planner's noise;
default the evaluation's seed offset, 0: tests of one stochastic planner under several seeds
measure how much its result owes to that noise); the method's own options are listed by its
``actor_options`` (MA-CDMP: solver, steps, guide, candidates; see ``macdmp.planner.policy``).
Options are checked when the policy is built, before any episode runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from macdmp.methods.base import get_method
from macdmp.methods.checkpoint import (
    CHECKPOINT_NAME,
    checkpoint_path,
    is_run_dir,
    load_run,
    read_checkpoint,
)
from macdmp.policies.allocators import backlog
from macdmp.policies.base import Policy, PolicyError
from macdmp.policies.registry import POLICY_NAMES, REFERENCES_HELP, make_policy

POLICY_HELP = (
    f"one of: {', '.join(POLICY_NAMES)}, or a training run folder RUN_DIR[,key=value...] of any "
    f"method (also macdmp:RUN_DIR). {REFERENCES_HELP}"
)

COMMON_OPTIONS: dict[str, tuple[str, type]] = {
    "device": ("device", str),
    "threads": ("threads", int),
    "weights": ("weights", str),
    "label": ("label", str),
    "checkpoint": ("which", str),
    "boost": ("boost", float),
    "seed": ("actor_seed", int),
}


class ActorPolicy(Policy):
    """An actor of a trained method as a policy (also the trainer's in-loop evaluation).

    Decentralised: one batched call per frame for every agent of every network.

    ``boost`` B > 1 turns each demand d into min(B d, the node's backlog), from the agent's own
    observation. The MAC leaves RBs that no demand asked for idle and scales demands down
    when they ask for more than the frame has, so a learned policy whose demands sum a little
    short of the frame wastes RBs that a rule like ``maxweight`` (whose demands fill the frame
    whenever the network holds the packets) would use; under load 1.0 the waste builds the
    backlog up (docs/adaptive-study.md, 5d). Asking more keeps the actor's proportions where
    the MAC scales them down, and the cap stops a node from taking RBs it has no packets for.
    """

    decentralized = True
    boost = 1.0  # 1: the actor's demands as they are (the trainer's evaluations use it)

    def __init__(self, actor: Any, name: str, rbs: float) -> None:
        self.actor, self.name, self.label, self.trained_rbs = actor, name, actor.label, rbs
        self._fresh = True
        self._teams: list[tuple[int, int]] = []  # (networks, nodes) of each group, in order

    def reset(self, sim) -> None:
        super().reset(sim)
        if not self._fresh:  # the first reset of a new episode
            self._teams = []
        self._teams.append((sim.batch_size, sim.n_nodes))
        if float(sim.cfg.rbs) != self.trained_rbs:
            raise PolicyError(
                f"policy {self.label}: trained with M x L = {self.trained_rbs:g} RBs per frame "
                f"but scenario {sim.cfg.name!r} has {sim.cfg.rbs}; evaluate it on a matching "
                "scenario"
            )
        self._fresh = True  # the next act_agents call starts every agent's episode

    def act_agents(self, obs: np.ndarray, mean_field: np.ndarray) -> np.ndarray:
        if self._fresh:
            self.actor.reset(len(obs))
            sizes = [np.full(b * n, n) for b, n in self._teams]
            if sizes and sum(len(v) for v in sizes) == len(obs):
                self.actor.set_team_sizes(np.concatenate(sizes))
            self._fresh = False
        demand = self.actor.act(obs, mean_field)
        if self.boost != 1.0:
            demand = np.minimum(self.boost * np.asarray(demand, dtype=np.float64), backlog(obs))
        return demand


class RunPolicy(ActorPolicy):
    """The EMA (or raw) weights of a run folder, acting through its method's actor."""

    def __init__(
        self,
        run_dir: str | Path,
        seed: int = 0,
        device: str | None = None,
        threads: int = 1,
        weights: str = "ema",
        label: str | None = None,
        checkpoint: dict[str, Any] | None = None,
        which: str = "last",
        boost: float = 1.0,
        actor_seed: int | None = None,
        **options: Any,
    ) -> None:
        run = Path(run_dir)
        if threads < 1:
            raise PolicyError(f"policy threads: must be >= 1 (got {threads})")
        if actor_seed is not None and actor_seed < 0:
            raise PolicyError(f"policy seed: must be a whole number >= 0 (got {actor_seed})")
        if not (np.isfinite(boost) and boost >= 1.0):
            raise PolicyError(
                f"policy boost: must be a number >= 1 (got {boost}); 1 leaves the demands as "
                "they are"
            )
        try:
            self.method = load_run(run, device, weights, checkpoint=checkpoint, which=which)
            if self.method.device.type == "cpu":
                # A frame's decision is many small kernels: intra-op threads gain little and,
                # when another process holds a core, their barriers stall every op (measured:
                # 42 ms -> 4.4 s per frame for MA-CDMP on the 2-core machine).
                torch.set_num_threads(threads)
            actor = self.method.make_actor(
                seed=seed if actor_seed is None else actor_seed, **options
            )
        except FileNotFoundError as exc:  # load_run: not a run folder, with how to make one
            raise PolicyError(str(exc)) from None
        except ValueError as exc:
            raise PolicyError(f"policy {run}: {exc}") from None
        super().__init__(actor, self.method.name, self.method.rbs)
        self.which = which
        if which == "best":
            self.label += " [best]"
        self.boost = float(boost)
        if self.boost != 1.0:
            self.label += f" [boost {self.boost:g}]"
        self.actor_seed = actor_seed
        if actor_seed is not None:
            self.label += f" [seed {actor_seed}]"
        if label is not None:
            self.label = label
        self.run_dir = run

    @classmethod
    def from_spec(cls, spec: str, seed: int = 0) -> RunPolicy:
        """From ``RUN_DIR[,key=value...]``; the keys are checked against the run's method."""
        run, *opts = spec.split(",")
        if not is_run_dir(run):
            raise PolicyError(
                f"policy: {run!r} is neither a policy name nor a training run folder (no "
                f"{CHECKPOINT_NAME})"
            )
        kinds = dict(COMMON_OPTIONS)
        which = next((o.partition("=")[2] for o in opts if o.startswith("checkpoint=")), "last")
        try:
            ckpt = read_checkpoint(checkpoint_path(run, which))  # read and checked once
        except (ValueError, FileNotFoundError) as exc:
            raise PolicyError(f"policy {run}: {exc}") from None
        method = get_method(ckpt["method"])
        kinds.update(method.actor_options)
        kwargs: dict[str, Any] = {}
        for opt in opts:
            key, _, value = opt.partition("=")
            if key not in kinds or not value:
                raise PolicyError(
                    f"policy {run}: option {opt!r} not understood; use key=value with keys "
                    f"{', '.join(kinds)}"
                )
            name, kind = kinds[key]
            try:
                kwargs[name] = kind(value)
            except ValueError:
                raise PolicyError(
                    f"policy {run}: {key}={value!r} is not a valid {kind.__name__}"
                ) from None
        return cls(run, seed=seed, checkpoint=ckpt, **kwargs)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "run": str(self.run_dir),
            "checkpoint": self.which,
            "train_step": int(getattr(self.method, "train_step", -1)),
            **({"boost": self.boost} if self.boost != 1.0 else {}),
            **({"seed": self.actor_seed} if self.actor_seed is not None else {}),
            **self.actor.describe(),
        }


def load_policy(spec: str | Policy, seed: int = 0) -> Policy:
    """Any policy by name: a training run folder ``RUN_DIR[,key=value...]`` (also
    ``macdmp:RUN_DIR``) or an allocator name of ``macdmp.policies.make_policy``; a Policy is
    returned as it is."""
    if isinstance(spec, Policy):
        return spec
    spec = str(spec)
    if spec.startswith("macdmp:"):
        run = spec.removeprefix("macdmp:")
        if not run:
            raise PolicyError("macdmp: give the run folder, e.g. --policy macdmp:runs/demo")
        return RunPolicy.from_spec(run, seed=seed)
    if is_run_dir(spec.split(",")[0]):
        return RunPolicy.from_spec(spec, seed=seed)
    return make_policy(spec, seed=seed)
