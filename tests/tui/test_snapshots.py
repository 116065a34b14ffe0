"""Snapshot tests of every screen at 100x30 (``pytest --snapshot-update`` after intended changes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tui.conftest import analysed, make_app, wait_for

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


async def _plan(pilot) -> None:
    """Analyse, open the plan section and wait for its first count."""
    await analysed(pilot)
    await pilot.press("2")
    await wait_for(
        pilot, lambda: getattr(pilot.app.screen, "outcome", None) is not None and pilot.app.screen.outcome.ok
    )


def test_plan_screen(snap_compare, analysed_copy: Path) -> None:
    assert snap_compare(make_app(analysed_copy), terminal_size=SIZE, run_before=_plan)


def test_plan_screen_typed_guide_example(snap_compare, analysed_copy: Path) -> None:
    async def prepare(pilot) -> None:
        await _plan(pilot)
        await pilot.press("ctrl+t", "tab", "tab", "1", "0", "tab", "3", "5", "tab", "4", "tab", "9")

    assert snap_compare(make_app(analysed_copy), terminal_size=SIZE, run_before=prepare)


def test_plan_screen_validation_messages(snap_compare, analysed_copy: Path) -> None:
    async def prepare(pilot) -> None:
        await _plan(pilot)
        await pilot.press("tab", "tab", "x", "tab", "0", "tab", "tab", "tab", "tab", "9", "9")

    assert snap_compare(make_app(analysed_copy), terminal_size=SIZE, run_before=prepare)
