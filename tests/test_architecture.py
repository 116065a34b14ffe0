"""The shape of the code: one-way arrows between the engine's packages, a UI-free engine, light
modules that stay light, and modules a reader can hold in their head.

The import graph is read statically (every ``import`` in every module, lazy ones inside
functions included), so an arrow drawn only at run time still counts. The runtime checks
import modules in a fresh interpreter (harlequin's rule: the domain never loads the UI).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import pkgutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from kiln import cli, engine, tui

HEAVY = {"torch", "diffusers", "transformers", "peft", "accelerate", "onnxruntime"}
# Modules about models and training may import torch at module level; every other engine
# module, and the CLI's parser, stays light so `kiln --help` and the TUI start fast.
MODEL_MODULES = (
    "kiln.engine.train",
    "kiln.engine.models",
    "kiln.engine.tec",
    "kiln.engine.runs.worker",
    "kiln.engine.caption.blip",
    "kiln.engine.caption.wd14",
)
# The engine's packages from the bottom up: each may import only those below it. Top-level
# modules (errors, fsutil, procinfo, ...) are shared utilities and sit at the bottom.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"dataset"}),
    frozenset({"analysis"}),
    frozenset({"plan", "caption", "models", "curate", "tiles"}),
    frozenset({"train", "tec", "fixup"}),
    frozenset({"runs", "bases"}),
)
MAX_MODULE_LINES = 800


def modules_of(package) -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + ".")
        if not info.name.endswith("__main__")
    )


def source_of(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    return Path(spec.origin)


def imports_of(module: str) -> set[str]:
    """Every module name ``module`` imports, anywhere in its source, as absolute names."""
    path = source_of(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def engine_unit(name: str) -> str | None:
    """The engine package or top-level module of a module: ``kiln.engine.train.loop`` -> ``train``."""
    parts = name.split(".")
    if parts[:2] != ["kiln", "engine"] or len(parts) < 3:
        return None
    return parts[2]


def package_graph() -> dict[str, set[str]]:
    """Arrows between the engine's packages: ``{"runs": {"train", ...}, ...}``."""
    graph: dict[str, set[str]] = defaultdict(set)
    known = {engine_unit(name) for name in modules_of(engine)}
    for module in modules_of(engine):
        source = engine_unit(module)
        for target in imports_of(module):
            unit = engine_unit(target)
            if unit in known and unit != source and source is not None:
                graph[source].add(unit)
    return graph


def layer_of(unit: str) -> int:
    for index, layer in enumerate(LAYERS):
        if unit in layer:
            return index
    return -1  # a shared utility module (errors, fsutil, procinfo)


def top_level_after_import(*modules: str) -> set[str]:
    """Module names in sys.modules after importing ``modules`` in a fresh process."""
    code = (
        "import importlib, sys, json\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def test_engine_packages_point_one_way() -> None:
    graph = package_graph()
    wrong = sorted(
        f"{source} -> {target}"
        for source, targets in graph.items()
        for target in targets
        if layer_of(source) != -1 and layer_of(target) >= layer_of(source)
    )
    assert not wrong, f"arrows against the layers {LAYERS}: {wrong}"


def test_engine_package_graph_has_no_cycle() -> None:
    graph = package_graph()
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(node: str, trail: tuple[str, ...]) -> None:
        assert node not in visiting, f"import cycle: {' -> '.join((*trail, node))}"
        if node in done:
            return
        visiting.add(node)
        for target in sorted(graph.get(node, ())):
            visit(target, (*trail, node))
        visiting.discard(node)
        done.add(node)

    for node in sorted(graph):
        visit(node, ())


def test_every_engine_package_is_placed_in_a_layer() -> None:
    units = {engine_unit(name) for name in modules_of(engine)}
    packages = {unit for unit in units if unit and (Path(engine.__path__[0]) / unit).is_dir()}
    placed = set().union(*LAYERS)
    assert packages <= placed, f"place these in LAYERS: {sorted(packages - placed)}"


@pytest.mark.parametrize("module", modules_of(engine))
def test_engine_module_imports_no_ui_and_no_cli(module: str) -> None:
    shell = ("kiln.cli", "kiln.tui", "kiln.themes", "textual", "rich")
    leaks = sorted(name for name in imports_of(module) if name.startswith(shell))
    assert not leaks, f"{module} imports {leaks}"


def test_no_engine_module_loads_textual_or_the_shell_at_run_time() -> None:
    loaded = top_level_after_import(*modules_of(engine))
    assert not {name for name in loaded if name.split(".")[0] == "textual"}
    assert not {name for name in loaded if name.startswith(("kiln.tui", "kiln.cli", "kiln.themes"))}


def test_light_engine_modules_import_nothing_heavy() -> None:
    light = [name for name in modules_of(engine) if not name.startswith(MODEL_MODULES)]
    loaded = {name.split(".")[0] for name in top_level_after_import(*light)}
    assert not loaded & HEAVY


def test_cli_parser_is_light() -> None:
    code = "from kiln.cli import build_parser; build_parser()"
    out = subprocess.run(
        [sys.executable, "-c", code + "; import sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert not {name.split(".")[0] for name in json.loads(out)} & (HEAVY | {"textual"})


def test_run_listing_and_tec_checks_are_light() -> None:
    # The TUI lists runs and checks paths with these before any worker imports torch.
    loaded = top_level_after_import(
        "kiln.engine.tec.checks", "kiln.engine.runs.tec_series", "kiln.engine.tec.reading"
    )
    assert not {name.split(".")[0] for name in loaded} & HEAVY


@pytest.mark.parametrize("package", [engine, cli, tui], ids=["engine", "cli", "tui"])
def test_no_module_is_longer_than_a_reader_can_follow(package) -> None:
    long = {
        module: lines
        for module in modules_of(package)
        if (lines := len(source_of(module).read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these (over {MAX_MODULE_LINES} lines): {long}"
