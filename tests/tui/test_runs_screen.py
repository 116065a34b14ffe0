"""Pilot tests for the runs section: live updates, the list, samples, actions, the sweep view."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kiln.engine.runs.events import RUN_LAYOUT, EventWriter
from kiln.engine.runs.procinfo import HOST, process_start
from kiln.tui.screens.confirm import ConfirmScreen
from kiln.tui.screens.new_run import NewRunScreen
from kiln.tui.screens.runs import RunsScreen
from kiln.tui.screens.sweep import SweepScreen
from kiln.tui.widgets.run_table import RunTable
from kiln.tui.widgets.sample_grid import SampleGrid
from textual.binding import Binding
from textual.widgets import DataTable, Input, Select, Static

from tests.runfolders import write_run, write_sweep
from tests.tui.helpers import make_app, wait_for


def fake_model(path: Path) -> Path:
    """A folder that passes the base-model check (model_index.json; nothing is loaded)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model_index.json").write_text("{}")
    return path


def with_status(run_dir: Path, **fields) -> None:
    """Set fields of a fake run's status.json (what a trainer's start event would write)."""
    path = run_dir / "status.json"
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **fields}), encoding="utf-8")


async def open_runs(pilot) -> RunsScreen:
    await pilot.press("5")
    screen = pilot.app.screen
    assert isinstance(screen, RunsScreen)
    await wait_for(pilot, lambda: screen._listed_once)
    return screen


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


def notes(app) -> list[str]:
    return [str(notification.message) for notification in app._notifications]


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "polling"])
async def test_each_new_event_shows_as_it_is_written(sample_copy: Path, poll: bool) -> None:
    # Latency is by design (inotify, or a poll every 0.5 s: asserted below), not timed here: a
    # loaded 2-core CI machine stalls the event loop for seconds, which no user machine does.
    run_dir = sample_copy / "runs" / "20260301-140500-live"
    (run_dir.parent).mkdir()
    writer = EventWriter(run_dir, name="live", heartbeat_s=0)
    (run_dir / "config.toml").write_text('[output]\nname = "live"\n')
    writer.emit("start", total=100, epochs=2, step=0, epoch=1)
    app = make_app(sample_copy, watch=True, poll=poll)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_runs(pilot)
            await wait_for(pilot, lambda: screen.feed is not None and screen.feed.history.start is not None)
            for step in (1, 2, 3):
                writer.emit(
                    "step", step=step, total=100, epoch=1, loss=0.5 / step, lr=1e-4, it_s=2.0, eta_s=50
                )
                await wait_for(pilot, lambda step=step: f"step {step} loss" in text_of(screen, "#last-event"))
            assert screen.feed.history.steps == [1, 2, 3]
            assert "3/100" in text_of(screen, "#progress-text")
            writer.emit("done", step=3)
            await wait_for(pilot, lambda: "done at step 3" in text_of(screen, "#last-event"))
            if poll:
                assert screen.watcher.observer.timeout <= 0.5
    finally:
        writer.close()


async def test_list_holds_dataset_extra_and_sweep_runs_newest_first(
    sample_copy: Path, tmp_path: Path
) -> None:
    runs = sample_copy / "runs"
    write_run(runs, "pot", dataset=sample_copy)
    write_run(runs, "old", stamp="20250101-101500", layout=None, samples=False, t0=1735726500.0)
    write_sweep(runs, "lr", [({"train.unet_lr": 1e-4}, "done"), ({"train.unet_lr": 3e-4}, "queued")])
    extra = tmp_path / "scratch"
    write_run(extra, "far", stamp="20260310-080000", state="failed", t0=1773129600.0)
    app = make_app(sample_copy, runs=[extra])
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_runs(pilot)
        table = screen.query_one(RunTable)
        names = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        assert names == ["far", "lr/lr-01", "pot", "old"]
        states = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
        assert states == ["failed", "done", "done", "done (ro)"]
        assert screen.query_one("#list-pane").border_title == "4 run(s) · 0 running"
        # The newest run is followed: its failure is in the head line.
        assert "CUDA out of memory" in text_of(screen, "#run-head")


async def test_samples_show_baseline_beside_an_epoch_and_cycle(sample_copy: Path) -> None:
    write_run(sample_copy / "runs", "pot", dataset=sample_copy)
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_runs(pilot)
        grid = screen.query_one(SampleGrid)

        def labels() -> tuple[str, str, str]:
            return (
                str(grid.query_one("#sample-title", Static).render()),
                str(grid.query_one("#label-0", Static).render()),
                str(grid.query_one("#label-1", Static).render()),
            )

        await wait_for(pilot, lambda: labels()[2] == "epoch 3")
        title, left, _ = labels()
        assert title == "prompt 1/2: a kilnpot on a table" and left == "epoch 0 (baseline)"
        assert str(grid.query_one("#picture-1", Static).render()).strip() == "00.png"
        await pilot.press("p")
        await wait_for(pilot, lambda: labels()[0].startswith("prompt 2/2: kilnstyle"))
        await pilot.press("e")
        await wait_for(pilot, lambda: labels()[2] == "epoch 2")
        await pilot.press("e", "e")
        await wait_for(pilot, lambda: labels()[2] == "epoch 3")  # wraps to the newest
        files = text_of(screen, "#files")
        assert "pot-e003.safetensors" in files and "1 warning(s)" in files
        assert "epoch 3 done" in text_of(screen, "#log")


async def test_read_only_and_finished_runs_refuse_cancel_and_resume(sample_copy: Path) -> None:
    write_run(sample_copy / "runs", "old", layout=None)
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_runs(pilot)
        assert "read-only" in text_of(screen, "#run-head")
        await pilot.press("c")
        assert not isinstance(app.screen, ConfirmScreen)
        assert any("read-only" in note for note in notes(app))
        await pilot.press("r")
        await wait_for(pilot, lambda: any("cannot be resumed" in note for note in notes(app)))


async def test_cancel_asks_then_stops_the_training_process(sample_copy: Path) -> None:
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_dir = write_run(sample_copy / "runs", "busy", state="done")
        status = json.loads((run_dir / "status.json").read_text())
        status.update(
            state="running",
            pid=trainer.pid,
            host=HOST,
            proc_start=process_start(trainer.pid),
            layout=RUN_LAYOUT,
            updated=time.time(),
        )
        (run_dir / "status.json").write_text(json.dumps(status))
        app = make_app(sample_copy)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_runs(pilot)
            assert screen.infos[str(run_dir)].state == "running"
            await pilot.press("c")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("n")
            assert trainer.poll() is None and not (run_dir / "cancel").exists()
            await pilot.press("c", "y")
            assert trainer.wait(timeout=10) != 0  # SIGTERM: the trainer saves and stops
            assert any(path.name.startswith("cancel") for path in run_dir.iterdir())
    finally:
        if trainer.poll() is None:
            trainer.kill()
        trainer.wait()


async def test_new_run_writes_the_config_from_dataset_and_plan_and_starts_it(
    sample_copy: Path, monkeypatch
) -> None:
    write_run(sample_copy / "runs", "pot", dataset=sample_copy)
    started: list[Path] = []

    def fake_start(config_path: Path, **kwargs) -> Path:
        started.append(Path(config_path))
        return sample_copy / "runs" / "20260301-140500-pot"

    monkeypatch.setattr("kiln.engine.runs.folders.start_detached", fake_start)
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_runs(pilot)
        await pilot.press("n")
        assert isinstance(app.screen, NewRunScreen)
        form = app.screen
        # The base model comes from the dataset's latest run.
        assert form.query_one("#base", Input).value == "/models/sd15"
        form.query_one("#base", Input).value = str(fake_model(sample_copy.parent / "sd15"))
        form.query_one("#name", Input).value = "pot test"
        form.query_one("#steps", Input).value = "800"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: bool(started))
    from kiln.engine.train.config import load_config

    config = load_config(started[0])
    assert started[0].parent == sample_copy / ".kiln" / "configs"
    assert config.dataset.path == str(sample_copy.resolve()) and config.output.name == "pot-test"
    assert config.train.max_steps == 800 and config.train.cache_latents_to_disk
    assert config.model.base == str(sample_copy.parent / "sd15")
    # Sample prompts are the concepts' own captions, with fixed seeds.
    assert len(config.sample.prompts) == 2 and all("--d 10" in p for p in config.sample.prompts)


async def test_new_run_form_insists_on_a_base_model(sample_copy: Path) -> None:
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_runs(pilot)
        await pilot.press("n")
        form = app.screen
        assert isinstance(form, NewRunScreen) and form.query_one("#base", Input).value == ""
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, NewRunScreen)
        assert "base model" in str(form.query_one("#problem", Static).render())
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_sweep_view_compares_runs_and_enter_follows_one(sample_copy: Path) -> None:
    runs = sample_copy / "runs"
    write_run(runs, "pot", dataset=sample_copy)
    sweep = write_sweep(runs, "lr", [({"train.unet_lr": 1e-4}, "done"), ({"train.unet_lr": 3e-4}, "failed")])
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_runs(pilot)
        await pilot.press("v")
        assert isinstance(app.screen, SweepScreen)
        view = app.screen
        await wait_for(pilot, lambda: view.report is not None)
        table = view.query_one(DataTable)
        assert table.row_count == 2
        assert [str(table.get_row_at(0)[i]) for i in range(3)] == ["1", "0.0001", "done"]
        await wait_for(pilot, lambda: "#2 unet_lr=0.0003" in str(view.query_one("#label-2", Static).render()))
        await pilot.press("down", "enter")
        assert app.screen is screen
        assert screen.selected == str(sweep / "20260303-090002-lr-02")


async def test_quitting_leaves_a_running_run_alone(sample_copy: Path) -> None:
    run_dir = sample_copy / "runs" / "20260301-140500-live"
    writer = EventWriter(run_dir, name="live", heartbeat_s=0)
    (run_dir / "config.toml").write_text('[output]\nname = "live"\n')
    writer.emit("start", total=10)
    try:
        app = make_app(sample_copy, watch=True)
        async with app.run_test(size=(120, 40)) as pilot:
            await open_runs(pilot)
            await pilot.press("q")
        assert not (run_dir / "cancel").exists()
        assert json.loads((run_dir / "status.json").read_text())["state"] == "running"
    finally:
        writer.close()


def test_every_runs_binding_has_an_id_and_a_tooltip() -> None:
    for owner in (RunsScreen, SweepScreen, NewRunScreen, ConfirmScreen, RunTable):
        for binding in owner.BINDINGS:
            assert isinstance(binding, Binding)
            assert binding.id and binding.tooltip, (owner.__name__, binding.key)


def test_opening_the_runs_section_imports_no_torch(sample_copy: Path) -> None:
    write_run(sample_copy / "runs", "pot", dataset=sample_copy)
    code = (
        "import asyncio, sys, json\n"
        "from kiln.tui.app import KilnApp\n"
        f"app = KilnApp({str(sample_copy)!r}, images='none', watch=True)\n"
        "async def main():\n"
        "    async with app.run_test() as pilot:\n"
        "        await pilot.press('5')\n"
        "        await pilot.pause(1.5)\n"
        "        assert app.screen.feed is not None, 'no run loaded'\n"
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
    loaded = set(json.loads(out.strip().splitlines()[-1]))
    assert not loaded & {"torch", "diffusers", "transformers", "peft", "accelerate", "onnxruntime"}


async def test_new_run_takes_the_plan_sections_settings(sample_copy: Path, monkeypatch) -> None:
    from textual.widgets import Select

    started: list[Path] = []
    monkeypatch.setattr(
        "kiln.engine.runs.folders.start_detached",
        lambda config_path, **kwargs: started.append(Path(config_path)) or sample_copy / "runs" / "x",
    )
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        plan = app.screen
        plan.query_one("#batch", Input).value = "2"
        plan.query_one("#epochs", Input).value = "12"
        plan.query_one("#unet_lr", Input).value = "3e-4"
        plan.query_one("#te_lr", Input).value = "1/4"
        plan.query_one("#precision", Select).value = "bf16"
        await pilot.pause()
        await pilot.press("escape")  # leave the form: digits switch sections again
        await open_runs(pilot)
        await pilot.press("n")
        form = app.screen
        assert isinstance(form, NewRunScreen)
        settings = str(form.query_one("#settings", Static).render())
        assert "settings from the plan section" in settings
        assert "batch 2  ·  epochs 12  ·  U-Net LR 0.0003  ·  text-encoder LR 7.5e-05  ·  bf16" in settings
        form.query_one("#base", Input).value = str(fake_model(sample_copy.parent / "base"))
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: bool(started))
    from kiln.engine.train.config import load_config

    config = load_config(started[0])
    assert (config.train.batch_size, config.train.epochs, config.train.unet_lr) == (2, 12, 3e-4)
    assert config.train.text_encoder_lr_ratio == 0.25 and config.train.precision == "bf16"


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_sweep_view_on_a_run_outside_a_sweep_says_so(sample_copy: Path, size) -> None:
    runs = sample_copy / "runs"
    from tests.runfolders import T0

    # The newest run (selected first) is not in the sweep.
    write_run(runs, "pot", stamp="20260309-090000", dataset=sample_copy, t0=T0 + 86400 * 8)
    write_sweep(runs, "lr", [({"train.unet_lr": 1e-4}, "done")])
    app = make_app(sample_copy)
    async with app.run_test(size=size) as pilot:
        screen = await open_runs(pilot)
        await wait_for(pilot, lambda: screen.selected is not None)
        assert screen.selected.endswith("20260309-090000-pot")
        await pilot.press("v")
        await pilot.pause()
        assert app.screen is screen
        assert any("pot is not part of a sweep" in note for note in notes(app))


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_a_lora_saved_by_cancel_cancel_done_is_listed_once(sample_copy: Path, size) -> None:
    """Cancelling twice inside epoch 1, resuming, then finishing writes ``pot-e001`` three times."""
    run_dir = write_run(sample_copy / "runs", "pot", steps=6, epochs=1, dataset=sample_copy)
    events_file = run_dir / "events.jsonl"
    events = [json.loads(line) for line in events_file.read_text(encoding="utf-8").splitlines()]
    path = str(run_dir / "lora" / "pot-e001.safetensors")
    first_step = next(i for i, event in enumerate(events) if event["type"] == "step")
    stopped_twice = [
        {"t": events[first_step]["t"], "type": "checkpoint", "epoch": 1, "step": 1, "path": path},
        {"t": events[first_step]["t"], "type": "cancelled", "step": 1},
        {"t": events[first_step]["t"], "type": "resumed", "step": 1},
        {"t": events[first_step]["t"], "type": "checkpoint", "epoch": 1, "step": 1, "path": path},
        {"t": events[first_step]["t"], "type": "cancelled", "step": 1},
        {"t": events[first_step]["t"], "type": "resumed", "step": 1},
    ]
    events[first_step + 1 : first_step + 1] = stopped_twice
    events_file.write_text("".join(json.dumps(event) + "\n" for event in events), encoding="utf-8")
    app = make_app(sample_copy)
    async with app.run_test(size=size) as pilot:
        screen = await open_runs(pilot)
        await wait_for(pilot, lambda: "pot-e001" in text_of(screen, "#files"))
        assert text_of(screen, "#files").count("pot-e001.safetensors") == 1


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_the_family_shows_in_the_new_run_form_and_the_runs_table(sample_copy: Path, size) -> None:
    run_dir = write_run(sample_copy / "runs", "xl", dataset=sample_copy)
    with_status(run_dir, family="sdxl")
    xl = sample_copy.parent / "sdxl"
    xl.mkdir()
    (xl / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    sd15 = fake_model(sample_copy.parent / "sd15")
    app = make_app(sample_copy)
    async with app.run_test(size=size) as pilot:
        screen = await open_runs(pilot)
        table = screen.query_one(RunTable)
        model = list(table.columns).index(table.get_column_key_from_name("model"))
        assert str(table.get_row_at(0)[model]) == "SDXL"
        await pilot.press("n")
        form = app.screen
        assert isinstance(form, NewRunScreen)
        family = form.query_one("#family", Static)
        form.query_one("#base", Input).value = str(xl)
        await wait_for(pilot, lambda: str(family.render()) == "SDXL")
        form.query_one("#base", Input).value = str(sd15)
        await wait_for(pilot, lambda: str(family.render()) == "SD 1.5")
        form.query_one("#base", Input).value = str(sample_copy / "missing")
        await wait_for(pilot, lambda: str(family.render()) == "")


async def test_the_new_run_form_writes_the_network_type_and_the_table_shows_it(
    sample_copy: Path, monkeypatch
) -> None:
    run_dir = write_run(sample_copy / "runs", "pot", dataset=sample_copy)
    with_status(run_dir, family="sdxl", network="lokr")
    started: list[Path] = []

    def fake_start(config_path: Path, **kwargs) -> Path:
        started.append(Path(config_path))
        return run_dir

    monkeypatch.setattr("kiln.engine.runs.folders.start_detached", fake_start)
    app = make_app(sample_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_runs(pilot)
        table = screen.query_one(RunTable)
        model = list(table.columns).index(table.get_column_key_from_name("model"))
        assert str(table.get_row_at(0)[model]) == "SDXL LoKr"
        await pilot.press("n")
        form = app.screen
        assert isinstance(form, NewRunScreen)
        form.query_one("#base", Input).value = str(fake_model(sample_copy.parent / "sd15"))
        form.query_one("#module", Select).value = "loha"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: bool(started))
    from kiln.engine.train.config import load_config

    config = load_config(started[0])
    assert config.network.type == "loha" and config.network.conv_rank == 0
