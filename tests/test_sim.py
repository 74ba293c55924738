"""Tests that pin the simulator's model (spec sections 1-3)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from macdmp.app.main import main
from macdmp.policies import make_policy
from macdmp.sim.config import PRESETS, ConfigError, ScenarioConfig, load_scenario, rf_preset
from macdmp.sim.core import DELIV, DROP_BUF, DROP_RETRY, GEN, TX, ActionError, BatchedNetworks
from macdmp.sim.env import parallel_env
from macdmp.sim.network import TopologyError, build_network, packet_error_rate, received_power_dbm


def two_nodes(distance_m: float, rates=(0.05, 0.0), rf: str = "ideal", **kw) -> ScenarioConfig:
    """Node 0 sends to node 1 over one link."""
    return ScenarioConfig(
        name="link",
        n_nodes=2,
        n_high=0,
        positions_m=((0.0, 0.0), (distance_m, 0.0)),
        rates_ppf=rates,
        destinations="fixed",
        dest=(1, 0),
        rf=rf_preset(rf),
        **kw,
    )


def run(sim: BatchedNetworks, policy, frames: int, check=None):
    pol = make_policy(policy) if isinstance(policy, str) else policy
    pol.reset(sim)
    obs = sim.obs
    for _ in range(frames):
        res = sim.step(pol.act(obs, sim.mean_field(obs)))
        obs = res.obs
        if check is not None:
            check(sim, res)
    return res


# ---- radio -------------------------------------------------------------------------
def test_link_budget_matches_spec():
    ideal, limited = rf_preset("ideal"), rf_preset("limited")
    assert received_power_dbm(np.array(3600.0), ideal) == pytest.approx(-90.1, abs=0.1)
    assert packet_error_rate(np.array(3600.0), ideal, 1000) < 1e-9
    assert packet_error_rate(np.array(3000.0), limited, 1000) == pytest.approx(0.016, abs=0.004)
    assert packet_error_rate(np.array(3600.0), limited, 1000) == pytest.approx(0.23, abs=0.02)


def test_limited_rf_loses_packets_only_on_long_links():
    for d, lossy in ((1000.0, False), (3500.0, True)):
        sim = BatchedNetworks(two_nodes(d, rates=(2.0, 0.0), rf="limited"), [0])
        run(sim, "static:40,0", 3000)
        tx, delivered = sim.totals[0, TX], sim.totals[0, DELIV]
        assert (tx > delivered * 1.05) == lossy, (d, tx, delivered)
    # and the routes do not change: limited RF keeps the ideal 1-hop graph
    cfg = PRESETS["n9-2to7"]
    a = BatchedNetworks(cfg, [5])
    b = BatchedNetworks(cfg.with_rf("limited"), [5])
    assert np.array_equal(a.adjacency, b.adjacency) and np.array_equal(a.next_hop, b.next_hop)
    short = a.networks[0].positions_m
    dist = np.linalg.norm(short[:, None] - short[None], axis=-1)
    links = b.networks[0].adjacency
    assert np.all(b.per[0][links & (dist < 2500)] < 1e-3)


# ---- topology ----------------------------------------------------------------------
def test_topologies_are_connected_and_routed():
    for name, cfg in PRESETS.items():
        sim = BatchedNetworks(cfg, list(range(8)))
        for net in sim.networks:
            assert net.adjacency.sum(axis=1).min() >= 1, name
            assert np.all(net.hops[~np.eye(cfg.n_nodes, dtype=bool)] >= 1)
            for i in range(cfg.n_nodes):
                for d in range(cfg.n_nodes):
                    if i != d:
                        assert net.adjacency[i, net.next_hop[i, d]]
                        assert net.hops[net.next_hop[i, d], d] == net.hops[i, d] - 1
        # load calibration: sum of rate x mean hops = load x M x L
        total = [float(np.sum(n.carried_ppf)) for n in sim.networks]
        assert total == pytest.approx([cfg.load * cfg.rbs] * 8)
        assert np.all(sim.is_high.sum(axis=1) == cfg.n_high)


def test_unconnectable_layout_gives_clear_error():
    cfg = ScenarioConfig(n_nodes=9, range_m=200.0, max_topology_tries=20)
    with pytest.raises(TopologyError, match="max_topology_tries"):
        build_network(cfg, np.random.default_rng(0))
    far = ScenarioConfig(n_nodes=2, n_high=0, positions_m=((0, 0), (9000, 0)))
    with pytest.raises(ConfigError, match="not connected"):
        BatchedNetworks(far, [0])


# ---- MAC ---------------------------------------------------------------------------
def test_grants_never_exceed_frame_and_no_rb_twice():
    cfg = PRESETS["n9-4to5"]
    sim = BatchedNetworks(cfg, list(range(16)))
    rng = np.random.default_rng(0)
    for _ in range(200):
        demands = rng.uniform(0, 30, size=(16, 9)) * (rng.random((16, 9)) < 0.7)
        res = sim.step(demands)
        assert np.all(res.grants.sum(axis=1) <= cfg.rbs)
        # every granted RB is owned by exactly the node it was granted to, once
        owners = sim._owner
        for b in range(16):
            counts = np.bincount(owners[b][owners[b] >= 0], minlength=9)
            assert np.array_equal(counts, res.grants[b])
        # each grant is the floor or the ceiling of the (scaled) demand
        clipped = np.minimum(demands, cfg.rbs)
        scale = np.minimum(1.0, cfg.rbs / np.maximum(clipped.sum(axis=1, keepdims=True), 1e-12))
        want = clipped * scale
        assert np.all(res.grants >= np.floor(want - 1e-9))
        assert np.all(res.grants <= np.ceil(want + 1e-9))


def test_systematic_rounding_is_unbiased():
    cfg = two_nodes(1000.0)
    sim = BatchedNetworks(cfg, list(range(64)))
    total = np.zeros(2)
    frames = 200
    for _ in range(frames):
        total += sim.step(np.tile([1.4, 2.3], (64, 1))).grants.sum(axis=0)
    assert total / (64 * frames) == pytest.approx([1.4, 2.3], abs=0.03)


def test_packets_are_conserved_every_frame_and_queues_bounded():
    # overload, tiny buffers and limited RF exercise every way a packet can end
    cfg = PRESETS["n8-4to4"].replace(load=1.6, queue_capacity=12, rf="limited")
    sim = BatchedNetworks(cfg, list(range(6)))

    def check(sim, res):
        t = sim.totals
        assert np.array_equal(
            t[:, GEN], t[:, DELIV] + t[:, DROP_BUF] + t[:, DROP_RETRY] + sim.queued()
        )
        assert np.all(sim.q_len <= cfg.queue_capacity)
        assert np.all(res.obs[..., 1] <= cfg.queue_capacity)
        assert np.all(res.obs[..., 3] <= cfg.queue_capacity)
        assert np.all(res.obs[..., 1] >= res.obs[..., 0])
        assert np.all(res.obs[..., 3] >= res.obs[..., 2])
        assert np.all(res.min_delay_ms >= cfg.slot_ms)

    run(sim, "random", 300, check)
    assert sim.totals[:, DROP_BUF].sum() > 0 and sim.totals[:, DROP_RETRY].sum() > 0


def test_single_link_delay_matches_independent_calculation():
    """One link, no loss, a static grant of one RB per frame, negligible load.

    A packet born in slot s (at a uniform offset) can use the frame's RB if it lies in a later
    slot r > s, otherwise the next frame's RB at slot r'; it arrives at the end of that slot.
    """
    m, slot = 10, 0.5
    expected = 0.0
    for s in range(m):
        for r in range(m):
            if r > s:
                expected += ((r - s) * slot) / m**2
            else:
                expected += sum((m - 1 - s) * slot + (r2 + 1) * slot for r2 in range(m)) / m**3
    expected += slot / 2  # from birth to the end of its own slot
    cfg = two_nodes(1000.0, rates=(0.02, 0.0))
    sim = BatchedNetworks(cfg, list(range(64)))
    run(sim, "static:1,0", 15000)
    measured = sim.totals[:, 4].sum() / sim.totals[:, DELIV].sum()
    assert measured == pytest.approx(expected, rel=0.03)
    # all 40 RBs every frame: the packet leaves in the slot after its birth
    sim = BatchedNetworks(cfg, list(range(64)))
    run(sim, "static:40,0", 5000)
    measured = sim.totals[:, 4].sum() / sim.totals[:, DELIV].sum()
    assert measured == pytest.approx(slot * 1.5, rel=0.03)


def test_reward_is_minus_delay_held_between_deliveries():
    cfg = two_nodes(1000.0, rates=(0.5, 0.0))
    sim = BatchedNetworks(cfg, [1])
    last = 0.0
    for _ in range(300):
        res = sim.step(np.array([[40.0, 0.0]]))
        if res.delivered_to[0, 1] > 0:
            last = -res.stats[0, 4] / res.stats[0, DELIV]
        assert res.reward[0, 1] == pytest.approx(last)
        assert res.reward[0, 0] == 0.0  # nothing is ever delivered to node 0


# ---- reproducibility -----------------------------------------------------------------
def test_same_seed_same_output_and_batch_layout_does_not_matter():
    cfg = PRESETS["n9-2to7"]
    runs = []
    for seeds in ([11, 12, 13], [11, 12, 13], [13, 99, 11, 12]):
        sim = BatchedNetworks(cfg, seeds)
        pol = make_policy("behaviour", seed=0)
        obs_log = []
        pol.reset(sim)
        obs = sim.obs
        for _ in range(100):
            res = sim.step(np.full((len(seeds), 9), 4.4))
            obs_log.append(res.obs)
            obs = res.obs
        runs.append((seeds, np.stack(obs_log, axis=1), sim.totals.copy()))
        del obs
    assert np.array_equal(runs[0][1], runs[1][1]) and np.array_equal(runs[0][2], runs[1][2])
    # network 12 evolves identically alone in a batch or among others
    assert np.array_equal(runs[0][1][1], runs[2][1][3])


# ---- policies ------------------------------------------------------------------------
def test_allocators_shape_and_definitions():
    cfg = PRESETS["n8-2to6"]
    sim = BatchedNetworks(cfg, [0, 1])
    run(sim, "carried", 20)
    obs, mf = sim.obs, sim.mean_field()
    for name in (
        "equal",
        "ratio",
        "carried",
        "proportional",
        "maxweight",
        "backpressure",
        "random",
        "static:3",
        "behaviour:0.3",
    ):
        pol = make_policy(name)
        pol.reset(sim)
        d = pol.act(obs, mf)
        assert d.shape == (2, 8) and np.all(d >= 0) and np.all(np.isfinite(d)), name
    carried = make_policy("carried")
    carried.reset(sim)
    assert carried.act(obs, mf).sum(axis=1) == pytest.approx([40, 40])
    mw = make_policy("maxweight")
    mw.reset(sim)
    backlog = obs[..., 0] + obs[..., 2]
    assert np.allclose(mw.act(obs, mf).sum(axis=1), np.minimum(backlog.sum(axis=1), 40))


def test_mean_field_is_neighbour_mean():
    sim = BatchedNetworks(PRESETS["n9-4to5"], [4])
    run(sim, "carried", 30)
    mf = sim.mean_field()
    adj = sim.adjacency[0]
    for i in range(9):
        assert np.allclose(mf[0, i], sim.obs[0, adj[i]].mean(axis=0))


# ---- PettingZoo -----------------------------------------------------------------------
def test_pettingzoo_parallel_api():
    from pettingzoo.test import parallel_api_test

    env = parallel_env(scenario="n8-4to4", rf="limited", seed=2, frames=50)
    parallel_api_test(env, num_cycles=60)


def test_pettingzoo_matches_batched_core():
    env = parallel_env(scenario="n9-2to7", seed=21, frames=40)
    obs, infos = env.reset()
    sim = BatchedNetworks(PRESETS["n9-2to7"], [21])
    while env.agents:
        obs, rewards, _, trunc, infos = env.step({a: 4.0 for a in env.agents})
        res = sim.step(np.full((1, 9), 4.0))
        assert np.array_equal(np.stack(list(obs.values())), res.obs[0])
    assert all(trunc.values())
    assert np.allclose(infos["node_0"]["mean_field"], sim.mean_field()[0, 0])


# ---- bad input ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "demands, match",
    [
        (np.full((1, 9), np.nan), "finite"),
        (np.full((1, 9), -1.0), ">= 0"),
        (np.ones((1, 5)), "shape"),
        ("lots", "numbers"),
    ],
)
def test_bad_actions_are_rejected(demands, match):
    sim = BatchedNetworks(PRESETS["n9-2to7"], [0])
    with pytest.raises(ActionError, match=match):
        sim.step(demands)


def test_bad_env_actions_are_rejected():
    env = parallel_env(seed=0)
    env.reset()
    with pytest.raises(ActionError, match="missing"):
        env.step({"node_0": 1.0})
    with pytest.raises(ActionError, match="one number"):
        env.step({a: [1.0, 2.0] for a in env.agents})


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"load": -1}, "load"),
        ({"n_nodes": 1}, "n_nodes"),
        ({"queue_capacity": 0}, "queue_capacity"),
        ({"scheduling": "lifo"}, "scheduling"),
        ({"load": float("nan")}, "load"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_config_names_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        PRESETS["n9-2to7"].replace(**changes)


def test_unknown_names_list_allowed_values():
    with pytest.raises(ConfigError, match="n8-2to6"):
        load_scenario("n10-whatever")
    with pytest.raises(ConfigError, match="ideal"):
        load_scenario("n9-2to7", rf="awful")
    with pytest.raises(ValueError, match="maxweight"):
        make_policy("greedy")


def test_toml_scenario(tmp_path):
    good = tmp_path / "mine.toml"
    good.write_text("base = \"n9-2to7\"\nload = 0.5\n[rf]\nname = 'limited'\n")
    cfg = load_scenario(good)
    assert cfg.load == 0.5 and cfg.n_nodes == 9 and cfg.rf.carrier_hz == 2.4e9
    explicit = tmp_path / "line.toml"
    explicit.write_text(
        "positions_m = [[0, 0], [3000, 0], [6000, 0]]\n"
        "n_high = 0\nrates_ppf = [2.0, 0.0, 1.0]\n"
        'destinations = "fixed"\ndest = [2, 0, 0]\n'
    )
    cfg = load_scenario(explicit)
    sim = BatchedNetworks(cfg, [0])
    assert cfg.n_nodes == 3 and sim.next_hop[0, 0, 2] == 1
    assert sim.carried_ppf[0] == pytest.approx([2.0, 3.0, 1.0])
    bad = tmp_path / "bad.toml"
    bad.write_text("load = [oops\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_scenario(bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('base = "n9-2to7"\nload = "high"\n')
    with pytest.raises(ConfigError, match="load"):
        load_scenario(wrong)


# ---- CLI ------------------------------------------------------------------------------
def test_cli_simulate_json(capsys, tmp_path):
    png = tmp_path / "topo.png"
    rc = main(
        [
            "simulate",
            "--scenario",
            "n8-2to6",
            "--policy",
            "maxweight",
            "--frames",
            "200",
            "--seed",
            "3",
            "--episodes",
            "2",
            "--json",
            "--plot",
            str(png),
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for key in (
        "throughput_mbps",
        "mean_delay_ms",
        "loss_rate",
        "avg_reward",
        "generated",
        "delivered",
        "dropped",
        "queued",
    ):
        assert key in out and math.isfinite(out[key])
    assert out["generated"] == out["delivered"] + out["dropped"] + out["queued"]
    assert png.stat().st_size > 10_000


def test_cli_bad_input_is_one_clear_line(capsys):
    assert main(["simulate", "--policy", "nope", "--frames", "5"]) == 2
    err = capsys.readouterr().err
    assert "unknown policy" in err and "Traceback" not in err
    assert main(["simulate", "--scenario", "n7", "--frames", "5"]) == 2
    assert "unknown scenario" in capsys.readouterr().err


def test_pettingzoo_infos_report_the_frame():
    env = parallel_env(scenario="n9-2to7", seed=5, frames=200)
    _, infos = env.reset()
    assert infos["node_0"]["delivered"] == 0 and math.isnan(infos["node_0"]["delay_ms"])
    sim = BatchedNetworks(PRESETS["n9-2to7"], [5])
    delivered = dropped = 0
    for _ in range(200):
        # tiny demands: queues fill up, so packets are dropped as well as delivered
        _, rewards, _, _, infos = env.step({a: 0.5 for a in env.agents})
        res = sim.step(np.full((1, 9), 0.5))
        for i, a in enumerate(env.possible_agents):
            info = infos[a]
            assert info["delivered"] == res.delivered_to[0, i]
            assert info["dropped"] == res.dropped_at[0, i]
            if info["delivered"]:
                assert info["delay_ms"] == pytest.approx(-rewards[a])
            else:
                assert math.isnan(info["delay_ms"])
        assert res.dropped_at.sum() == res.stats[0, DROP_BUF] + res.stats[0, DROP_RETRY]
        assert res.delivered_to.sum() == res.stats[0, DELIV]
        delivered += res.delivered_to.sum()
        dropped += res.dropped_at.sum()
    assert delivered > 0 and dropped > 0


def test_pettingzoo_render_rgb_array():
    env = parallel_env(scenario="n8-2to6", seed=1, frames=100, render_mode="rgb_array")
    env.reset()
    first = env.render()
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    assert first.shape[0] >= 300 and first.shape[1] >= 300
    assert np.array_equal(first, env.render())  # same state, same picture
    for _ in range(30):
        env.step({a: 0.0 for a in env.agents})  # nothing sent: queues grow
    later = env.render()
    assert later.shape == first.shape and not np.array_equal(first, later)


def test_pettingzoo_render_modes_are_checked(monkeypatch):
    with pytest.raises(ValueError, match="render_mode"):
        parallel_env(render_mode="ascii")
    env = parallel_env()
    env.reset()
    with pytest.warns(UserWarning, match="render_mode"):
        assert env.render() is None
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(RuntimeError, match="display"):
        parallel_env(render_mode="human")
