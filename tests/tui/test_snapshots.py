"""Snapshot tests of every screen at 100x30 (``pytest --snapshot-update`` after intended changes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.caption_models import write_wd14_model
from tests.tui.helpers import analysed, make_app, ready, wait_for, workers_idle, write_tec_run

SIZE = (100, 30)


@pytest.mark.parametrize("theme", ["kiln-dark", "kiln-light", "kiln-contrast"])
def test_dataset_screen(snap_compare, sample_copy: Path, theme: str) -> None:
    assert snap_compare(make_app(sample_copy, theme_name=theme), terminal_size=SIZE, run_before=ready)


def test_dataset_screen_after_toggle_and_sort(snap_compare, sample_copy: Path) -> None:
    async def prepare(pilot) -> None:
        await ready(pilot)
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
        await pilot.press("ctrl+t")
        # The guide's example: 35 images, 10 repeats, batch 4, 9 epochs (fields set by id, not
        # reached by counting tabs, so a new row in the form cannot send the keys elsewhere).
        for key, value in (("images", "35"), ("repeats", "10"), ("batch", "4"), ("epochs", "9")):
            field = pilot.app.screen.query_one(f"#{key}")
            field.focus()
            field.value = value
            await pilot.pause()
        assert type(pilot.app.screen).__name__ == "PlanScreen"

    assert snap_compare(make_app(analysed_copy), terminal_size=SIZE, run_before=prepare)


def test_plan_screen_validation_messages(snap_compare, analysed_copy: Path) -> None:
    async def prepare(pilot) -> None:
        await _plan(pilot)
        await pilot.press("tab", "tab", "x", "tab", "0", "tab", "tab", "tab", "tab", "9", "9")

    assert snap_compare(make_app(analysed_copy), terminal_size=SIZE, run_before=prepare)


async def open_captions(pilot) -> None:
    """The captions section with its tag counts and lint in, focus out of the form."""
    await ready(pilot)
    await pilot.press("3")
    await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "CaptionsScreen")
    screen = pilot.app.screen
    await wait_for(pilot, lambda: screen.tag_pane.stats is not None and screen.lint_pane.report is not None)
    await pilot.press("escape")
    await pilot.pause()


def test_captions_screen_after_a_run(snap_compare, sample_copy: Path, tmp_path: Path, monkeypatch) -> None:
    write_wd14_model(tmp_path / "wd14")
    monkeypatch.chdir(tmp_path)  # the model path shows as typed: "wd14"

    async def prepare(pilot) -> None:
        await open_captions(pilot)
        screen = pilot.app.screen
        screen.query_one("#model").value = "wd14"
        screen.query_one("#mode").value = "overwrite"
        screen.query_one("#trigger").value = "kilnpot"
        await pilot.press("ctrl+r", "y")
        await wait_for(pilot, lambda: not screen.run_pane.running)
        await workers_idle(pilot)
        await pilot.pause(0.3)

    assert snap_compare(make_app(sample_copy), terminal_size=SIZE, run_before=prepare)


def test_captions_tags_preview(snap_compare, sample_copy: Path) -> None:
    async def prepare(pilot) -> None:
        await open_captions(pilot)
        screen = pilot.app.screen
        await pilot.press("t")
        screen.query_one("#first").value = "kilnpot"
        await pilot.press("p")
        await wait_for(pilot, lambda: screen.tag_pane.plan is not None)
        await pilot.pause(0.3)

    assert snap_compare(make_app(sample_copy), terminal_size=SIZE, run_before=prepare)


def test_captions_lint(snap_compare, sample_copy: Path, monkeypatch) -> None:
    (sample_copy / "5_kilnstyle" / "hills_03.txt").write_text(
        "sunset, orange sky, hill, sun", encoding="utf-8"
    )  # no trigger
    (sample_copy / "5_kilnstyle" / "hills_01.txt").write_text(
        "kilnstyle, sky, hill, sky, grass", encoding="utf-8"
    )  # a duplicate tag
    monkeypatch.chdir(sample_copy.parent)  # fixes name the dataset relative to here: "data"

    async def prepare(pilot) -> None:
        await open_captions(pilot)
        await pilot.press("l")
        await pilot.pause(0.3)

    assert snap_compare(make_app(sample_copy), terminal_size=SIZE, run_before=prepare)


async def _tec_measured(pilot, *keys: str, **values: str) -> None:
    """Open the TEC section, fill the form, measure, and wait for the results."""
    from textual.widgets import Input

    await pilot.press("6", *keys)
    screen = pilot.app.screen
    for key, value in values.items():
        screen.query_one(f"#{key}", Input).value = value
    await pilot.press("ctrl+r")
    # The first measurement of a session imports torch and transformers.
    await wait_for(pilot, lambda: screen.result is not None or "Failed" in screen.status, timeout=90)
    assert screen.result is not None, screen.status
    screen.query_one("#results").focus()  # as after esc: the report, not a blinking cursor
    await pilot.pause()


def test_tec_screen_noisy_checkpoint_report(snap_compare, tec_dir: Path) -> None:
    async def prepare(pilot) -> None:
        await _tec_measured(pilot, candidate="noisy", reference="tiny", words="letters.txt")

    assert snap_compare(make_app(tec_dir / "data"), terminal_size=SIZE, run_before=prepare)


def test_tec_screen_run_series(snap_compare, tec_dir: Path, tiny_encoder) -> None:
    write_tec_run(tec_dir / "data", tiny_encoder, tec_dir / "tiny")

    async def prepare(pilot) -> None:
        await _tec_measured(pilot, "ctrl+t", words="letters.txt")

    assert snap_compare(make_app(tec_dir / "data"), terminal_size=SIZE, run_before=prepare)


@pytest.fixture
def utc(monkeypatch):
    """Start times print in local time: pin the zone so snapshots match everywhere."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def fake_runs(root: Path) -> None:
    from tests.runfolders import write_run, write_sweep

    runs = root / "runs"
    write_run(runs, "pot", dataset=root)
    write_run(runs, "pot-lr3", stamp="20260302-101500", state="failed", t0=1772446500.0, dataset=root)
    write_run(runs, "old", stamp="20250101-101500", layout=None, samples=False, t0=1735726500.0)
    write_sweep(runs, "lr", [({"train.unet_lr": 1e-4}, "done"), ({"train.unet_lr": 3e-4}, "queued")])


async def runs_ready(pilot) -> None:
    from tests.tui.helpers import wait_for

    await pilot.press("5")
    screen = pilot.app.screen
    await wait_for(pilot, lambda: screen.feed is not None and screen.samples_shown_for == screen.selected)
    await pilot.pause(0.3)


def test_runs_screen(snap_compare, sample_copy: Path, utc) -> None:
    fake_runs(sample_copy)
    assert snap_compare(make_app(sample_copy), terminal_size=SIZE, run_before=runs_ready)


def test_runs_screen_on_a_failed_run(snap_compare, sample_copy: Path, utc) -> None:
    fake_runs(sample_copy)

    async def prepare(pilot) -> None:
        from tests.tui.helpers import wait_for

        await runs_ready(pilot)
        await pilot.press("j")
        screen = pilot.app.screen
        await wait_for(pilot, lambda: (screen.selected or "").endswith("pot-lr3"))
        await wait_for(pilot, lambda: screen.feed is not None and screen.samples_shown_for == screen.selected)
        await pilot.pause(0.3)

    assert snap_compare(make_app(sample_copy), terminal_size=SIZE, run_before=prepare)


def test_runs_screen_without_runs(snap_compare, sample_copy: Path) -> None:
    async def prepare(pilot) -> None:
        from tests.tui.helpers import wait_for

        await pilot.press("5")
        await wait_for(pilot, lambda: pilot.app.screen._listed_once)

    assert snap_compare(make_app(sample_copy), terminal_size=SIZE, run_before=prepare)


def test_sweep_view(snap_compare, sample_copy: Path, utc) -> None:
    fake_runs(sample_copy)

    async def prepare(pilot) -> None:
        from tests.tui.helpers import wait_for

        await runs_ready(pilot)
        await pilot.press("v")
        view = pilot.app.screen
        await wait_for(pilot, lambda: view.report is not None)
        await wait_for(pilot, lambda: str(view.query_one("#label-1").render()).startswith("#1"))
        await pilot.pause(0.3)

    assert snap_compare(make_app(sample_copy), terminal_size=SIZE, run_before=prepare)
