"""The shape of the code: dependencies run one way (base <- features <- training <- serving <-
lapse), ingest stands apart from the feature families, and every public error is a LapseError.

Imports are read from the source (ast), lazy ones inside functions included, so a rule cannot be
dodged by importing late.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from base import LapseError

ROOT = Path(__file__).resolve().parents[1]
#: Each package may import only those below it.
LAYERS = ("base", "features", "training", "serving", "lapse")
#: Modules of features the ingest subpackage may use (it runs before any feature exists).
#: ``features.duck`` is the process's DuckDB connections, which ingest's event keys share.
INGEST_MAY_USE = ("features.schema", "features.settings", "features.ingest", "features.duck")


def _modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module of ours that ``name`` imports, anywhere in it (TYPE_CHECKING blocks too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:  # `from features import schema` uses features.schema
                sub = f"{module}.{alias.name}"
                out.add(sub if sub in MODULES else module)
    return {m for m in out if m.split(".")[0] in LAYERS and _known(m)}


def _known(module: str) -> bool:
    return module in MODULES or any(m.startswith(module + ".") for m in MODULES)


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_a_package_above_its_own(name: str) -> None:
    upward = sorted(m for m in _imports(name, MODULES[name]) if _layer(m) > _layer(name))
    assert not upward, f"{name} imports {upward}, above it in {' <- '.join(LAYERS)}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("features.ingest")))
def test_ingest_uses_no_feature_family(name: str) -> None:
    used = {m for m in _imports(name, MODULES[name]) if m.startswith("features")}
    stray = sorted(m for m in used if not m.startswith(INGEST_MAY_USE))
    assert not stray, f"{name} imports {stray}; ingest may use only {INGEST_MAY_USE}"


def test_the_rules_see_a_planted_upward_import(tmp_path: Path) -> None:
    """The check itself: a lazy import of serving inside a features function is caught."""
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from serving.sync import sync\n    import lapse.jobs\n")
    assert _imports("features.planted", planted) == {"serving.sync", "lapse.jobs"}


def test_every_public_error_is_a_lapse_error() -> None:
    """So the CLI (and the service) tell a user's mistake from a bug by one class."""
    strays = []
    for name in MODULES:
        if name.startswith("features.synthetic") and "generator" not in name:
            continue  # the generator's internals define no user-facing error beyond GenerationError
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, Exception)
                and value.__module__ == name
                and not attr.startswith("_")
                and not issubclass(value, LapseError)
            ):
                strays.append(f"{name}.{attr}")
    assert not strays, f"errors that do not derive from base.LapseError: {strays}"
