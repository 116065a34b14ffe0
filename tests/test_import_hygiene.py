"""The engine never imports the UI; light modules never import torch (harlequin's rule).

Modules about models and training (``engine.train``, ``engine.models``, ``engine.tec``,
the captioners) may import torch at module level; everything else, the CLI's parser
included, must stay light so ``kiln --help`` and the TUI start fast.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import engine

HEAVY = {"torch", "diffusers", "transformers", "peft", "accelerate", "onnxruntime"}
MODEL_MODULES = ("engine.train", "engine.models", "engine.tec", "engine.caption.blip", "engine.caption.wd14")


def engine_modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages(engine.__path__, prefix="engine.")
        if not info.name.endswith("__main__")
    )


def top_level_after_import(*modules: str) -> set[str]:
    """Top-level package names in sys.modules after importing ``modules`` in a fresh process."""
    code = (
        "import importlib, sys, json\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {name.split(".")[0] for name in json.loads(out)}


def test_no_engine_module_imports_textual() -> None:
    loaded = top_level_after_import(*engine_modules())
    assert not loaded & {"textual", "tui"}


def test_light_engine_modules_import_nothing_heavy() -> None:
    light = [name for name in engine_modules() if not name.startswith(MODEL_MODULES)]
    assert not top_level_after_import(*light) & HEAVY


def test_engine_analysis_loads_neither_textual_nor_torch() -> None:
    loaded = top_level_after_import("engine.analysis.report", "engine.analysis.run")
    assert "textual" not in loaded and "torch" not in loaded


def test_cli_parser_is_light() -> None:
    code = "from engine.cli import build_parser; build_parser()"
    out = subprocess.run(
        [sys.executable, "-c", code + "; import sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert not {name.split(".")[0] for name in json.loads(out)} & (HEAVY | {"textual"})


def test_tec_checks_runs_and_reading_are_light() -> None:
    # The TUI lists runs and checks paths with these before any worker imports torch.
    loaded = top_level_after_import("engine.tec.checks", "engine.tec.runs", "engine.tec.reading")
    assert not loaded & HEAVY
