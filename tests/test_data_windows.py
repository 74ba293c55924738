"""Training windows: x, the mean field xbar, actions and the discounted horizon return y."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from macdmp.data.collect import CollectSettings, collect
from macdmp.data.windows import open_windows

H, GAMMA = 6, 0.9


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("win")
    paths = []
    for seed in (1, 2):
        p = folder / f"s{seed}.h5"
        collect(CollectSettings(out=str(p), scenarios=["n8-4to4", "n9-2to7"], trajectories=4,
                                frames=30, seed=seed, batch_size=3), progress=False)  # fmt: skip
        paths.append(p)
    return paths[0], paths[1]


def raw(path: Path) -> dict[str, dict[str, np.ndarray]]:
    with h5py.File(path) as f:
        return {name: {k: g[k][:] for k in g} for name, g in f["scenarios"].items()}


def test_windows_match_brute_force(files):
    ds = open_windows(files[0], H, GAMMA)
    data = raw(files[0])
    assert ds.obs_dim == 4 and ds.rbs == 40 and ds.horizon == H and ds.gamma == GAMMA
    assert ds.n_windows == sum(g["obs"].shape[0] * g["obs"].shape[2] * (30 - H + 1)
                               for g in data.values())  # fmt: skip
    index = np.random.default_rng(0).integers(0, ds.n_windows, 300)
    index[:2] = [0, ds.n_windows - 1]  # both ends
    batch = ds.get(index)
    for key, shape in (("x", (300, H, 4)), ("xbar", (300, H, 4)), ("act", (300, H)), ("y", (300,))):
        assert batch[key].shape == shape and batch[key].dtype == np.float32
    for b, w in enumerate(index):
        name, traj, agent, t = ds.locate(int(w))
        assert 0 <= t <= 30 - H
        g = data[name]
        obs = g["obs"][traj].astype(np.float64)
        assert np.array_equal(batch["x"][b], obs[t : t + H, agent])
        neighbours = [j for j in range(obs.shape[1]) if g["adjacency"][traj, agent, j]]
        assert neighbours and agent not in neighbours
        mean = np.mean([obs[t : t + H, j] for j in neighbours], axis=0)
        np.testing.assert_allclose(batch["xbar"][b], mean, rtol=1e-6)
        np.testing.assert_array_equal(batch["act"][b], g["actions"][traj, t : t + H, agent])
        direct = sum(GAMMA**k * float(g["rewards"][traj, t + k, agent]) for k in range(H))
        np.testing.assert_allclose(batch["y"][b], direct, rtol=1e-5, atol=1e-4)


def test_sample_stats_fingerprint_seeds(files):
    a = open_windows(files[0], H, GAMMA)
    b = open_windows(files[1], H, GAMMA)
    batch = a.sample(64, np.random.default_rng(5))
    again = a.sample(64, np.random.default_rng(5))
    for key in batch:
        np.testing.assert_array_equal(batch[key], again[key])
    assert np.all(batch["y"] <= 0)
    st = a.stats
    for key in ("obs_mean", "obs_std", "mf_mean", "mf_std"):
        assert st[key].shape == (4,) and st[key].dtype == np.float32
    for key in ("act_mean", "act_std", "ret_mean", "ret_std"):
        assert st[key].shape == () and st[key].dtype == np.float32
    assert all(np.all(st[k] > 0) for k in st if k.endswith("_std"))
    assert st is a.stats  # cached
    assert a.fingerprint == open_windows(files[0], H + 1, GAMMA).fingerprint
    assert a.fingerprint != b.fingerprint
    seeds = np.concatenate([g["seeds"] for g in raw(files[0]).values()])
    np.testing.assert_array_equal(a.train_seeds(), np.sort(seeds))
    assert a.train_seeds().max() < 2**31
    assert not set(a.train_seeds()) & set(b.train_seeds())


def test_sampling_is_uniform_over_scenarios(files):
    ds = open_windows(files[0], H, GAMMA)
    index = np.random.default_rng(1).integers(0, ds.n_windows, 4000)
    names = [ds.locate(int(i))[0] for i in index]
    share_8 = names.count("n8-4to4") / len(names)
    # 2 trajectories x 8 agents vs 2 x 9: windows in proportion 8:9
    assert abs(share_8 - 8 / 17) < 0.03


def test_bad_arguments(files):
    with pytest.raises(ValueError, match="horizon"):
        open_windows(files[0], 31, GAMMA)
    with pytest.raises(ValueError, match="gamma"):
        open_windows(files[0], H, 1.5)
    with pytest.raises(FileNotFoundError):
        open_windows(files[0].with_name("missing.h5"), H, GAMMA)


def test_torch_windows_match_the_numba_gather(files):
    """The trainer's on-device gather serves exactly the windows of WindowDataset.get."""
    import torch

    ds = open_windows(files[0], H, GAMMA)
    tw = ds.torch_sampler("cpu")
    index = np.random.default_rng(1).integers(0, ds.n_windows, 500)
    index[:2] = [0, ds.n_windows - 1]
    want = ds.get(index)
    got = tw.get(torch.as_tensor(index))
    for key in ("x", "xbar", "act", "y"):
        np.testing.assert_allclose(got[key].numpy(), want[key], rtol=1e-5, atol=1e-4)
    for b, w in enumerate(index[:50]):  # rewards, one by one
        name, traj, agent, t = ds.locate(int(w))
        rew = raw(files[0])[name]["rewards"][traj, t : t + H, agent]
        np.testing.assert_array_equal(got["rew"][b].numpy(), rew)
    batch = tw.sample(64, torch.Generator().manual_seed(0))
    assert batch["x"].shape == (64, H, 4) and batch["y"].shape == (64,)
    assert "rtg" not in batch  # served only when asked for


def test_returns_to_go_sum_the_rest_of_the_trajectory(files):
    """rtg: the undiscounted sum of the agent's rewards from each window frame to the end."""
    import torch

    ds = open_windows(files[0], H, GAMMA)
    tw = ds.torch_sampler("cpu", ("rew", "rtg"))
    index = np.random.default_rng(2).integers(0, ds.n_windows, 200)
    index[:2] = [0, ds.n_windows - 1]
    got = tw.get(torch.as_tensor(index))
    want = ds.get(index)["rtg"]
    np.testing.assert_allclose(got["rtg"].numpy(), want, rtol=1e-5, atol=1e-3)
    for b, w in enumerate(index[:40]):
        name, traj, agent, t = ds.locate(int(w))
        rew = raw(files[0])[name]["rewards"][traj, :, agent].astype(np.float64)
        expect = [rew[t + h :].sum() for h in range(H)]
        np.testing.assert_allclose(got["rtg"][b].numpy(), expect, rtol=1e-5, atol=1e-3)
    # consecutive frames differ by the reward: rtg_t = r_t + rtg_{t+1}
    np.testing.assert_allclose(
        got["rtg"][:, :-1] - got["rtg"][:, 1:], got["rew"][:, :-1], rtol=1e-4, atol=1e-3
    )
    s = ds.stats
    assert s["rtg_std"] > 0 and s["rew_mean"] <= 0 and s["rtg_start_best"] <= 0
    assert set(ds.torch_sampler("cpu", ("x", "act")).sample(3)) == {"x", "act"}
    with pytest.raises(ValueError, match="keys"):
        ds.torch_sampler("cpu", ("x", "nope"))
