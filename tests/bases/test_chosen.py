"""The chosen base kept in the dataset's store, and the caption-style check against it."""

from __future__ import annotations

from pathlib import Path

from kiln.engine.bases.chosen import (
    ChosenBase,
    captions_style,
    load_chosen_base,
    save_chosen_base,
    style_mismatch,
)
from kiln.engine.dataset.store import Store

SENTENCES = ["a red clay pot on a dark table, kilnpot", "a woman standing in a field of flowers"]
TAGS = ["1girl, solo, long hair, smile", "kilnstyle, no humans, night, moon, hill"]


def test_the_dataset_remembers_its_base(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        assert load_chosen_base(store) is None
        save_chosen_base(store, ChosenBase("/m/ned.safetensors", "sd15", "either"))
    with Store(tmp_path) as store:
        assert load_chosen_base(store) == ChosenBase("/m/ned.safetensors", "sd15", "either")


def test_captions_are_read_as_sentences_or_tags() -> None:
    assert captions_style(SENTENCES * 3) == ("blip", 6, 0)
    assert captions_style(TAGS * 3 + SENTENCES) == ("wd14", 2, 6)
    assert captions_style(TAGS + SENTENCES + [""]) == (None, 2, 2)


def test_a_base_is_warned_of_captions_in_the_other_style() -> None:
    warning = style_mismatch("blip", TAGS * 2 + SENTENCES)
    assert warning is not None and "4 of the dataset's 6 captions are WD14 tags" in warning
    assert style_mismatch("wd14", TAGS * 4 + SENTENCES[:1]) is None  # one sentence in five is fine
    assert style_mismatch("either", TAGS) is None and style_mismatch(None, TAGS) is None
