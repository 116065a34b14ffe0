"""The auto-caption choices last used on a dataset (model folders, trigger, mode), kept in its store.

The workbench fills its caption form from them, so a user who comes back to a dataset does
not type the model path and trigger word again. They live in the store's ``meta`` table:
deleting ``.kiln/`` forgets them and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from kiln.engine.dataset.store import Store

META_KEY = "caption.choices"


@dataclass(frozen=True)
class CaptionChoices:
    """What the caption form held when a run was last started.

    Attributes:
        style: ``wd14`` or ``blip``.
        wd14_model: The WD14 model folder, as typed.
        blip_model: The BLIP model folder, as typed.
        trigger: The trigger word.
        mode: ``skip``, ``overwrite`` or ``append``.
        threshold: WD14's general tag threshold.
    """

    style: str = "wd14"
    wd14_model: str = ""
    blip_model: str = ""
    trigger: str = ""
    mode: str = "skip"
    threshold: float = 0.35

    def model_for(self, style: str) -> str:
        """The model folder last used for ``style``."""
        return self.blip_model if style == "blip" else self.wd14_model


def load_choices(store: Store) -> CaptionChoices:
    """The remembered choices, or the defaults when none (or unreadable ones) are stored."""
    value = store.get_meta(META_KEY)
    if value is None:
        return CaptionChoices()
    try:
        raw = json.loads(value)
        known = {field.name for field in fields(CaptionChoices)}
        values = {key: value for key, value in raw.items() if key in known}
        choices = CaptionChoices(**values)
        if (
            choices.style not in ("wd14", "blip")
            or choices.mode not in ("skip", "overwrite", "append")
            or not isinstance(choices.threshold, (int, float))
            or not all(
                isinstance(getattr(choices, name), str) for name in ("wd14_model", "blip_model", "trigger")
            )
        ):
            return CaptionChoices()
        return choices
    except (ValueError, TypeError, AttributeError):
        return CaptionChoices()  # written by another version, or damaged: start from the defaults


def save_choices(store: Store, choices: CaptionChoices) -> None:
    """Remember ``choices`` for the next session on this dataset."""
    store.set_meta(META_KEY, json.dumps(asdict(choices)))
