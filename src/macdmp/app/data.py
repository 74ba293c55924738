"""`macdmp collect` and `macdmp dataset info|validate`."""

from __future__ import annotations

import argparse
import json

from macdmp.data.collect import (
    COLLECT_PRESETS,
    MAX_DATASET_SEED,
    MIXABLE,
    QUALITY_PRESETS,
    CollectPreset,
    CollectSettings,
    collect,
)
from macdmp.data.format import COMPRESSIONS, DEFAULT_COMPRESSION, validate
from macdmp.data.info import dataset_info
from macdmp.sim.config import PRESETS, RF_MODES
from macdmp.sim.families import FAMILIES, family


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect",
        help="collect an offline dataset with the behaviour policy",
        description="Run the behaviour policy (carried traffic x log-normal noise) on new random "
        "networks and write the trajectories to an HDF5 dataset (docs/guide/datasets.md). "
        "Trajectory k (counted across scenarios in order) uses env seed SEED * 2**16 + k.",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="dataset file to write (.h5)")
    p.add_argument(
        "--preset",
        choices=tuple(COLLECT_PRESETS),
        default=None,
        help="paper: 1000 trajectories x 6000 frames over the four paper scenarios; demo: "
        "64 x 2000 (the default sizes). Explicit flags override the preset.",
    )
    p.add_argument(
        "--scenarios",
        default=None,
        help=f"comma-separated presets ({', '.join(PRESETS)}), family scenarios or TOML files",
    )
    p.add_argument(
        "--family",
        choices=tuple(FAMILIES),
        default=None,
        help="a scenario family's dataset: its scenarios, its behaviour mix and its size "
        "(docs/guide/families.md); --trajectories, --frames and --seed still apply",
    )
    p.add_argument("--trajectories", type=int, default=None, help="in total, split over scenarios")
    p.add_argument("--frames", type=int, default=None, help="frames per trajectory")
    p.add_argument("--seed", type=int, default=0, help=f"dataset seed in [0, {MAX_DATASET_SEED}]")
    p.add_argument("--rf", choices=RF_MODES, default=None, help="RF condition (default: ideal)")
    p.add_argument(
        "--behaviour-noise",
        type=float,
        default=None,
        help="sigma of the behaviour policy's mean-one log-normal noise (default 0.5; 0 = none)",
    )
    p.add_argument(
        "--policies",
        default=None,
        metavar="SPEC[=W],...",
        help="mix several policies: each scenario's trajectories are shared among them in "
        f"proportion to the weights W (default 1); SPEC is one of {', '.join(MIXABLE)}. The "
        "file records each trajectory's policy",
    )
    quality = "; ".join(f"{k}: {','.join(v)}" for k, v in QUALITY_PRESETS.items())
    p.add_argument(
        "--quality",
        choices=tuple(QUALITY_PRESETS),
        default=None,
        help=f"a dataset quality preset (the policies that produce it): {quality}",
    )
    p.add_argument("--batch-size", type=int, default=256, help="networks stepped at once")
    p.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default=DEFAULT_COMPRESSION,
        help=f"HDF5 filter of the large arrays (default {DEFAULT_COMPRESSION})",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="Numba threads of the simulator core (default 1: robust on a busy machine; "
        "more can be faster on idle cores)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_collect)

    d = sub.add_parser(
        "dataset", help="inspect or check a dataset file", description="Inspect a dataset."
    )
    dsub = d.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    info = dsub.add_parser("info", help="sizes, scenarios, statistics and behaviour QoS")
    info.add_argument("file")
    info.add_argument("--json", action="store_true", help="print one JSON object instead")
    info.set_defaults(func=_info)
    val = dsub.add_parser("validate", help="check structure, values and content hashes")
    val.add_argument("file")
    val.add_argument(
        "--quick",
        action="store_true",
        help="structure, chunk checksums and content hashes; skip the value checks",
    )
    val.set_defaults(func=_validate)


def _collect(args: argparse.Namespace) -> int:
    preset = COLLECT_PRESETS[args.preset or "demo"]
    choices = (
        ("--behaviour-noise", args.behaviour_noise),
        ("--policies", args.policies),
        ("--quality", args.quality),
    )
    given = [n for n, v in choices if v is not None]
    if len(given) > 1:
        raise ValueError(f"{given[1]}: give only one of {', '.join(given)}")
    if args.family is not None:
        clash = [n for n, v in (("--preset", args.preset), ("--scenarios", args.scenarios)) if v]
        if clash or given:
            raise ValueError(
                f"--family: sets the scenarios and the behaviour mix; drop {(clash + given)[0]}"
            )
        fam = family(args.family)
        preset = CollectPreset(fam.scenarios, fam.trajectories, fam.frames)
        if fam.behaviour != ("behaviour:0.5",):
            args.policies = ",".join(fam.behaviour)
    policies = []
    if args.policies is not None:
        policies = [s for s in args.policies.split(",") if s.strip()]
        if not policies:
            raise ValueError("--policies: give at least one policy")
    elif args.quality is not None:
        policies = list(QUALITY_PRESETS[args.quality])
        name, _, sigma = policies[0].partition(":")
        if len(policies) == 1 and name == "behaviour":  # the same file as --behaviour-noise
            args.behaviour_noise, policies = float(sigma), []
    settings = CollectSettings(
        out=args.out,
        scenarios=args.scenarios.split(",") if args.scenarios else list(preset.scenarios),
        trajectories=args.trajectories if args.trajectories is not None else preset.trajectories,
        frames=args.frames if args.frames is not None else preset.frames,
        seed=args.seed,
        rf=args.rf,
        behaviour_noise=0.5 if args.behaviour_noise is None else args.behaviour_noise,
        policies=policies,
        batch_size=args.batch_size,
        compression=args.compression,
        threads=args.threads,
    )
    res = collect(settings, force=args.force, progress=not args.quiet)
    print(
        f"wrote {res.path}: {settings.trajectories} trajectories x {settings.frames} frames, "
        f"{res.bytes / 2**20:.1f} MiB in {res.seconds:.1f} s "
        f"({res.env_frames / res.seconds:,.0f} env-frames/s)"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    info = dataset_info(args.file)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    total_traj = sum(s["trajectories"] for s in info["scenarios"].values())
    print(f"{info['file']}: {info['bytes'] / 2**20:.1f} MiB, format v{info['format_version']}, "
          f"{total_traj} trajectories, fingerprint {info['fingerprint'][:16]}")  # fmt: skip
    print(f"collected by: {info['command']}  ({info['created']})")
    print(f"behaviour policy: {json.dumps(info['behaviour_policy'])}")
    print()
    print(f"{'scenario':<10} {'N':>3} {'rf':<8} {'traj':>5} {'frames':>6}  {'env seeds':<24}"
          f" {'thr Mbps':>8} {'delay ms':>8} {'loss':>7} {'reward':>8}")  # fmt: skip
    for name, s in info["scenarios"].items():
        q = s["qos"]
        seeds = f"{s['env_seeds'][0]}..{s['env_seeds'][1]}"
        print(f"{name:<10} {s['nodes']:>3} {s['rf']:<8} {s['trajectories']:>5} {s['frames']:>6}  "
              f"{seeds:<24} {q['throughput_mbps']:>8.3f} {q['delay_ms']:>8.2f} "
              f"{q['loss_rate']:>7.2%} {q['avg_reward']:>8.2f}")  # fmt: skip
    if any(s["qos_by_policy"] for s in info["scenarios"].values()):
        print()
        print(f"{'scenario':<10} {'policy':<16} {'traj':>5} {'thr Mbps':>8} {'delay ms':>8} "
              f"{'loss':>7} {'reward':>8}")  # fmt: skip
        for name, s in info["scenarios"].items():
            for pol, q in s["qos_by_policy"].items():
                print(f"{name:<10} {pol:<16} {q['trajectories']:>5} "
                      f"{q['throughput_mbps']:>8.3f} {q['delay_ms']:>8.2f} "
                      f"{q['loss_rate']:>7.2%} {q['avg_reward']:>8.2f}")  # fmt: skip
    print()
    print("per-dimension statistics (all agents and frames; obs in packets, action in RBs, "
          "reward in ms):")  # fmt: skip
    print(f"{'scenario':<10} {'dimension':<11} {'mean':>9} {'std':>9} {'min':>9} {'max':>9}")
    for name, s in info["scenarios"].items():
        for dim, st in s["stats"].items():
            print(f"{name:<10} {dim:<11} {st['mean']:>9.3f} {st['std']:>9.3f} "
                  f"{st['min']:>9.3f} {st['max']:>9.3f}")  # fmt: skip
    return 0


def _validate(args: argparse.Namespace) -> int:
    header = validate(args.file, content=not args.quick)
    what = (
        "structure, chunk checksums and content hashes"
        if args.quick
        else "structure, values and content hashes"
    )
    n = sum(s.n_trajectories for s in header.scenarios.values())
    print(f"{args.file}: OK ({what}; format v{header.format_version}, "
          f"{len(header.scenarios)} scenarios, {n} trajectories)")  # fmt: skip
    return 0
