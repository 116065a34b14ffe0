"""Moving images between concept folders: caption along, selection and cache along, never overwriting."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from kiln.engine.dataset.move import move_images
from kiln.engine.dataset.selection import excluded_paths, set_included
from kiln.engine.dataset.store import Store
from kiln.engine.errors import UsageError

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(SAMPLE, target, ignore=shutil.ignore_patterns(".kiln"))
    return target


def test_images_move_with_their_captions_and_selection(data: Path) -> None:
    with Store(data) as store:
        set_included(store, ["10_kilnpot/pot_01.jpg"], False)
        result = move_images(data, ["10_kilnpot/pot_01.jpg", "10_kilnpot/pot_02.jpg"], "3_extra", store)
        assert result.moved == {
            "10_kilnpot/pot_01.jpg": "3_extra/pot_01.jpg",
            "10_kilnpot/pot_02.jpg": "3_extra/pot_02.jpg",
        }
        assert result.skipped == {}
        assert excluded_paths(store) == {"3_extra/pot_01.jpg"}
    assert (data / "3_extra" / "pot_01.txt").read_text(encoding="utf-8").startswith("a round blue vase")
    assert not (data / "10_kilnpot" / "pot_01.jpg").exists()
    assert not (data / "10_kilnpot" / "pot_01.txt").exists()


def test_a_taken_name_is_never_overwritten(data: Path) -> None:
    (data / "5_kilnstyle" / "pot_01.txt").write_text("mine", encoding="utf-8")  # a caption, no image
    (data / "5_kilnstyle" / "pot_02.jpg").write_bytes(b"not the pot")
    with Store(data) as store:
        pots = ["10_kilnpot/pot_01.jpg", "10_kilnpot/pot_02.jpg", "10_kilnpot/pot_03.jpg"]
        result = move_images(data, pots, "5_kilnstyle", store)
    assert result.moved == {"10_kilnpot/pot_03.jpg": "5_kilnstyle/pot_03.jpg"}
    assert set(result.skipped) == {"10_kilnpot/pot_01.jpg", "10_kilnpot/pot_02.jpg"}
    assert "nothing was overwritten" in result.skipped["10_kilnpot/pot_01.jpg"]
    assert (data / "5_kilnstyle" / "pot_01.txt").read_text(encoding="utf-8") == "mine"
    assert (data / "5_kilnstyle" / "pot_02.jpg").read_bytes() == b"not the pot"
    assert (data / "10_kilnpot" / "pot_01.jpg").is_file() and (data / "10_kilnpot" / "pot_02.jpg").is_file()


@pytest.mark.parametrize("folder", ["", "..", "a/b", ".kiln"])
def test_the_target_is_one_folder_under_the_root(data: Path, folder: str) -> None:
    with Store(data) as store, pytest.raises(UsageError):
        move_images(data, ["10_kilnpot/pot_01.jpg"], folder, store)
