"""The package's layers: every import goes to the module's own layer or one below it, and no
function imports anything but an optional dependency (the order is the package docstring's)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import macdmp

ROOT = Path(macdmp.__file__).parent
# bottom to top; planner and baselines share a layer and never import each other
LAYERS = [
    ("common",),
    ("sim",),
    ("policies",),
    ("data",),
    ("diffusion",),
    ("methods",),
    ("planner", "baselines"),
    ("eval",),
    ("reproduce",),
    ("bench",),
    ("app",),
]
RANK = {name: k for k, names in enumerate(LAYERS) for name in names}
# imported inside functions on purpose: each may be absent where the package runs
OPTIONAL = {
    "ray": "macdmp[ray]: reproduce --ray",
    "torch.utils.tensorboard": "macdmp[tensorboard]: train --logger tensorboard",
    "wandb": "installed by the user: train --logger wandb",
    "onnxruntime": "the CPU planning backends; absent from the GPU machines' images",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(("macdmp", *parts)).removesuffix(".__init__")
        out[name] = path
    return out


def _imports(name: str, path: Path):
    """(target module, line, inside a function) of every import of a module."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, inside
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    target = child.module or ""
                yield target, child.lineno, inside
            yield from visit(child, inside)

    yield from visit(tree, False)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "macdmp" else None


def test_every_folder_has_a_layer():
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(RANK), f"folders and layers differ: {folders ^ set(RANK)}"
    loose = {p.stem for p in ROOT.glob("*.py")} - {"__init__"}
    assert not loose, f"modules outside every layer: {sorted(loose)}"


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for name, path in _modules().items():
        own = _layer(name)
        for target, line, _ in _imports(name, path):
            other = _layer(target)
            if own is None or other is None or other not in RANK:
                continue
            if RANK[other] > RANK[own] or (RANK[other] == RANK[own] and other != own):
                upward.append(f"{path.relative_to(ROOT.parent)}:{line} {name} -> {target}")
    assert not upward, "imports of a higher (or a sibling) layer:\n" + "\n".join(upward)


def test_no_imports_inside_functions_but_optional_ones():
    hidden = []
    for name, path in _modules().items():
        for target, line, inside in _imports(name, path):
            if inside and not any(target == m or target.startswith(m + ".") for m in OPTIONAL):
                hidden.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target}")
    assert not hidden, "imports inside functions (move them to the top):\n" + "\n".join(hidden)


def test_the_walk_finds_what_it_should(tmp_path):
    """The checks above cannot pass by seeing nothing: the walk resolves relative imports and
    finds imports inside functions."""
    src = tmp_path / "m.py"
    src.write_text("from . import x\ndef f():\n    import json\n    from .core import y\n")
    found = list(_imports("macdmp.sim.m", src))
    assert ("macdmp.sim", 1, False) in found
    assert ("json", 3, True) in found and ("macdmp.sim.core", 4, True) in found
    assert sum(1 for n, p in _modules().items() if _layer(n) == "sim") > 5


def test_scripts_import_names_that_exist():
    """The benchmarks, experiments and examples import only what the package has (a moved
    helper breaks them at once, not on the next GPU lease)."""
    repo = ROOT.parents[1]
    missing = []
    for folder in ("benchmarks", "experiments", "examples"):
        for path in sorted((repo / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(
                    "macdmp."
                ):
                    continue
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ModuleNotFoundError:
                            missing.append(f"{path.relative_to(repo)}: {node.module}.{alias.name}")
    assert not missing, "imports of names the package does not have:\n" + "\n".join(missing)
