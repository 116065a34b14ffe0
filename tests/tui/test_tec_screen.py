"""Pilot tests for the TEC section: reports on tiny models, a run's series, validation, cancel,
and no torch until a measurement starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from kiln.tui.screens.tec import TecScreen
from kiln.tui.tec_form import measure
from kiln.tui.widgets.plan_field import PlanField
from kiln.tui.widgets.tec_chart import TecChart
from kiln.tui.widgets.tec_report_view import TecReportView
from textual.widgets import Checkbox, DataTable, Input, ProgressBar

from tests.tinytec import write_unet_only_epoch
from tests.tui.helpers import make_app, wait_for, write_tec_run

SIZE = (120, 40)
# The first measurement of a session imports torch and transformers (several seconds on 2 cores).
MEASURE_TIMEOUT = 90.0


async def open_tec(pilot) -> TecScreen:
    await pilot.press("6")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, TecScreen))
    return pilot.app.screen


async def put(pilot, **values: str) -> None:
    """Fill inputs the way a paste would (one change each)."""
    for key, value in values.items():
        pilot.app.screen.query_one(f"#{key}", Input).value = value
    await pilot.pause()


async def leave(pilot, key: str) -> None:
    """Focus a field and tab out of it, as a user moving on does (that checks it)."""
    pilot.app.screen.query_one(f"#{key}", Input).focus()
    await pilot.pause()
    await pilot.press("tab")


async def measured(pilot, screen: TecScreen, key: str = "ctrl+r") -> None:
    """Press ctrl+r (or ``key``) and wait for the report."""
    before = screen.result
    await pilot.press(key)
    assert not screen.status.startswith("Not measured"), screen.status
    await wait_for(
        pilot,
        lambda: screen.running is None and (screen.result is not before or "Failed" in screen.status),
        timeout=MEASURE_TIMEOUT,
    )
    assert screen.result is not before, screen.status


def message(screen: TecScreen, key: str) -> str:
    """The error under a field ('' when it has none)."""
    field = screen.query_one(f"#field-{key}", PlanField)
    return " ".join(str(field.query_one(".message").content).split()) if field.has_class("-invalid") else ""


def view_text(screen: TecScreen) -> str:
    return str(screen.query_one("#report", TecReportView).content)


async def test_a_model_against_itself_reads_zero_and_a_noisy_copy_more(tec_dir: Path) -> None:
    app = make_app(tec_dir / "data")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_tec(pilot)
        await put(pilot, candidate="tiny", reference="tiny", words="letters.txt")
        await measured(pilot, screen)
        report = screen.result.report
        assert report.score == 0.0 and report.confusion_rate == 0.0 and len(report.words) == 36
        text = view_text(screen)
        assert "TEC score 0.000 · confusion 0.00% (0 of 36 words) · close to zero" in text
        assert "provisional thresholds: close to zero = score < 1" in text
        assert "Confused: none" in text and "Most drifted: none" in text
        assert "tok\u00a00 · pos\u00a00 · L0\u00a00 · L1\u00a00 · norm\u00a00" in text
        assert screen.status == "Measured: 36 words, close to zero"
        assert not screen.query_one("#progress", ProgressBar).display
        assert not screen.query_one("#intro").display and not screen.query_one("#chart").display

        await put(pilot, candidate="noisy")
        await measured(pilot, screen)
        noisy = screen.result.report
        assert noisy.score > 0.1
        text = view_text(screen)
        assert f"TEC score {noisy.score:.3f}" in text and noisy.reading in text
        assert text.startswith("noisy vs tiny")
        drifted_word, cosine = noisy.drifted(1)[0]
        assert f"{drifted_word:<14} {cosine:7.4f}" in text  # the most drifted word is listed
        assert "Most drifted: none" not in text


async def test_a_run_with_two_epoch_loras_shows_a_two_point_series(
    tec_dir: Path, tiny_encoder, tiny_folder: Path
) -> None:
    root = tec_dir / "data"
    run = write_tec_run(root, tiny_encoder, tiny_folder)
    unet = root / "runs" / "20261127-090000-style"
    write_unet_only_epoch(unet / "lora" / "style-e001.safetensors", epoch=1)
    (unet / "config.toml").write_text(f'[model]\nbase = "{tiny_folder}"\n', encoding="utf-8")
    app = make_app(root)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_tec(pilot)
        await pilot.press("ctrl+t")
        runs = screen.query_one("#runs", DataTable)
        assert runs.display and runs.row_count == 2
        assert [str(cell) for cell in runs.get_row_at(0)] == ["20261127-090000-style", "1", "no"]
        # The newest run is highlighted: it trained the U-Net only, and says so.
        await put(pilot, words="letters.txt")
        await pilot.press("ctrl+r")
        assert screen.running is None
        run_message = str(screen.query_one("#run-message").content)
        assert "this run did not train the text encoder" in run_message
        assert screen.status == "Not measured: fix run"
        runs.focus()
        await pilot.press("down")
        assert screen.highlighted_run().path == run
        assert not screen.query_one("#run-message").display
        assert "from the run's config" in str(screen.query_one("#field-base .message").content)
        await measured(pilot, screen, "enter")  # enter on a run measures it
        series = screen.result.series
        chart = screen.query_one("#chart", TecChart)
        assert chart.display and [epoch for epoch, _ in chart.series] == [1, 2]
        assert 0 < chart.series[0][1] < chart.series[1][1]
        assert chart.series == [(entry.epoch, entry.report.score) for entry in series]
        epochs = screen.query_one("#epochs", DataTable)
        assert epochs.row_count == 2 and epochs.cursor_row == 1
        assert view_text(screen).startswith("Epoch 2: pot-e002.safetensors")
        epochs.focus()
        await pilot.press("up")
        assert view_text(screen).startswith("Epoch 1: pot-e001.safetensors")
        assert f"TEC score {series[0].report.score:.3f}" in view_text(screen)
        assert screen.status == "Measured: 2 saved epochs"
        assert run.name in str(screen.query_one("#series-title").content)


async def test_bad_fields_get_one_line_messages_and_nothing_runs(tec_dir: Path) -> None:
    write_unet_only_epoch(tec_dir / "unet-lora.safetensors")
    (tec_dir / "model.ckpt").write_bytes(b"a pickle is never opened by a check")
    (tec_dir / "notes.txt").write_text("not a model", encoding="utf-8")
    app = make_app(tec_dir / "data")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_tec(pilot)
        await pilot.press("ctrl+r")  # an empty form: every field says what it wants
        assert screen.running is None
        assert message(screen, "candidate").startswith("type the checkpoint")
        assert message(screen, "reference").startswith("type the checkpoint to compare with")
        await put(pilot, candidate="missing.safetensors", reference="model.ckpt", scale="x", words="nope.txt")
        await pilot.press("ctrl+r")
        assert screen.status == "Not measured: fix candidate, reference, words"
        assert message(screen, "candidate").startswith("no such file or folder")
        assert "tiny" not in message(screen, "candidate")  # the path is the field's, not repeated
        assert message(screen, "reference").startswith("pickled weights (.ckpt/.pt/.bin) can run code")
        assert message(screen, "words").startswith("no such words file")
        # A pickle is accepted once the user says so.
        screen.query_one("#allow_pickle", Checkbox).value = True
        await pilot.pause()
        assert message(screen, "reference") == ""
        assert str(screen.query_one("#allow_pickle", Checkbox).label) == "on"
        await put(pilot, candidate="notes.txt", reference="unet-lora.safetensors", words="")
        await leave(pilot, "candidate")
        await leave(pilot, "reference")
        assert "unknown model file type" in message(screen, "candidate")
        assert message(screen, "reference").startswith("a LoRA, not a checkpoint")
        await put(pilot, candidate="unet-lora.safetensors", reference="tiny")
        await leave(pilot, "candidate")
        assert "holds no text-encoder weights" in message(screen, "candidate")
        assert screen.query_one("#field-scale").display  # a LoRA candidate is merged at a scale
        assert message(screen, "scale").startswith("'x' is not a number")
        # Typing again clears a message about the old text until the field is left.
        await put(pilot, candidate="tin")
        assert message(screen, "candidate") == ""
        await put(pilot, candidate="tiny", words="letters.txt")
        screen.query_one("#full_vocab", Checkbox).value = True
        await pilot.pause()
        await pilot.press("ctrl+r")
        assert screen.running is None
        assert message(screen, "words").startswith("full vocabulary is on")
        assert not screen.query_one("#field-scale").display  # no LoRA candidate: no scale


async def test_cancel_stops_the_measurement_and_its_results_never_arrive(tec_dir: Path) -> None:
    app = make_app(tec_dir / "data")
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    outcome: list[str] = []

    def held(job, progress):
        """The real meter, held after its first batch until the test lets it go on."""

        def hold(stage: str, done: int, total: int) -> None:
            if not started.is_set():
                started.set()
                release.wait(30)
            progress(stage, done, total)

        try:
            result = measure(job, hold)
        except BaseException as exc:
            outcome.append(type(exc).__name__)
            raise
        else:
            outcome.append("finished")
            return result
        finally:
            finished.set()

    async with app.run_test(size=SIZE) as pilot:
        screen = await open_tec(pilot)
        screen.measure_fn = held
        await put(pilot, candidate="noisy", reference="tiny", words="letters.txt")
        await pilot.press("ctrl+r")
        await wait_for(pilot, started.is_set, timeout=MEASURE_TIMEOUT)
        assert screen.query_one("#progress", ProgressBar).display
        await pilot.press("ctrl+g")
        assert screen.running is None and screen.status == "Cancelled"
        assert not screen.query_one("#progress", ProgressBar).display
        release.set()
        await wait_for(pilot, finished.is_set)
        await pilot.pause(0.2)
        # The meter stopped at its next progress call, and nothing it sent was shown.
        assert outcome == ["TecRunCancelled"]
        assert screen.result is None and screen.status == "Cancelled"
        screen.measure_fn = measure
        await measured(pilot, screen)
        assert screen.result.report.score > 0


def test_opening_the_tec_section_imports_no_torch(tec_dir: Path) -> None:
    code = (
        "import asyncio, sys, json\n"
        "from kiln.tui.app import KilnApp\n"
        "app = KilnApp('data', images='none', watch=False)\n"
        "async def main():\n"
        "    async with app.run_test() as pilot:\n"
        "        await pilot.press('6')\n"
        "        app.screen.query_one('#candidate').value = 'tiny'\n"
        "        app.screen.query_one('#reference').value = 'noisy'\n"
        "        await pilot.press('ctrl+t', 'ctrl+t')\n"
        "        await pilot.pause(0.3)\n"
        "        assert type(app.screen).__name__ == 'TecScreen', app.screen\n"
        "asyncio.run(main())\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tec_dir,
        env=dict(os.environ),
    ).stdout
    loaded = set(json.loads(out.strip().splitlines()[-1]))
    assert "kiln" in loaded and "textual_plotext" in loaded
    assert not loaded & {"torch", "diffusers", "transformers", "peft", "accelerate", "onnxruntime"}


async def test_tec_chart_draws_only_the_bands_the_scores_come_near() -> None:
    from textual.app import App

    class ChartApp(App):
        def compose(self):
            yield TecChart()

    app = ChartApp()
    async with app.run_test(size=(60, 14)) as pilot:
        chart = app.query_one(TecChart)
        chart.show([(1, 0.1), (2, 0.3)])
        assert chart.drawn_bands == ()  # tiny scores are not squashed under a line at 5
        chart.show([(1, 0.6), (2, 2.0)])
        assert chart.drawn_bands == (1.0,)
        chart.show([(1, 3.0), (3, 9.0)])
        await pilot.pause()
        assert chart.drawn_bands == (1.0, 5.0) and chart.series == [(1, 3.0), (3, 9.0)]
        assert "TEC score per epoch" in str(chart.render())
        chart.show([])
        assert chart.drawn_bands == () and "no epochs measured yet" in str(chart.render())
