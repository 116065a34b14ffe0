"""Issue 14 item 9: sample rounds that suit the device, and "sampling k/n" while they render."""

from __future__ import annotations

import json
from pathlib import Path

from kiln.cli.watch import watch_view
from kiln.engine.runs.control import controlled_trainer
from kiln.engine.runs.events import EventWriter, read_events
from kiln.engine.runs.feed import RunFeed
from kiln.engine.runs.folders import read_run
from kiln.engine.runs.layout import create_run_dir
from kiln.tui.widgets.run_table import run_cells
from rich.console import Console


def test_a_cpu_run_skips_the_baseline_and_samples_with_few_steps(make_config, monkeypatch) -> None:
    from kiln.engine.train import loop

    config = make_config(
        sample={"prompts": ["pot, colour --w 64 --h 64", "hill --w 64 --h 64 --s 3"]},
        train={"epochs": 1, "max_steps": 2},
    )
    run_dir = create_run_dir(config)
    seen: list[str | None] = []
    original = loop.render_samples

    def render(*args, on_image=None, **kwargs):
        def spy(index: int, total: int) -> None:
            on_image(index, total)
            seen.append(json.loads((run_dir / "status.json").read_text()).get("sampling"))
            seen.append(read_run(run_dir).sampling)

        return original(*args, on_image=spy, **kwargs)

    monkeypatch.setattr(loop, "render_samples", render)
    trainer = controlled_trainer(config, run_dir, cpu=True)
    trainer.setup()
    assert [prompt.steps for prompt in trainer.sample_prompts] == [8, 3]  # CPU default; --s wins
    assert trainer.sample_baseline is False
    result = trainer.run()
    assert result.state == "done", result.error
    events = read_events(run_dir)
    assert [event["epoch"] for event in events if event["type"] == "sample"] == [1]  # no epoch 0
    assert seen == ["1/2", "1/2", "2/2", "2/2"]
    assert "sampling" not in json.loads((run_dir / "status.json").read_text())


def test_sample_settings_can_be_set(make_config) -> None:
    config = make_config(
        sample={"prompts": ["pot --w 64 --h 64"], "steps": 5, "baseline": "on"},
        train={"epochs": 1, "max_steps": 1},
    )
    trainer = controlled_trainer(config, create_run_dir(config), cpu=True)
    trainer.setup()
    try:
        assert trainer.sample_prompts[0].steps == 5 and trainer.sample_baseline is True
    finally:
        trainer.close()


def test_runs_table_and_watch_show_sampling_progress(tmp_path: Path) -> None:
    run_dir = tmp_path / "20260301-140500-live"
    writer = EventWriter(run_dir, name="live", heartbeat_s=0)
    (run_dir / "config.toml").write_text('[output]\nname = "live"\n')
    try:
        writer.emit("start", total=10, epochs=1, step=0, epoch=1)
        writer.set_sampling(2, 4)
        info = read_run(run_dir)
        assert info.state == "running" and info.sampling == "2/4"
        assert str(run_cells(info)[1]) == "sampling 2/4"
        feed = RunFeed(run_dir)
        feed.poll()
        out = Console(width=60, record=True)
        out.print(watch_view(info, feed.history, 60))
        assert "sampling 2/4" in out.export_text()
        writer.emit("sample", epoch=1, step=0, files=[], prompts=[])
        assert read_run(run_dir).sampling is None
    finally:
        writer.close()
