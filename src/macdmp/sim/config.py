"""Scenario configuration: every parameter of the simulated network, validated when built.

Defaults follow `shared/spec/system-model.md` (sections 1-3); `docs/guide/simulator.md` lists them
with their units. A scenario is either one of the paper's named presets or a TOML file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what is allowed."""


# Validation helpers -----------------------------------------------------------------
def _finite(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"{name}: must be a finite number, got {v!r}")


def _positive(name: str, v: Any) -> None:
    _finite(name, v)
    if v <= 0:
        raise ConfigError(f"{name}: must be > 0, got {v!r}")


def _nonneg(name: str, v: Any) -> None:
    _finite(name, v)
    if v < 0:
        raise ConfigError(f"{name}: must be >= 0, got {v!r}")


def _int_range(name: str, v: Any, lo: int, hi: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"{name}: must be an integer in [{lo}, {hi}], got {v!r}")


def _choice(name: str, v: Any, allowed: tuple[str, ...]) -> None:
    if v not in allowed:
        raise ConfigError(f"{name}: {v!r} is not one of {', '.join(allowed)}")


RF_MODES = ("ideal", "limited")
SCHEDULING = ("earliest", "transit_first", "own_first")
REWARDS = ("delay",)
DESTINATIONS = ("uniform", "fixed")
TRAFFIC = ("poisson", "sessions", "bursty")
BURST_KINDS = ("high-low", "on-off")
PROFILE_INTERP = ("linear", "step")
MOBILITY = ("static", "waypoint")
# Upper bounds on values that would otherwise exhaust memory or time without a word.
MAX_NODES = 256
MAX_LOAD = 10.0
MAX_SPEED_MPS = 10_000.0
MAX_PROFILE_POINTS = 1000


@dataclass(frozen=True)
class RFConfig:
    """Link budget of one RF condition (paper Eq. 9-10, spec section 1)."""

    name: str = "ideal"
    carrier_hz: float = 1.5e9
    tx_power_dbm: float = 17.0
    gain_tx_dbi: float = 0.0
    gain_rx_dbi: float = 0.0
    bandwidth_hz: float = 2e6
    noise_figure_db: float = 6.0

    def __post_init__(self) -> None:
        _positive("rf.carrier_hz", self.carrier_hz)
        _positive("rf.bandwidth_hz", self.bandwidth_hz)
        for f in ("tx_power_dbm", "gain_tx_dbi", "gain_rx_dbi", "noise_figure_db"):
            _finite(f"rf.{f}", getattr(self, f))


RF_PRESETS: dict[str, RFConfig] = {
    "ideal": RFConfig(name="ideal", carrier_hz=1.5e9, tx_power_dbm=17.0),
    "limited": RFConfig(name="limited", carrier_hz=2.4e9, tx_power_dbm=14.0),
}


def rf_preset(name: str) -> RFConfig:
    """The named RF condition: 'ideal' or 'limited'."""
    if name not in RF_PRESETS:
        raise ConfigError(f"rf: unknown RF condition {name!r}; allowed: {', '.join(RF_MODES)}")
    return RF_PRESETS[name]


@dataclass(frozen=True)
class ScenarioConfig:
    """One network scenario. Times in ms, distances in m, rates in packets per frame."""

    name: str = "custom"
    n_nodes: int = 9
    n_high: int = 2
    area_m: float = 10_000.0
    range_m: float = 3_600.0
    rate_ratio: float = 4.0
    load: float = 0.7
    slots: int = 10
    channels: int = 4
    frame_ms: float = 5.0
    packet_bits: int = 1000
    queue_capacity: int = 256
    max_retries: int = 3
    scheduling: str = "earliest"
    destinations: str = "uniform"
    reward: str = "delay"
    episode_frames: int = 1000
    max_topology_tries: int = 10_000
    rf: RFConfig = field(default_factory=RFConfig)
    # Optional explicit network (from a TOML file): positions fix the topology,
    # rates_ppf override the load calibration, dest fixes each node's destination,
    # high_nodes fixes which nodes are high-rate.
    positions_m: tuple[tuple[float, float], ...] | None = None
    rates_ppf: tuple[float, ...] | None = None
    dest: tuple[int, ...] | None = None
    high_nodes: tuple[int, ...] | None = None
    # Traffic process (docs/guide/simulator.md, "Traffic that changes"). Every process is calibrated
    # so that each node's long-run mean rate is the one the load rule gives.
    traffic: str = "poisson"
    session_mean_active: float = 4.0  # sessions: mean number of active services per node
    session_duration_s: float = 1.0  # sessions: mean lifetime of a service (exponential), s
    session_rate_spread: float = 0.5  # sessions: a service's rate is uniform in mean*(1 +- this)
    session_max: int = 32  # sessions: services a node can hold at once (more are refused)
    burst_kind: str = "high-low"  # bursty: "high-low" or "on-off" (nothing sent when low)
    burst_ratio: float = 4.0  # bursty, high-low: the high state's rate over the low state's
    burst_high_ms: float = 250.0  # bursty: mean dwell time in the high (on) state, ms
    burst_low_ms: float = 750.0  # bursty: mean dwell time in the low (off) state, ms
    # The load along an episode: [[frame, load], ...] from frame 0, increasing frames; the
    # rates follow load(t) / load. Repeats with the last point's frame as its period.
    load_profile: tuple[tuple[float, float], ...] | None = None
    load_profile_interp: str = "linear"
    # Mobility: random waypoint at speed_mps; links, PER and routes recomputed every
    # route_every frames (positions move every frame).
    mobility: str = "static"
    speed_mps: float = 0.0
    route_every: int = 20

    def __post_init__(self) -> None:
        _int_range("n_nodes", self.n_nodes, 2, MAX_NODES)
        _int_range("n_high", self.n_high, 0, self.n_nodes)
        _positive("area_m", self.area_m)
        _positive("range_m", self.range_m)
        _positive("rate_ratio", self.rate_ratio)
        _positive("load", self.load)
        if self.load > MAX_LOAD:
            raise ConfigError(f"load: must be <= {MAX_LOAD:g} (got {self.load!r})")
        _int_range("slots", self.slots, 1, 1000)
        _int_range("channels", self.channels, 1, 1000)
        _positive("frame_ms", self.frame_ms)
        _int_range("packet_bits", self.packet_bits, 1, 10**7)
        _int_range("queue_capacity", self.queue_capacity, 1, 1 << 20)
        _int_range("max_retries", self.max_retries, 0, 100)
        _int_range("episode_frames", self.episode_frames, 1, 10**9)
        _int_range("max_topology_tries", self.max_topology_tries, 1, 10**8)
        _choice("scheduling", self.scheduling, SCHEDULING)
        _choice("destinations", self.destinations, DESTINATIONS)
        _choice("reward", self.reward, REWARDS)
        self._check_dynamics()
        if not isinstance(self.rf, RFConfig):
            raise ConfigError(f"rf: expected an RFConfig or one of {RF_MODES}, got {self.rf!r}")
        n = self.n_nodes
        if self.positions_m is not None:
            if len(self.positions_m) != n or any(len(p) != 2 for p in self.positions_m):
                raise ConfigError(f"positions_m: expected {n} pairs [x_m, y_m], one per node")
            for i, (x, y) in enumerate(self.positions_m):
                _finite(f"positions_m[{i}]", x)
                _finite(f"positions_m[{i}]", y)
        if self.rates_ppf is not None:
            if len(self.rates_ppf) != n:
                raise ConfigError(f"rates_ppf: expected {n} values (packets per frame per node)")
            for i, r in enumerate(self.rates_ppf):
                _nonneg(f"rates_ppf[{i}]", r)
        if self.dest is not None:
            if len(self.dest) != n:
                raise ConfigError(f"dest: expected {n} destination indices, one per node")
            for i, d in enumerate(self.dest):
                if not isinstance(d, int) or not 0 <= d < n or d == i:
                    raise ConfigError(
                        f"dest[{i}]: must be a node index in [0, {n - 1}] other than {i}, got {d!r}"
                    )
        if self.destinations == "fixed" and self.dest is None:
            raise ConfigError("destinations: 'fixed' needs the field dest (one index per node)")
        if self.high_nodes is not None:
            if len(set(self.high_nodes)) != len(self.high_nodes) or any(
                not isinstance(h, int) or not 0 <= h < n for h in self.high_nodes
            ):
                raise ConfigError(f"high_nodes: distinct node indices in [0, {n - 1}] expected")
            if len(self.high_nodes) != self.n_high:
                raise ConfigError(
                    f"high_nodes: lists {len(self.high_nodes)} nodes but n_high is {self.n_high}"
                )

    def _check_dynamics(self) -> None:
        _choice("traffic", self.traffic, TRAFFIC)
        _positive("session_mean_active", self.session_mean_active)
        _positive("session_duration_s", self.session_duration_s)
        _nonneg("session_rate_spread", self.session_rate_spread)
        if self.session_rate_spread > 1:
            raise ConfigError(
                f"session_rate_spread: must be in [0, 1], got {self.session_rate_spread!r}"
            )
        _int_range("session_max", self.session_max, 1, 1024)
        if self.traffic == "sessions" and self.session_mean_active > self.session_max / 4:
            raise ConfigError(
                f"session_mean_active: must be <= session_max / 4 = {self.session_max / 4:g} so "
                f"that refused services stay rare (got {self.session_mean_active!r}); raise "
                "session_max"
            )
        _choice("burst_kind", self.burst_kind, BURST_KINDS)
        _positive("burst_ratio", self.burst_ratio)
        if self.burst_ratio < 1:
            raise ConfigError(
                f"burst_ratio: must be >= 1 (high over low), got {self.burst_ratio!r}"
            )
        _positive("burst_high_ms", self.burst_high_ms)
        _positive("burst_low_ms", self.burst_low_ms)
        _choice("load_profile_interp", self.load_profile_interp, PROFILE_INTERP)
        if self.load_profile is not None:
            _check_profile(self.load_profile)
        _choice("mobility", self.mobility, MOBILITY)
        _nonneg("speed_mps", self.speed_mps)
        if self.speed_mps > MAX_SPEED_MPS:
            raise ConfigError(f"speed_mps: must be <= {MAX_SPEED_MPS:g}, got {self.speed_mps!r}")
        if self.mobility == "waypoint" and self.speed_mps <= 0:
            raise ConfigError("speed_mps: mobility 'waypoint' needs a speed > 0 (m/s)")
        _int_range("route_every", self.route_every, 1, 10**6)

    @property
    def dynamic(self) -> bool:
        """Whether rates or positions change along an episode."""
        return self.traffic != "poisson" or self.load_profile is not None or self.mobile

    @property
    def mobile(self) -> bool:
        return self.mobility != "static"

    # Derived quantities -------------------------------------------------------------
    @property
    def rbs(self) -> int:
        """Resource blocks per frame, M x L."""
        return self.slots * self.channels

    @property
    def slot_ms(self) -> float:
        return self.frame_ms / self.slots

    @property
    def frames_per_s(self) -> float:
        return 1000.0 / self.frame_ms

    def with_rf(self, rf: str | RFConfig) -> ScenarioConfig:
        """This scenario under another RF condition (routes stay those of the 1-hop range)."""
        return dataclasses.replace(self, rf=rf_preset(rf) if isinstance(rf, str) else rf)

    def replace(self, **changes: Any) -> ScenarioConfig:
        if "rf" in changes and isinstance(changes["rf"], str):
            changes["rf"] = rf_preset(changes["rf"])
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(
                f"unknown scenario field(s) {sorted(unknown)}; allowed: {sorted(field_names())}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScenarioConfig:
        data = dict(data)
        unknown = set(data) - field_names()
        if unknown:
            raise ConfigError(
                f"unknown scenario field(s) {sorted(unknown)}; allowed: {sorted(field_names())}"
            )
        rf = data.pop("rf", "ideal")
        if isinstance(rf, str):
            rf = rf_preset(rf)
        elif isinstance(rf, dict):
            rf_fields = {f.name for f in dataclasses.fields(RFConfig)}
            bad = set(rf) - rf_fields
            if bad:
                raise ConfigError(
                    f"rf: unknown field(s) {sorted(bad)}; allowed: {sorted(rf_fields)}"
                )
            base = rf_preset(rf["name"]) if rf.get("name") in RF_PRESETS else RFConfig()
            rf = dataclasses.replace(base, **rf)
        for key in ("positions_m", "rates_ppf", "dest", "high_nodes", "load_profile"):
            if data.get(key) is not None:
                if not isinstance(data[key], list | tuple):
                    raise ConfigError(f"{key}: expected a list, got {data[key]!r}")
                data[key] = tuple(tuple(v) if isinstance(v, list) else v for v in data[key])
        try:
            return cls(rf=rf, **data)
        except TypeError as exc:  # wrong value types that the checks above did not catch
            raise ConfigError(f"scenario: {exc}") from None


def _check_profile(profile: Any) -> None:
    """load_profile: [[frame, load], ...], first frame 0, frames increasing, loads in (0, max]."""
    form = "a list of [frame, load] pairs, e.g. [[0, 0.6], [400, 1.0], [800, 0.6]]"
    if not isinstance(profile, tuple | list) or not 1 <= len(profile) <= MAX_PROFILE_POINTS:
        raise ConfigError(f"load_profile: expected {form} (1 to {MAX_PROFILE_POINTS} points)")
    last = -1.0
    for k, point in enumerate(profile):
        if not isinstance(point, tuple | list) or len(point) != 2:
            raise ConfigError(f"load_profile[{k}]: expected [frame, load], got {point!r}; {form}")
        frame, load = point
        _nonneg(f"load_profile[{k}] frame", frame)
        _positive(f"load_profile[{k}] load", load)
        if load > MAX_LOAD:
            raise ConfigError(f"load_profile[{k}] load: must be <= {MAX_LOAD:g}, got {load!r}")
        if k == 0 and frame != 0:
            raise ConfigError(f"load_profile[0] frame: the profile must start at frame 0; {form}")
        if k > 0 and frame <= last:
            raise ConfigError(f"load_profile[{k}] frame: frames must increase (got {frame!r})")
        last = frame


def field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(ScenarioConfig)}


# The paper's four scenarios (Sec. VI-A): nodes and high:low rate counts.
PRESETS: dict[str, ScenarioConfig] = {
    "n8-2to6": ScenarioConfig(name="n8-2to6", n_nodes=8, n_high=2),
    "n8-4to4": ScenarioConfig(name="n8-4to4", n_nodes=8, n_high=4),
    "n9-2to7": ScenarioConfig(name="n9-2to7", n_nodes=9, n_high=2),
    "n9-4to5": ScenarioConfig(name="n9-4to5", n_nodes=9, n_high=4),
}
PAPER_SCENARIOS = tuple(PRESETS)

# The scenarios of the families beyond the paper's (sim/families.py groups them): each of the
# paper's four under one change, named SCENARIO-CHANGE, and larger networks by the same rule.
VARIANTS: dict[str, dict[str, Any]] = {
    "load90": {"load": 0.9},
    "load100": {"load": 1.0},
    "sessions": {"traffic": "sessions"},
    "bursty": {"traffic": "bursty"},
    # 8 km, not the paper's 10: in 10 km random waypoint splits 8-9 nodes often enough that
    # packets with no route dominate the loss whatever the allocation (docs/guide/families.md)
    "mobile": {"mobility": "waypoint", "speed_mps": 150.0, "route_every": 20, "area_m": 8000.0},
}
LARGE = {16: 4, 32: 7, 64: 14}  # nodes: high-rate nodes (the 2:7 share of n9-2to7)
SCENARIOS: dict[str, ScenarioConfig] = {
    **PRESETS,
    **{
        f"{base}-{variant}": PRESETS[base].replace(name=f"{base}-{variant}", **changes)
        for variant, changes in VARIANTS.items()
        for base in PAPER_SCENARIOS
    },
    **{
        f"n{n}-large": ScenarioConfig(name=f"n{n}-large", n_nodes=n, n_high=high)
        for n, high in LARGE.items()
    },
}


def load_scenario(spec: str | Path | ScenarioConfig, rf: str | None = None) -> ScenarioConfig:
    """A scenario from a preset name, a TOML file path or a config; `rf` overrides its RF."""
    if isinstance(spec, ScenarioConfig):
        cfg = spec
    elif str(spec) in SCENARIOS:
        cfg = SCENARIOS[str(spec)]
    elif str(spec).endswith(".toml") or Path(str(spec)).is_file():
        cfg = scenario_from_toml(Path(spec))
    else:
        raise ConfigError(
            f"scenario: unknown scenario {str(spec)!r}; allowed: {', '.join(SCENARIOS)} "
            "or the path of a TOML file"
        )
    return cfg.with_rf(rf) if rf is not None else cfg


def scenario_from_toml(path: Path) -> ScenarioConfig:
    """Read a scenario from TOML; an optional `base = "n9-2to7"` starts from a preset."""
    if not path.is_file():
        raise ConfigError(f"scenario: file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"scenario: {path} is not valid TOML: {exc}") from None
    data = dict(data.get("scenario", data))
    base = data.pop("base", None)
    if base is not None:
        if base not in SCENARIOS:
            raise ConfigError(f"base: unknown preset {base!r}; allowed: {', '.join(SCENARIOS)}")
        merged = SCENARIOS[base].to_dict()
        del merged["name"]  # the file's scenario is named after the file unless it says
        merged.update(data)
        data = merged
    data.setdefault("name", path.stem)
    if "positions_m" in data and "n_nodes" not in data:
        data["n_nodes"] = len(data["positions_m"])
    return ScenarioConfig.from_dict(data)
