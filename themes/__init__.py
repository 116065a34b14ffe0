"""Kiln's themes: TOML theme definitions shipped as package data (found in installed copies).

Each ``*.toml`` file here defines one theme with the fields of Textual's ``Theme``; the TUI
registers them at start-up. Kept free of Textual imports so the engine side can list them.
"""

from __future__ import annotations

import sys
from importlib import resources

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_THEME = "kiln-dark"


def theme_definitions() -> dict[str, dict]:
    """Theme name -> its fields, read from the ``.toml`` files shipped in this package."""
    definitions = {}
    for entry in sorted(resources.files(__name__).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            definitions[data["name"]] = data
    return definitions


def theme_names() -> list[str]:
    """Names of Kiln's own themes, default first."""
    names = sorted(theme_definitions())
    names.remove(DEFAULT_THEME)
    return [DEFAULT_THEME, *names]
