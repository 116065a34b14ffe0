"""Snapshot tests of every screen at 100x30 (``pytest --snapshot-update`` after intended changes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tui.conftest import analysed, make_app

SIZE = (100, 30)


@pytest.mark.parametrize("theme", ["kiln-dark", "kiln-light", "kiln-contrast"])
def test_dataset_screen(snap_compare, sample_copy: Path, theme: str) -> None:
    assert snap_compare(make_app(sample_copy, theme_name=theme), terminal_size=SIZE, run_before=analysed)


def test_dataset_screen_after_toggle_and_sort(snap_compare, sample_copy: Path) -> None:
    async def prepare(pilot) -> None:
        await analysed(pilot)
        await pilot.press("j", "space", "s")

    assert snap_compare(make_app(sample_copy), terminal_size=SIZE, run_before=prepare)


def test_help_screen(snap_compare, sample_copy: Path) -> None:
    async def prepare(pilot) -> None:
        await analysed(pilot)
        await pilot.press("question_mark")

    assert snap_compare(make_app(sample_copy), terminal_size=SIZE, run_before=prepare)


def test_rebalance_screen(snap_compare, sample_copy: Path) -> None:
    async def prepare(pilot) -> None:
        await analysed(pilot)
        await pilot.press("r")

    assert snap_compare(make_app(sample_copy), terminal_size=SIZE, run_before=prepare)


def test_empty_dataset_screen(snap_compare, tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert snap_compare(make_app(empty), terminal_size=SIZE)
