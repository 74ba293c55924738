"""Methods as plugins: the registry's entry points, ``load_plugins`` (``--plugin MODULE``) and
``MACDMP_PLUGINS``; the example method of ``examples/linear-method`` installed and run through
the command line (train, evaluate, reproduce) and, not installed, through ``--plugin``."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from macdmp.methods import base

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "linear-method"
GROUP = "macdmp.methods"
LINEAR = "macdmp_linear:LinearMethod"
# modules these tests import: dropped afterwards, so that each test imports (registers) anew
TEST_MODULES = ("macdmp_linear", "plug_")


def _ep(name: str, value: str, group: str = GROUP) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=value, group=group)


@pytest.fixture
def registry(monkeypatch):
    """A registry as a fresh process has it: no plugin read yet, no MACDMP_PLUGINS, the entry
    points those of ``set_entry_points`` (none by default); the example's folder on sys.path."""
    monkeypatch.setattr(base, "_PLUGINS", {})
    monkeypatch.setattr(base, "_discovered", False)
    monkeypatch.setattr(base, "_loading", None)
    monkeypatch.setenv(base.PLUGINS_ENV, "")
    monkeypatch.syspath_prepend(str(EXAMPLE))
    eps: list[importlib.metadata.EntryPoint] = []
    calls = []

    def entry_points(**select):
        calls.append(select)
        return [e for e in eps if all(getattr(e, k) == v for k, v in select.items())]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)

    class Registry:
        def set_entry_points(self, *entries):
            eps[:] = entries

    reg = Registry()
    reg.calls = calls
    yield reg
    for name in list(sys.modules):
        if name.startswith(TEST_MODULES):
            del sys.modules[name]


@pytest.fixture
def plug_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _write(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(body))
    importlib.invalidate_caches()


# --- the registry -------------------------------------------------------------------------


def test_entry_points_are_read_once_and_lazily_without_importing(registry):
    registry.set_entry_points(_ep("my-linear", LINEAR), _ep("other", "x:Y", group="elsewhere"))
    assert registry.calls == []  # nothing read at import
    names = base.method_names()
    assert names[: len(base._REGISTRY)] == tuple(base._REGISTRY)  # built-ins first
    assert names[len(base._REGISTRY) :] == ("my-linear",) == base.plugin_methods()
    assert "macdmp_linear" not in sys.modules  # recorded, not imported
    base.method_names(), base.plugin_methods()
    assert registry.calls == [{"group": GROUP}]  # read once
    cls = base.get_method("my-linear")  # imported on first use
    assert cls.__name__ == "LinearMethod" and cls.name == "my-linear"
    assert base.get_method("my-linear") is cls
    # its module registers itself at import too: the same class again, a no-op
    assert base.plugin_methods() == ("my-linear",)
    cfg = base.make_config("my-linear", "demo", max_steps=7)
    assert isinstance(cfg, cls.config_class) and cfg.total_steps == 7
    assert {"demo", "paper"} <= set(cls.presets)


def test_a_plugin_may_not_take_a_builtin_name(registry):
    registry.set_entry_points(_ep("bc", LINEAR))
    for _ in range(2):  # refused on every call, not once and then forgotten
        with pytest.raises(ValueError) as err:
            base.method_names()
        msg = str(err.value)
        assert "'bc'" in msg and LINEAR in msg and base._REGISTRY["bc"] in msg
        assert "built-in" in msg and "entry point" in msg
    registry.set_entry_points()
    with pytest.raises(ValueError, match="built-in method macdmp.baselines.bc"):
        base.register_method("bc", LINEAR)
    assert base.get_method("bc").__name__ == "BehaviourCloning"  # unchanged


def test_one_name_one_method(registry):
    a = _ep("twice", "plug_a:A")
    b = _ep("twice", "plug_b:B")
    registry.set_entry_points(a, b)
    with pytest.raises(ValueError) as err:
        base.plugin_methods()
    assert "plug_a:A" in str(err.value) and "plug_b:B" in str(err.value)
    registry.set_entry_points(_ep("my-linear", LINEAR))
    base.register_method("my-linear", LINEAR)  # the same target again: a no-op
    assert base.plugin_methods() == ("my-linear",)
    with pytest.raises(ValueError, match="already registered it as macdmp_linear:LinearMethod"):
        base.register_method("my-linear", "plug_other:Other")
    # the class itself counts as its "module:Class"
    base.load_plugins(["macdmp_linear"])
    assert base.plugin_methods() == ("my-linear",)


def test_register_method_checks_its_arguments(registry, plug_dir):
    with pytest.raises(ValueError, match="module:Class"):
        base.register_method("x", "no_colon")
    with pytest.raises(TypeError, match="Method subclass"):
        base.register_method("x", dict)
    with pytest.raises(ValueError, match="not a valid method name"):
        base.register_method("a,b", LINEAR)
    # checked when first used: the class's name must be the registered one, and a Method
    base.register_method("alias", LINEAR)
    with pytest.raises(ValueError, match="must set name = 'alias'"):
        base.get_method("alias")
    _write(plug_dir, "plug_notmethod", "class Thing:\n    pass\n")
    base.register_method("thing", "plug_notmethod:Thing")
    with pytest.raises(ValueError, match="not a subclass of macdmp.methods.Method"):
        base.get_method("thing")
    base.register_method("gone", "plug_missing_module:Gone")
    with pytest.raises(ValueError, match="cannot import module 'plug_missing_module'"):
        base.get_method("gone")
    base.register_method("noattr", "plug_notmethod:Nope")
    with pytest.raises(ValueError, match="no attribute 'Nope'"):
        base.get_method("noattr")
    # in registration order (importing macdmp_linear for "alias" registered its own name)
    assert base.plugin_methods() == ("alias", "my-linear", "thing", "gone", "noattr")


def test_unknown_method_lists_every_name_and_how_to_add_one(registry):
    base.load_plugins(["macdmp_linear"])
    with pytest.raises(ValueError) as err:
        base.get_method("nope")
    msg = str(err.value)
    assert all(n in msg for n in (*base._REGISTRY, "my-linear"))
    assert "'macdmp.methods' entry point" in msg and "--plugin MODULE" in msg


def test_load_plugins_registers_and_exports_the_modules(registry):
    base.load_plugins(["macdmp_linear"])
    assert base.plugin_methods() == ("my-linear",)
    assert base.method_names()[-1] == "my-linear"
    assert os.environ[base.PLUGINS_ENV] == "macdmp_linear"
    base.load_plugins(["macdmp_linear"])  # again: nothing new, listed once
    assert os.environ[base.PLUGINS_ENV] == "macdmp_linear"
    assert base.get_method("my-linear").name == "my-linear"


def test_load_plugins_errors(registry, plug_dir):
    with pytest.raises(ValueError, match=r"--plugin: cannot import module 'plug_nowhere' \("):
        base.load_plugins(["plug_nowhere"])
    _write(plug_dir, "plug_broken", "import plug_dependency_not_installed\n")
    with pytest.raises(ValueError) as err:
        base.load_plugins(["plug_broken"])
    assert "'plug_broken'" in str(err.value) and "plug_dependency_not_installed" in str(err.value)
    with pytest.raises(ValueError, match="not a module name"):
        base.load_plugins(["macdmp-linear"])
    assert os.environ[base.PLUGINS_ENV] == ""  # nothing that failed is passed on
    # a module's registration refused: the error names the --plugin module
    _write(plug_dir, "plug_clash", 'from macdmp.methods import base\nbase.register_method("bc", '
                                   '"plug_clash:X")\n')  # fmt: skip
    with pytest.raises(ValueError, match="--plugin plug_clash registers it as plug_clash:X"):
        base.load_plugins(["plug_clash"])


def test_macdmp_plugins_is_read_with_the_entry_points(registry, monkeypatch):
    monkeypatch.setenv(base.PLUGINS_ENV, " macdmp_linear , ")
    registry.set_entry_points(_ep("my-linear", LINEAR))
    assert base.plugin_methods() == ("my-linear",)
    assert "macdmp_linear" in sys.modules  # imported at the lazy point
    monkeypatch.setattr(base, "_discovered", False)
    monkeypatch.setattr(base, "_PLUGINS", {})
    monkeypatch.setenv(base.PLUGINS_ENV, "plug_absent")
    with pytest.raises(ValueError, match="MACDMP_PLUGINS: cannot import module 'plug_absent'"):
        base.method_names()


def test_a_process_started_after_load_plugins_sees_the_plugin(registry):
    base.load_plugins(["macdmp_linear"])
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE)}
    code = "from macdmp.methods.base import plugin_methods; print(plugin_methods())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "('my-linear',)"


# --- the example through the command line -------------------------------------------------


def _macdmp(*args: str, env: dict[str, str], cwd: Path, ok: bool = True):
    cmd = [sys.executable, "-m", "macdmp.app", *args]
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    if ok:
        assert out.returncode == 0, f"{' '.join(args)}\n{out.stdout}\n{out.stderr}"
    return out


def _env(pythonpath: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != base.PLUGINS_ENV}
    env["PYTHONPATH"] = str(pythonpath)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example installed (from a copy: the build leaves files in its source folder) into a
    folder of its own, as `pip install` would into an environment; no network."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "src"
    shutil.copytree(EXAMPLE, src)
    site = tmp / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
           "--no-build-isolation", "--target", str(site), str(src)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (site / "macdmp_linear.py").is_file()
    return site


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("plugin-data")
    data = tmp / "d.h5"
    args = ["collect", "--preset", "demo", "--out", str(data), "--scenarios", "n9-2to7"]
    _macdmp(*args, "--trajectories", "2", "--frames", "60", "--quiet", env=_env(tmp), cwd=tmp)
    return data


@pytest.mark.slow
def test_installed_plugin_trains_and_evaluates(installed, tiny_data, tmp_path):
    env = _env(installed)
    assert "my-linear" in _macdmp("train", "--help", env=env, cwd=tmp_path).stdout
    run = tmp_path / "run"
    _macdmp("train", "--method", "my-linear", "--data", str(tiny_data), "--out", str(run),
            "--steps", "20", "--set", "log_every=10", "--quiet", env=env, cwd=tmp_path)  # fmt: skip
    meta = json.loads((run / "config.json").read_text())
    assert meta["method"] == "my-linear" and meta["config"]["use_mf"] is True
    res = tmp_path / "res.json"
    args = ["--scenarios", "n9-2to7", "--seeds", "1", "--frames", "20", "--rf", "ideal"]
    _macdmp("evaluate", "--policy", str(run), "--policy", "carried", *args, "--json", str(res),
            "--quiet", env=env, cwd=tmp_path)  # fmt: skip
    rows = json.loads(res.read_text())["rows"]
    assert [r["policy"] for r in rows] == ["Linear", "carried"]
    # without the package on the path the run folder names a method nobody registered
    bare = _macdmp("evaluate", "--policy", str(run), *args, env=_env(tmp_path), cwd=tmp_path,
                   ok=False)  # fmt: skip
    assert bare.returncode != 0 and "my-linear" in bare.stderr and "--plugin" in bare.stderr


@pytest.mark.slow
def test_installed_plugin_in_the_smoke_reproduction(installed, tmp_path):
    """Fig. 4 gets a bar for each plugin method (its units alone are run here)."""
    out = tmp_path / "repro"
    args = ["--scale", "smoke", "--out", str(out), "--only", "fig4", "--units", "*my-linear*"]
    _macdmp("reproduce", *args, "--no-plots", "--quiet", env=_env(installed), cwd=tmp_path)
    assert any((out / "results").glob("eval-*my-linear*.json"))  # its units ran
    assert "my-linear" in (out / "report.md").read_text()


@pytest.mark.slow
def test_plugin_option_with_the_source_folder_on_the_path(tiny_data, tmp_path):
    env = _env(EXAMPLE)  # not installed: no entry point, the module named by --plugin
    run = tmp_path / "run"
    train = ["train", "--method", "my-linear", "--data", str(tiny_data), "--out", str(run)]
    refused = _macdmp(*train, "--steps", "10", "--quiet", env=env, cwd=tmp_path, ok=False)
    assert refused.returncode != 0 and "my-linear" in refused.stderr
    plugin = ["--plugin", "macdmp_linear"]
    _macdmp(*plugin, *train, "--steps", "10", "--quiet", env=env, cwd=tmp_path)
    assert json.loads((run / "config.json").read_text())["method"] == "my-linear"
    args = ["--scenarios", "n9-2to7", "--seeds", "1", "--frames", "10", "--rf", "ideal"]
    shown = _macdmp(*plugin, "evaluate", "--policy", str(run), *args, "--quiet", env=env,
                    cwd=tmp_path)  # fmt: skip
    assert "Linear" in shown.stdout
    bad = _macdmp("--plugin", "plug_nowhere", "train", "--help", env=env, cwd=tmp_path, ok=False)
    assert bad.returncode != 0 and "cannot import module 'plug_nowhere'" in bad.stderr
