"""The user's key remapping: ``$XDG_CONFIG_HOME/kiln/keymap.toml`` (``~/.config/kiln/keymap.toml``).

The file maps binding ids to keys::

    [keys]
    "dataset.toggle" = "x"
    "app.quit" = "ctrl+q"

It is read once at start-up and handed to Textual's ``App.set_keymap``. A bad file never stops
Kiln: each problem becomes one line naming the file and the key, and the rest still applies.
No Textual and no engine at module level: this is UI configuration, read before the app runs.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

# One key as Textual names it: "x", "ctrl+s", "question_mark", "f1".
_KEY = re.compile(r"^[a-z0-9_+\-]+$|^.$", re.IGNORECASE)


def keymap_path(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the keymap lives: ``$XDG_CONFIG_HOME/kiln/keymap.toml``, else ``~/.config/kiln/``."""
    config = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "kiln" / "keymap.toml"


@dataclass
class Keymap:
    """A keymap as read: the remappings that apply, and one line per problem found.

    Attributes:
        keys: Binding id to keys (``"x"``, ``"ctrl+s"``, or several as ``"x,ctrl+x"``).
        problems: What was wrong, each naming the file and the key; those entries are ignored.
    """

    keys: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def read_keymap(path: Path, known_ids: Iterable[str] | None = None) -> Keymap:
    """Read a keymap file; a missing file is an empty keymap, never an error.

    Args:
        path: The file.
        known_ids: The binding ids that exist; an id not among them is reported (None: any id).
    """
    keymap = Keymap()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return keymap
    except (OSError, UnicodeDecodeError) as exc:
        keymap.problems.append(f"{path}: cannot read the keymap ({exc}); keys are unchanged")
        return keymap
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        keymap.problems.append(f"{path}: not valid TOML ({exc}); keys are unchanged")
        return keymap
    table = data.get("keys", {})
    if not isinstance(table, dict):
        keymap.problems.append(f'{path}: "keys" must be a table ([keys]); keys are unchanged')
        return keymap
    for name in sorted(set(data) - {"keys"}):
        keymap.problems.append(f"{path}: [{name}] is not a keymap section (only [keys]); ignored")
    known = None if known_ids is None else set(known_ids)
    for binding_id, keys in table.items():
        if known is not None and binding_id not in known:
            keymap.problems.append(
                f'{path}: "{binding_id}" is not a binding id (see docs/keymap.md for the list); ignored'
            )
        elif not isinstance(keys, str) or not keys.strip():
            keymap.problems.append(
                f'{path}: "{binding_id}" needs a key as text, e.g. "x" or "ctrl+x"; ignored'
            )
        elif not all(_KEY.match(key.strip()) for key in keys.split(",")):
            keymap.problems.append(
                f'{path}: "{binding_id}" = {keys!r} is not a key (e.g. "x", "ctrl+x", "f2"); ignored'
            )
        else:
            keymap.keys[binding_id] = ",".join(key.strip() for key in keys.split(","))
    return keymap


def binding_ids() -> dict[str, list[tuple[str, str]]]:
    """Every binding id of the workbench, by the part before its dot (``app``, ``dataset``, ...),
    each with its default key and description, in the order the code defines them.

    Imports every TUI module (the sections are otherwise loaded only when opened), so call it
    only when a keymap exists or for the documentation.
    """
    from textual.binding import Binding
    from textual.dom import DOMNode

    from kiln import tui

    found: dict[str, tuple[str, str]] = {}
    for info in pkgutil.walk_packages(tui.__path__, prefix=tui.__name__ + "."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if not (isinstance(value, type) and issubclass(value, DOMNode)):
                continue
            if value.__module__ != module.__name__:
                continue
            for binding in value.BINDINGS:
                if isinstance(binding, Binding) and binding.id and binding.id not in found:
                    found[binding.id] = (binding.key, binding.description)
    groups: dict[str, list[tuple[str, str]]] = {}
    for binding_id, (key, description) in found.items():
        groups.setdefault(binding_id.split(".")[0], []).append((binding_id, f"{key}: {description}"))
    return groups
