"""Scenario families: traffic that changes, nodes that move, the references, the family map."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from macdmp.app.main import main
from macdmp.data.format import validate
from macdmp.eval.sim_study import family_map, family_markdown, family_statements
from macdmp.policies import make_policy
from macdmp.policies.allocators import DEPLOYABLE, REFERENCES
from macdmp.policies.base import PolicyError
from macdmp.sim.config import SCENARIOS, ConfigError, load_scenario
from macdmp.sim.core import DELIV, DROP_COLUMNS, DROP_ROUTE, GEN, TX, BatchedNetworks
from macdmp.sim.dynamics import profile_load
from macdmp.sim.env import parallel_env
from macdmp.sim.families import FAMILIES, family
from macdmp.sim.network import transit_matrix

DYNAMIC = ("n9-2to7-sessions", "n9-2to7-bursty", "n9-2to7-mobile")


def _profiled(**changes):
    return SCENARIOS["n9-2to7"].replace(
        name="profiled", load_profile=((0, 0.6), (100, 1.0), (200, 0.6)), **changes
    )


def test_every_family_lists_loadable_scenarios_and_a_valid_mix():
    assert set(FAMILIES) == {"paper", "load90", "load100", "sessions", "bursty", "mobile", "large"}
    for fam in FAMILIES.values():
        for name in fam.scenarios:
            assert load_scenario(name).name == name
        for spec in fam.behaviour:
            make_policy(spec)
    assert load_scenario("n64-large").n_nodes == 64
    with pytest.raises(ConfigError, match="family: unknown family 'rush'; allowed: paper"):
        family("rush")


@pytest.mark.parametrize("family_name", sorted(FAMILIES))
def test_packets_are_conserved_by_reason_in_every_family(family_name):
    cfg = load_scenario(FAMILIES[family_name].scenarios[0], rf="limited")
    sim = BatchedNetworks(cfg, [5, 6])
    pol = make_policy("maxweight")
    pol.reset(sim)
    for _ in range(300):
        res = sim.step(pol.act(sim.obs, sim.mean_field()))
        t = sim.totals
        ends = t[:, DELIV] + t[:, list(DROP_COLUMNS)].sum(axis=1) + sim.queued()
        assert np.array_equal(t[:, GEN], ends)
        assert np.array_equal(res.dropped_at.sum(axis=1), res.stats[:, list(DROP_COLUMNS)].sum(1))
    assert sim.totals[:, GEN].sum() > 0


@pytest.mark.parametrize("name", ["n9-2to7-sessions", "n9-2to7-bursty", "n8-4to4-bursty"])
def test_long_run_rate_is_within_two_percent_of_the_target(name):
    cfg = load_scenario(name)
    sim = BatchedNetworks(cfg, list(range(8)))
    frames = 40_000
    offered = np.zeros_like(sim.rates_ppf)
    for _ in range(frames):
        offered += sim.offered_ppf()
        sim.step(np.zeros((8, cfg.n_nodes)))
    target = sim.rates_ppf.sum() * frames
    assert sim.totals[:, GEN].sum() / target == pytest.approx(1.0, abs=0.02)
    assert offered.sum() / target == pytest.approx(1.0, abs=0.02)


def test_on_off_sources_send_nothing_when_off_and_keep_the_mean():
    cfg = SCENARIOS["n9-2to7-bursty"].replace(burst_kind="on-off")
    sim = BatchedNetworks(cfg, [1, 2, 3, 4])
    seen_off = False
    for _ in range(20_000):
        seen_off |= bool((sim.offered_ppf() == 0).any())
        sim.step(np.zeros((4, 9)))
    assert seen_off
    gen = sim.totals[:, GEN].sum()
    assert gen / (sim.rates_ppf.sum() * 20_000) == pytest.approx(1.0, abs=0.03)


def test_load_profile_follows_its_schedule():
    frames, loads = np.array([0.0, 100.0, 200.0]), np.array([0.6, 1.0, 0.6])
    assert profile_load(frames, loads, True, 50.0) == pytest.approx(0.8)
    assert profile_load(frames, loads, False, 150.0) == pytest.approx(1.0)
    assert profile_load(frames, loads, True, 250.0) == pytest.approx(0.8)  # repeats
    cfg = _profiled()
    sim = BatchedNetworks(cfg, list(range(8)))
    base = sim.rates_ppf.copy()
    offered = []
    for _ in range(2000):
        offered.append(sim.offered_ppf().copy())
        sim.step(np.full((8, 9), 40 / 9))
    offered = np.array(offered)
    assert offered[100] == pytest.approx(base / 0.7)  # load 1.0 at frame 100
    assert offered[0] == pytest.approx(base * 0.6 / 0.7)
    # the mean load of the profile is 0.8: the arrivals follow it
    assert sim.totals[:, GEN].sum() / (base.sum() * 2000 * 0.8 / 0.7) == pytest.approx(1, abs=0.02)


def test_no_packet_is_ever_sent_on_a_link_out_of_range():
    # routes never recomputed: the routing table goes stale as the nodes move
    cfg = SCENARIOS["n9-2to7-mobile"].replace(route_every=10**6, speed_mps=400.0)
    sim = BatchedNetworks(cfg, [3, 4, 5])
    pol = make_policy("maxweight")
    pol.reset(sim)
    start = sim.positions_m.copy()
    for _ in range(1500):
        pos = sim.positions_m.copy()
        before = sim.link_tx.copy()
        sim.step(pol.act(sim.obs, sim.mean_field()))
        used = sim.link_tx > before
        dist = np.linalg.norm(pos[:, :, None] - pos[:, None], axis=-1)
        assert np.all(dist[used] <= cfg.range_m)
    assert np.abs(sim.positions_m - start).max() > 1000  # they did move
    assert sim.totals[:, DROP_ROUTE].sum() > 0  # stale routes: packets dropped, counted
    assert sim.link_tx.sum() == sim.totals[:, TX].sum()


def test_routes_are_recomputed_from_the_positions_on_schedule():
    cfg = SCENARIOS["n9-2to7-mobile"].replace(speed_mps=1000.0, route_every=7)
    sim = BatchedNetworks(cfg, [8])
    for f in range(1, 71):
        sim.step(np.full((1, 9), 4.0))
        if f % 7 == 0:
            d = np.linalg.norm(sim.positions_m[0][:, None] - sim.positions_m[0][None], axis=-1)
            adj = (d <= cfg.range_m) & ~np.eye(9, dtype=bool)
            assert np.array_equal(sim.adjacency[0], adj)
            assert np.array_equal(sim.degree[0], adj.sum(axis=1))
            for i in range(9):
                for t in range(9):
                    j = sim.next_hop[0, i, t]
                    if i != t and j >= 0:
                        assert adj[i, j] and sim.hops[0, j, t] == sim.hops[0, i, t] - 1


@pytest.mark.parametrize("name", [*DYNAMIC, "profiled"])
def test_same_seed_same_bits_whatever_the_batch(name):
    cfg = _profiled() if name == "profiled" else SCENARIOS[name]
    runs = []
    for seeds in ([11, 12], [11, 12], [13, 12, 11]):
        sim = BatchedNetworks(cfg, seeds)
        log = [sim.step(np.full((len(seeds), 9), 4.4)).obs for _ in range(150)]
        runs.append((np.stack(log, axis=1), sim.totals.copy()))
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert np.array_equal(runs[0][0][0], runs[2][0][2])  # network 11 alone or among others
    assert np.array_equal(runs[0][1][1], runs[2][1][1])


@pytest.mark.parametrize("name", DYNAMIC)
def test_pettingzoo_matches_batched_core_on_the_new_processes(name):
    env = parallel_env(scenario=name, seed=21, frames=120)
    env.reset()
    sim = BatchedNetworks(SCENARIOS[name], [21])
    while env.agents:
        obs, *_ = env.step({a: 4.0 + k for k, a in enumerate(env.agents)})
        res = sim.step(4.0 + np.arange(9.0)[None])
        assert np.array_equal(np.stack(list(obs.values())), res.obs[0])
    assert np.array_equal(env.sim.totals, sim.totals)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"traffic": "fractal"}, "traffic"),
        ({"burst_high_ms": -5.0}, "burst_high_ms"),
        ({"burst_low_ms": 0}, "burst_low_ms"),
        ({"burst_ratio": 0.5}, "burst_ratio"),
        ({"burst_kind": "square"}, "burst_kind"),
        ({"session_duration_s": -1}, "session_duration_s"),
        ({"session_rate_spread": 1.5}, "session_rate_spread"),
        ({"traffic": "sessions", "session_mean_active": 20}, "session_mean_active"),
        ({"mobility": "waypoint", "speed_mps": -3.0}, "speed_mps"),
        ({"mobility": "waypoint"}, "speed_mps"),
        ({"mobility": "teleport"}, "mobility"),
        ({"route_every": 0}, "route_every"),
        ({"load_profile": ((5, 0.6),)}, r"load_profile\[0\] frame"),
        ({"load_profile": ((0, 0.6), (0, 1.0))}, r"load_profile\[1\] frame"),
        ({"load_profile": ((0, -1.0),)}, r"load_profile\[0\] load"),
        ({"load_profile": ((0, 0.6, 3),)}, r"load_profile\[0\]"),
        ({"load_profile_interp": "cubic"}, "load_profile_interp"),
        ({"load": 1e9}, "load"),
        ({"n_nodes": 4096, "n_high": 2}, "n_nodes"),
    ],
)
def test_bad_dynamic_values_are_refused_by_name(changes, field):
    with pytest.raises(ConfigError, match=field):
        SCENARIOS["n9-2to7"].replace(**changes)


def test_toml_dynamic_scenario_and_bad_schedule(tmp_path):
    good = tmp_path / "rush.toml"
    good.write_text(
        'base = "n9-2to7-sessions"\nload_profile = [[0, 0.6], [400, 1.0], [800, 0.6]]\n'
        'load_profile_interp = "step"\n'
    )
    cfg = load_scenario(good)
    assert cfg.traffic == "sessions" and cfg.load_profile == ((0, 0.6), (400, 1.0), (800, 0.6))
    BatchedNetworks(cfg, [0]).step(np.zeros((1, 9)))
    for text, match in (
        ('load_profile = "0.6 -> 1.0"\n', "load_profile"),
        ("load_profile = [[0, 0.6], [10]]\n", r"load_profile\[1\]"),
        ('base = "n9-2to7"\nmobility = "waypoint"\nspeed_mps = "fast"\n', "speed_mps"),
    ):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_scenario(bad)


def test_references_are_labelled_and_carried_now_tracks_the_rates():
    assert set(REFERENCES) == {"carried", "carried-now", "centralized"}
    assert not set(REFERENCES) & set(DEPLOYABLE)
    # static Poisson: carried-now is carried
    sim = BatchedNetworks(SCENARIOS["n9-4to5"], [4, 5])
    now, static = make_policy("carried-now"), make_policy("carried")
    now.reset(sim)
    static.reset(sim)
    obs = sim.obs
    assert np.allclose(now.act(obs, obs), static.act(obs, obs))
    net = sim.networks[1]
    assert np.allclose(
        sim.carried_now_ppf()[1],
        transit_matrix(net.rates_ppf, net.next_hop, net.hops, net.dest).sum(1),
    )
    # sessions: carried-now follows the active services, carried does not
    sim = BatchedNetworks(SCENARIOS["n9-2to7-sessions"], [4])
    now.reset(sim)
    for _ in range(400):
        sim.step(np.full((1, 9), 40 / 9))
    own = sim.offered_by_destination()
    assert np.allclose(own.sum(axis=2), sim.offered_ppf())
    assert not np.allclose(sim.carried_now_ppf(), sim.carried_ppf)


def test_centralized_serves_the_backlog_first_then_the_expected_arrivals():
    sim = BatchedNetworks(SCENARIOS["n9-2to7-load100"], [1, 2])
    pol = make_policy("centralized")
    pol.reset(sim)
    full = 0
    for _ in range(300):
        demand = pol.act(sim.obs, sim.mean_field())
        backlog = sim.obs[..., 0] + sim.obs[..., 2]
        assert demand.sum(axis=1) == pytest.approx([40, 40])
        short = backlog.sum(axis=1) >= 40  # not all can be served: only whole backlog RBs
        assert np.all(demand[short] <= backlog[short])
        assert np.all(demand[short] == np.round(demand[short]))
        # otherwise every node gets its whole backlog at least
        assert np.all(demand[~short] >= backlog[~short] - 1e-9)
        full += short.sum()
        sim.step(demand)
    assert 0 < full < 600


def test_noisy_allocators_and_their_errors():
    pol, plain = make_policy("maxweight:0.3", seed=4), make_policy("maxweight")
    assert pol.name == "maxweight:0.3" and pol.describe()["base"] == "maxweight"
    sim = BatchedNetworks(SCENARIOS["n9-2to7"], [0])
    pol.reset(sim)
    plain.reset(sim)
    for _ in range(20):
        sim.step(np.full((1, 9), 5.0))
    a, b = pol.act(sim.obs, sim.obs), plain.act(sim.obs, sim.obs)
    assert a.shape == b.shape and not np.allclose(a, b)
    with pytest.raises(PolicyError, match="maxweight: noise sigma must be a number"):
        make_policy("maxweight:lots")
    with pytest.raises(PolicyError, match="sigma >= 0"):
        make_policy("proportional:-1")


def test_collect_family_writes_its_mix(tmp_path, capsys):
    out = tmp_path / "sessions.h5"
    args = ["collect", "--family", "sessions", "--trajectories", "12", "--frames", "40"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    header = validate(out)
    assert list(header.scenarios) == list(FAMILIES["sessions"].scenarios)
    assert [p["spec"] for p in header.policies] == list(FAMILIES["sessions"].behaviour)
    assert main([*args, "--scenarios", "n9-2to7", "--out", str(tmp_path / "x.h5")]) == 2
    assert "--family: sets the scenarios" in capsys.readouterr().err


def test_family_map_rows_statements_and_cli(tmp_path):
    rows = family_map(["paper", "mobile"], rfs=("ideal",), n_seeds=1, frames=60, progress=False)
    assert {(r["family"], r["policy"]) for r in rows} >= {("mobile", "centralized")}
    for r in rows:
        assert len(r["loss_aware_delay_ms_scenarios"]) == 4
    st = family_statements(rows)
    assert {s["family"] for s in st} == {"paper", "mobile"}
    assert all(s["best_deployable"] in DEPLOYABLE for s in st)
    text = family_markdown(rows, "test")
    assert "the best deployable allocator is" in text and "| `centralized` | reference |" in text
    out = tmp_path / "map.md"
    argv = ["sim-study", "--family", "bursty", "--seeds", "1", "--frames", "30", "--quiet"]
    assert main([*argv, "--out", str(out), "--plot", str(tmp_path / "map.png")]) == 0
    assert "### `bursty`" in out.read_text()
    assert len(json.loads(out.with_suffix(".json").read_text())) == 2 * 9
    assert (tmp_path / "map.png").stat().st_size > 0
    assert main([*argv[:2], "rush", *argv[3:]]) == 2


def test_mobile_datasets_keep_each_frames_graph_and_windows_use_it(tmp_path):
    from macdmp.data.format import open_h5, read_header
    from macdmp.data.windows import open_windows

    out = tmp_path / "mobile.h5"
    cfg = SCENARIOS["n9-2to7-mobile"].replace(name="fast", speed_mps=2000.0, route_every=5)
    toml = tmp_path / "fast.toml"
    toml.write_text('base = "n9-2to7-mobile"\nspeed_mps = 2000.0\nroute_every = 5\n')
    args = ["collect", "--scenarios", f"{toml},n9-2to7", "--trajectories", "4", "--frames", "60"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    with open_h5(out) as f:
        header = read_header(f, out)
        g = f["scenarios"]["fast"]
        adj_t, adj, acts = g["adjacency_t"][:], g["adjacency"][:], g["actions"][:]
        seeds = g["seeds"][:]
        assert "adjacency_t" not in f["scenarios"]["n9-2to7"]  # static: one graph
    assert header.scenarios["fast"].config.speed_mps == cfg.speed_mps
    assert np.array_equal(adj_t[:, 0], adj) and (adj_t != adj[:, None]).any()
    # the stored graphs are those the simulator had at each observation
    sim = BatchedNetworks(header.scenarios["fast"].config, [int(s) for s in seeds])
    for t in range(60):
        sim.step(acts[:, t])
        assert np.array_equal(sim.adjacency, adj_t[:, t + 1])
    # windows: the mean field of each frame over that frame's neighbours, on both samplers
    ds = open_windows(out, horizon=4, gamma=0.9)
    idx = np.arange(ds.n_windows)
    got = ds.get(idx)
    torch_got = ds.torch_sampler("cpu", ("x", "xbar")).get(torch.as_tensor(idx))
    assert np.allclose(torch_got["xbar"].numpy(), got["xbar"], atol=1e-5)
    for k in np.random.default_rng(0).choice(ds.n_windows, 200):
        name, traj, agent, t = ds.locate(int(k))
        if name != "fast":
            continue
        with open_h5(out) as f:
            obs = f["scenarios"]["fast"]["obs"][traj]
        for h in range(4):
            nb_ = adj_t[traj, t + h, agent]
            want = obs[t + h][nb_].mean(axis=0) if nb_.any() else np.zeros(4)
            assert np.allclose(got["xbar"][k, h], want, atol=1e-5)
    validate(out)
