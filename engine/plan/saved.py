"""The plan form as the user last left it on a dataset, kept in its store (``.kiln/kiln.db``).

The workbench's plan section fills its form from it on the next start, so the batch size,
epochs and rates typed for a dataset are still there. Stored as plain JSON in the store's
``meta`` table: deleting ``.kiln/`` forgets it and nothing else. Unknown keys and values of
the wrong type (another version's) are dropped, never an error.
"""

from __future__ import annotations

import json

from kiln.engine.dataset.store import Store

META_KEY = "plan.inputs"


def load_plan_settings(store: Store) -> dict[str, str | bool]:
    """The saved form values (field or choice key to text, ``no_upscale`` to a bool); {} when none."""
    value = store.get_meta(META_KEY)
    if value is None:
        return {}
    try:
        raw = json.loads(value)
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(key): value for key, value in raw.items() if isinstance(value, (str, bool))}


def save_plan_settings(store: Store, settings: dict[str, str | bool]) -> None:
    """Remember the form's values for the next session on this dataset (unchanged: no write)."""
    text = json.dumps(settings, sort_keys=True)
    if store.get_meta(META_KEY) != text:
        store.set_meta(META_KEY, text)
