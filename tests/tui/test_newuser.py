"""Issue 14, what a new user trips over, in the TUI: sampling progress, the new-run form, resume --force."""

from __future__ import annotations

from pathlib import Path

import pytest
from kiln.engine.runs.events import EventWriter
from kiln.tui.widgets.run_table import RunTable

from tests.tui.helpers import make_app, wait_for
from tests.tui.test_runs_screen import open_runs

SIZES = [(80, 24), (120, 40)]


@pytest.mark.parametrize("size", SIZES)
async def test_runs_table_shows_sampling_progress(sample_copy: Path, size) -> None:
    run_dir = sample_copy / "runs" / "20260301-140500-live"
    run_dir.parent.mkdir()
    writer = EventWriter(run_dir, name="live", heartbeat_s=0)
    (run_dir / "config.toml").write_text('[output]\nname = "live"\n')
    writer.emit("start", total=100, epochs=2, step=0, epoch=1)
    app = make_app(sample_copy, watch=True)
    try:
        async with app.run_test(size=size) as pilot:
            screen = await open_runs(pilot)
            table = screen.query_one(RunTable)
            writer.set_sampling(1, 3)

            def state_cell() -> str:
                return str(table.get_row_at(0)[1]) if table.row_count else ""

            await wait_for(pilot, lambda: state_cell() == "sampling 1/3", timeout=8)
            writer.emit("sample", epoch=0, step=0, files=[], prompts=[])
            await wait_for(pilot, lambda: state_cell() == "running", timeout=8)
    finally:
        writer.close()


@pytest.mark.parametrize("size", SIZES)
async def test_new_run_form_offers_the_small_run_settings_and_no_fp16_on_a_cpu(
    sample_copy: Path, size, monkeypatch
) -> None:
    from kiln.engine.train.config import load_config
    from kiln.tui.screens.new_run import NewRunScreen
    from textual.widgets import Input, Select, Static

    from tests.tui.test_runs_screen import fake_model

    monkeypatch.setattr("kiln.engine.nvidia.nvidia_gpu_visible", lambda: False)
    started: list[Path] = []
    monkeypatch.setattr(
        "kiln.engine.runs.folders.start_detached",
        lambda config_path, **kwargs: started.append(Path(config_path)) or sample_copy / "runs" / "x",
    )
    app = make_app(sample_copy)
    async with app.run_test(size=size) as pilot:
        await open_runs(pilot)
        await pilot.press("n")
        form = app.screen
        assert isinstance(form, NewRunScreen)
        precision = form.query_one("#precision", Select)
        assert "fp16" not in [value for _, value in precision._options] and precision.value == "fp32"
        for ident in ("min_bucket", "rank", "alpha", "unet_lr", "te_lr", "sample_steps"):
            assert form.query_one(f"#{ident}", Input).display
        # A base model that does not exist is refused in the form: no config is written.
        form.query_one("#base", Input).value = str(sample_copy.parent / "nowhere")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is form
        assert "no such file or folder" in str(form.query_one("#problem", Static).render())
        problem = form.query_one("#problem", Static).region
        assert problem.height > 0 and problem.bottom <= size[1]  # in sight, even at 80x24
        assert not (sample_copy / ".kiln" / "configs").exists()
        # An out-of-range value is refused by its key, before anything is written.
        form.query_one("#base", Input).value = str(fake_model(sample_copy.parent / "sd15"))
        form.query_one("#rank", Input).value = "10000"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is form and "network.rank" in str(form.query_one("#problem", Static).render())
        form.query_one("#rank", Input).value = "8"
        form.query_one("#alpha", Input).value = "4"
        form.query_one("#min_bucket", Input).value = "128"
        form.query_one("#unet_lr", Input).value = "2e-4"
        form.query_one("#sample_steps", Input).value = "6"
        form.query_one("#module", Select).value = "locon"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: bool(started))
    config = load_config(started[0])
    assert config.train.precision == "fp32"
    assert (config.network.rank, config.network.alpha, config.network.conv_rank) == (8, 4.0, 4)
    assert config.dataset.min_bucket_reso == 128 and config.train.unet_lr == 2e-4
    assert config.sample.steps == 6 and config.train.optimizer == "adamw"


async def test_new_run_on_a_cpu_never_starts_fp16(sample_copy: Path, monkeypatch) -> None:
    """The runs screen checks the config again before writing it (fp16 from an edited plan)."""
    from kiln.tui.screens.new_run import NewRunRequest

    monkeypatch.setattr("kiln.engine.nvidia.nvidia_gpu_visible", lambda: False)
    from tests.tui.test_runs_screen import fake_model, notes

    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_runs(pilot)
        request = NewRunRequest(
            str(fake_model(sample_copy.parent / "sd15")), "pot", 10, {"train.precision": "fp16"}
        )
        screen.start_run(request, {})
        await wait_for(pilot, lambda: any("fp16" in note for note in notes(app)), timeout=8)
    assert not (sample_copy / ".kiln" / "configs").exists()
    assert not (sample_copy / "runs").exists()


@pytest.mark.parametrize("size", SIZES)
async def test_resuming_an_edited_config_asks_naming_the_change_then_forces(
    sample_copy: Path, size, monkeypatch
) -> None:
    from kiln.tui.screens.confirm import ConfirmScreen
    from kiln.tui.screens.runs import RunsScreen
    from textual.widgets import Static

    from tests.runfolders import write_run

    run_dir = write_run(sample_copy / "runs", "pot", state="cancelled", dataset=sample_copy)
    calls: list[tuple[Path, bool]] = []
    monkeypatch.setattr(
        "kiln.engine.runs.folders.check_resumable", lambda path, force=False: run_dir / "state" / "s"
    )
    monkeypatch.setattr(
        "kiln.engine.runs.folders.changed_keys", lambda path, save: ["train.unet_lr", "train.epochs"]
    )
    monkeypatch.setattr(
        "kiln.engine.runs.folders.resume_run",
        lambda path, detach, force=False: calls.append((Path(path), force)) or path,
    )
    app = make_app(sample_copy)
    async with app.run_test(size=size) as pilot:
        screen = await open_runs(pilot)
        await wait_for(pilot, lambda: screen.selected == str(run_dir))
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        text = " ".join(str(widget.render()) for widget in app.screen.query(Static))
        assert "train.unet_lr, train.epochs" in text and "--force" in text
        assert not calls
        await pilot.press("y")
        await wait_for(pilot, lambda: bool(calls))
        assert isinstance(app.screen, RunsScreen)
    assert calls == [(run_dir, True)]


async def test_declining_the_forced_resume_leaves_the_run(sample_copy: Path, monkeypatch) -> None:
    from kiln.tui.screens.confirm import ConfirmScreen

    from tests.runfolders import write_run

    run_dir = write_run(sample_copy / "runs", "pot", state="cancelled", dataset=sample_copy)
    calls: list[bool] = []
    monkeypatch.setattr("kiln.engine.runs.folders.check_resumable", lambda path, force=False: run_dir)
    monkeypatch.setattr("kiln.engine.runs.folders.changed_keys", lambda path, save: ["train.unet_lr"])
    monkeypatch.setattr(
        "kiln.engine.runs.folders.resume_run", lambda path, detach, force=False: calls.append(force)
    )
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_runs(pilot)
        await wait_for(pilot, lambda: screen.selected == str(run_dir))
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await pilot.pause(0.3)
    assert calls == []
