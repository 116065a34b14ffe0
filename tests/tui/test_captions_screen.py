"""Pilot tests for the captions section: caption runs, tag frequencies, batch edits and undo, lint."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from kiln.engine.caption import autocaption
from kiln.tui.screens.captions import CaptionsScreen
from kiln.tui.screens.confirm import ConfirmScreen, UnsavedEditScreen
from kiln.tui.screens.dataset import DatasetScreen
from kiln.tui.widgets.caption_editor import CaptionEditor
from kiln.tui.widgets.caption_run_pane import CaptionRunPane
from textual.binding import Binding
from textual.widgets import Input, ProgressBar, Select

from tests.caption_models import write_wd14_model
from tests.tui.helpers import make_app, wait_for

SIZE = (120, 40)
POT = "10_kilnpot/pot_01.jpg"


@pytest.fixture(scope="module")
def wd14_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wd14_model(tmp_path_factory.mktemp("wd14") / "tagger")


async def open_captions(pilot) -> CaptionsScreen:
    """Switch to the captions section and wait for its first tag counts and lint."""
    await pilot.press("3")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, CaptionsScreen))
    screen = pilot.app.screen
    await wait_for(pilot, lambda: screen.tag_pane.stats is not None and screen.lint_pane.report is not None)
    await pilot.press("escape")  # out of the model field (focused while empty): letters are keys again
    return screen


def fill_run_form(screen: CaptionsScreen, model: Path, mode: str = "overwrite", trigger: str = "") -> None:
    screen.query_one("#model", Input).value = str(model)
    screen.query_one("#mode", Select).value = mode
    screen.query_one("#trigger", Input).value = trigger


def caption(root: Path, image: str) -> str:
    return (root / image).with_suffix(".txt").read_text(encoding="utf-8")


async def test_caption_run_writes_captions_and_shows_progress(sample_copy: Path, wd14_model: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_captions(pilot)
        fill_run_form(screen, wd14_model, trigger="kilnpot")
        original = caption(sample_copy, POT)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))  # 12 captions would go
        await pilot.press("n")
        pane = screen.run_pane
        assert not pane.running and caption(sample_copy, POT) == original
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: not pane.running)
        assert "done: 12 written" in str(pane.query_one("#run-message").render())
        bar = pane.query_one("#run-progress", ProgressBar)
        assert (bar.progress, bar.total) == (12, 12)
        assert pane.outcome_table.row_count == 12
        text = caption(sample_copy, POT)
        assert text.startswith("kilnpot, hakurei reimu (cosplay), long hair")  # WD14: trigger first
        # The curation and the dataset section show the new caption at once.
        assert app.curation.rows[POT].caption.text == text
        dataset = app.section_screens["dataset"]
        assert dataset.query_one(CaptionEditor).text == text
        assert "hakurei" in str(dataset.cells_for(POT)[-1])
        # The run is remembered for the next session on this dataset.
        reopened = CaptionsScreen(app.curation).choices
        assert (reopened.wd14_model, reopened.mode, reopened.trigger) == (
            str(wd14_model),
            "overwrite",
            "kilnpot",
        )


async def test_caption_run_can_be_cancelled_between_batches(
    sample_copy: Path, wd14_model: Path, monkeypatch
) -> None:
    started, release = threading.Event(), threading.Event()

    class OneAtATime:
        """The real tiny tagger, one image per batch, holding its first batch until released."""

        def __init__(self, style, folder, settings):
            self.inner = autocaption.load_captioner(style, folder, settings)
            self.style, self.batch_size = style, 1

        def caption_batch(self, images):
            started.set()
            release.wait(5)
            return self.inner.caption_batch(images)

        def close(self):
            self.inner.close()

    monkeypatch.setattr("kiln.tui.widgets.caption_run_pane.load_captioner", OneAtATime)
    images = sorted(p.relative_to(sample_copy).as_posix() for p in sample_copy.glob("*/*.[jp][pn]g"))
    before = {path: caption(sample_copy, path) for path in images}
    assert len(before) == 12
    app = make_app(sample_copy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_captions(pilot)
        fill_run_form(screen, wd14_model)
        await pilot.press("ctrl+r", "y")
        await wait_for(pilot, lambda: started.is_set())
        assert screen.run_pane.running
        await pilot.press("q")  # quitting asks first while a run is going on
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        assert app.is_running and screen.run_pane.running
        await pilot.press("x")
        release.set()
        await wait_for(pilot, lambda: not screen.run_pane.running)
        assert "stopped after 1 of 12" in str(screen.run_pane.query_one("#run-message").render())
    after = {path: caption(sample_copy, path) for path in before}
    changed = [path for path in before if before[path] != after[path]]
    assert changed == [POT]


async def test_incomplete_model_folder_is_refused_before_starting(sample_copy: Path, tmp_path: Path) -> None:
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"")
    app = make_app(sample_copy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_captions(pilot)
        fill_run_form(screen, folder)
        await pilot.press("ctrl+r")
        message = str(screen.run_pane.query_one("#run-message").render())
        assert "selected_tags.csv: missing" in message
        assert not screen.run_pane.running
        assert screen.run_pane.outcome_table.row_count == 0


async def test_tag_list_counts_per_concept_and_narrows_to_one(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=(160, 40)) as pilot:
        screen = await open_captions(pilot)
        await pilot.press("t")
        table = screen.tag_pane.freq_table
        await wait_for(pilot, lambda: len(table.columns) == 5)  # concept columns once there is room
        labels = [str(column.label) for column in table.columns.values()]
        assert labels == ["n", "%", "kilnpot", "kilnstyle", "tag"]
        row = [str(cell) for cell in table.get_row("kilnstyle")]
        assert row == ["6", "50", "", "6", "kilnstyle"]
        assert [str(cell) for cell in table.get_row("hill")][:2] == ["4", "33"]
        screen.query_one("#concept", Select).value = "kilnpot"
        await wait_for(pilot, lambda: "kilnstyle" not in screen.tag_pane.stats.counts)
        await pilot.pause()
        assert [str(cell) for cell in table.get_row("kilnpot")] == ["6", "100", "kilnpot"]


async def test_preview_then_apply_then_undo(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    originals = {path: caption(sample_copy, path) for path in app.curation.rows}
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_captions(pilot)
        await pilot.press("t")
        pane = screen.tag_pane
        table = pane.freq_table
        table.move_cursor(row=table.get_row_index("kilnpot"))
        await pilot.press("enter")  # the tag fills the form
        assert screen.query_one("#first", Input).value == "kilnpot"
        await pilot.press("enter")  # enter in the form previews
        await wait_for(pilot, lambda: pane.plan is not None)
        assert len(pane.plan.changes) == 6
        assert [option.id for option in pane.diff._options][:1] == [POT]
        assert caption(sample_copy, POT) == originals[POT]  # a preview writes nothing
        await pilot.press("a")
        await wait_for(
            pilot,
            lambda: (
                app.curation.rows[POT].caption.text
                == "a round blue vase on a wooden table against a pale wall\n"
            ),
        )
        assert "kilnpot" not in caption(sample_copy, POT)
        await wait_for(pilot, lambda: "kilnpot" not in pane.stats.counts)  # the list follows
        await pilot.press("u")
        await wait_for(pilot, lambda: caption(sample_copy, POT) == originals[POT])
        assert {path: caption(sample_copy, path) for path in originals} == originals
        # The file is written in the worker before the UI reloads the caption: wait for both.
        await wait_for(pilot, lambda: app.curation.rows[POT].caption.text == originals[POT])
        assert app.curation.rows[POT].caption.text == originals[POT]


async def test_undo_asks_when_a_caption_changed_since(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    other = "10_kilnpot/pot_02.jpg"
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_captions(pilot)
        await pilot.press("t")
        screen.query_one("#first", Input).value = "kilnpot"
        await pilot.press("p")
        await wait_for(pilot, lambda: screen.tag_pane.plan is not None)
        await pilot.press("a")
        await wait_for(pilot, lambda: "kilnpot" not in caption(sample_copy, POT))
        (sample_copy / other).with_suffix(".txt").write_text("edited since", encoding="utf-8")
        await pilot.press("u")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: caption(sample_copy, POT).endswith("kilnpot\n"))
    assert caption(sample_copy, other) == "edited since"


async def test_an_unsaved_dataset_edit_is_never_overwritten_silently(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    original = caption(sample_copy, POT)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("e", *"mine ")  # an unsaved edit of pot_01 in the dataset section
        app.screen.table.focus()  # a mouse click leaves the editor without asking
        screen = await open_captions(pilot)
        await pilot.press("t")
        screen.query_one("#first", Input).value = "kilnpot"
        await pilot.press("p")
        await wait_for(pilot, lambda: screen.tag_pane.plan is not None)
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, UnsavedEditScreen))
        await pilot.press("escape")  # keep my edit, change nothing
        await pilot.pause(0.2)
        assert caption(sample_copy, POT) == original
        assert app.section_screens["dataset"].query_one(CaptionEditor).dirty
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, UnsavedEditScreen))
        await pilot.press("d")  # drop my edit, apply the batch
        await wait_for(pilot, lambda: "kilnpot" not in caption(sample_copy, POT))
        editor = app.section_screens["dataset"].query_one(CaptionEditor)
        assert not editor.dirty and editor.text == caption(sample_copy, POT)


async def test_lint_finding_jumps_to_its_row_in_the_dataset_section(sample_copy: Path) -> None:
    target = "5_kilnstyle/hills_03.jpg"
    (sample_copy / target).with_suffix(".txt").write_text("sunset, orange sky, hill, sun", encoding="utf-8")
    app = make_app(sample_copy)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", *"pot", "enter")  # a dataset filter that hides the image
        screen = await open_captions(pilot)
        screen.query_one("#scope", Select).value = "filter"  # offered while the dataset filters
        assert [record.rel_path for record in screen.scope_records()] == [
            f"10_kilnpot/pot_0{n}.{'png' if n == 4 else 'jpg'}" for n in range(1, 7)
        ]
        await pilot.press("l")
        pane = screen.lint_pane
        finding_id = "missing-trigger:5_kilnstyle/hills_03.txt"
        assert finding_id in [finding.id for finding in pane.report.findings]
        pane.findings_table.move_cursor(row=pane.findings_table.get_row_index(finding_id))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DatasetScreen))
        assert app.current_mode == "dataset"
        assert app.screen.current_path() == target
        assert app.screen.filter_text == ""


async def test_lint_list_follows_edits_made_in_the_dataset_section(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_captions(pilot)
        assert not any(finding.rule == "duplicate-tag" for finding in screen.lint_pane.report.findings)
        # The editor opens at the caption's end: two more "vase" tags go after it.
        await pilot.press("1", "e", *", vase, vase", "ctrl+s", "3")
        await wait_for(
            pilot, lambda: any(f.rule == "duplicate-tag" for f in screen.lint_pane.report.findings)
        )


async def test_editor_counts_clip_tokens_and_warns_past_the_window(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=SIZE) as pilot:
        editor = app.screen.query_one(CaptionEditor)
        await wait_for(pilot, lambda: editor.tokens_ready)
        status = editor.query_one("#caption-status")
        if editor.tokenizer is None:
            assert str(status.render()) == "13 words"  # no CLIP vocabulary installed
            return
        assert str(status.render()) == "16/75 tokens"
        editor.text_area.load_text("cat " * 80)
        await pilot.pause()
        assert str(status.render()).startswith("80/75 tokens: over the window")
        assert status.has_class("-over")


def test_opening_the_captions_section_imports_no_model_library(sample_copy: Path) -> None:
    code = (
        "import asyncio, sys, json\n"
        "from kiln.tui.app import KilnApp\n"
        f"app = KilnApp({str(sample_copy)!r}, images='none', watch=False)\n"
        "async def main():\n"
        "    async with app.run_test() as pilot:\n"
        "        await pilot.press('3')\n"
        "        await pilot.pause(0.5)\n"
        "        assert type(app.screen).__name__ == 'CaptionsScreen'\n"
        "asyncio.run(main())\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
    ).stdout
    loaded = set(__import__("json").loads(out.strip().splitlines()[-1]))
    assert not loaded & {"torch", "diffusers", "transformers", "peft", "accelerate", "onnxruntime"}


def test_every_captions_binding_has_an_id_and_a_tooltip() -> None:
    for owner in (CaptionsScreen, ConfirmScreen, CaptionRunPane):
        for binding in owner.BINDINGS:
            assert isinstance(binding, Binding)
            assert binding.id and binding.tooltip, (owner.__name__, binding.key)
