"""Sweep files, sweep folders, the run queue and the report, without training (fake runs)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from kiln.engine.errors import ConfigError
from kiln.engine.runs.events import EventWriter
from kiln.engine.runs.sweep import (
    QueueHooks,
    create_sweep,
    load_sweep,
    read_sweep_record,
    run_queue,
)
from kiln.engine.runs.sweep_report import contact_sheet, samples_by_prompt, sweep_report
from kiln.engine.train.config import load_config
from PIL import Image

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BASE = """
[model]
base = "model"
[dataset]
path = "data"
[output]
name = "pot"
"""


def write(tmp_path: Path, sweep: str, base: str = BASE) -> Path:
    (tmp_path / "run.toml").write_text(base)
    path = tmp_path / "lr.toml"
    path.write_text(sweep)
    return path


def test_grid_is_the_product_of_its_lists(tmp_path: Path) -> None:
    plan = load_sweep(
        write(
            tmp_path,
            'base = "run.toml"\nmax_steps = 800\n[grid]\n"train.unet_lr" = [1e-4, 3e-4]\n'
            '"train.text_encoder_lr_ratio" = [0.25, 0.1667]\n',
        )
    )
    assert len(plan.entries) == 4 and plan.warnings == ()
    assert plan.entries[1] == {"train.unet_lr": 1e-4, "train.text_encoder_lr_ratio": 0.1667}
    assert [c.train.unet_lr for c in plan.configs] == [1e-4, 1e-4, 3e-4, 3e-4]
    assert all(c.train.max_steps == 800 for c in plan.configs)
    assert plan.base_path == tmp_path / "run.toml" and plan.name == "lr"


def test_runs_tables_list_runs_explicitly_and_nested_keys_work(tmp_path: Path) -> None:
    plan = load_sweep(
        write(
            tmp_path,
            'base = "run.toml"\nmax_steps = 600\n[[runs]]\n"train.unet_lr" = 1e-4\n'
            '[[runs]]\ntrain = { unet_lr = 3e-4, precision = "bf16", max_steps = 900 }\n',
        )
    )
    assert plan.entries == (
        {"train.unet_lr": 1e-4},
        {"train.unet_lr": 3e-4, "train.precision": "bf16", "train.max_steps": 900},
    )
    assert [c.train.max_steps for c in plan.configs] == [600, 900]  # a run's own value wins


def test_steps_outside_the_guides_range_warn_and_never_refuse(tmp_path: Path) -> None:
    plan = load_sweep(
        write(tmp_path, 'base = "run.toml"\nmax_steps = 2000\n[grid]\n"train.unet_lr" = [1e-4, 2e-4]\n')
    )
    assert plan.warnings == ("every run: 2000 steps is outside the guide's 500..1000 for a test run",)
    assert len(plan.configs) == 2
    uncapped = load_sweep(write(tmp_path, 'base = "run.toml"\n[[runs]]\n"train.seed" = 1\n'))
    assert "no step cap" in uncapped.warnings[0]


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        (
            'base = "run.toml"\n[grid]\n"train.unet_rate" = [1]\n',
            r"grid: unknown key train.unet_rate; did you mean train.unet_lr",
        ),
        (
            'base = "run.toml"\n[[runs]]\nlearning_rate = 1e-4\n',
            r"runs\[1\]: unknown key learning_rate \(Kohya's learning_rate is train.unet_lr",
        ),
        (
            'base = "run.toml"\nsteps = 3\n[grid]\n"train.seed" = [1]\n',
            r"unknown key steps; a sweep file holds base, max_steps",
        ),
        (
            'base = "run.toml"\n[train]\nunet_lr = 1\n[grid]\n"train.seed" = [1]\n',
            r"unknown key train \(config keys go inside \[grid\]",
        ),
        (
            'base = "run.toml"\n[grid]\n"train.unet_lr" = [1e-4, -1.0]\n',
            r"run 2 \(train.unet_lr=-1.0\): train.unet_lr = -1.0: must be above 0",
        ),
        (
            'base = "run.toml"\n[grid]\n"train.unet_lr" = 1e-4\n',
            r"grid train.unet_lr = 0.0001: must be a non-empty list",
        ),
        ('max_steps = 800\n[grid]\n"train.seed" = [1]\n', r'base = "run.toml" is required'),
        ('base = "run.toml"\nmax_steps = 800\n', r"no runs: add \[grid\]"),
        (
            'base = "run.toml"\nmax_steps = 0\n[grid]\n"train.seed" = [1]\n',
            r"max_steps = 0: must be a whole number",
        ),
        ('base = "missing.toml"\n[grid]\n"train.seed" = [1]\n', r"missing.toml: no such config file"),
    ],
)
def test_bad_sweep_files_say_which_key(tmp_path: Path, sweep: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_sweep(write(tmp_path, sweep))


def test_sweep_folder_holds_one_config_per_run_sharing_the_latent_cache(tmp_path: Path) -> None:
    plan = load_sweep(
        write(tmp_path, 'base = "run.toml"\nmax_steps = 700\n[grid]\n"train.unet_lr" = [1e-4, 3e-4]\n')
    )
    sweep_dir = create_sweep(plan, now=0)
    assert sweep_dir.parent == tmp_path / "data" / "runs" and sweep_dir.name.startswith("sweep-1970")
    record = read_sweep_record(sweep_dir)
    assert [e["state"] for e in record["runs"]] == ["queued", "queued"]
    assert record["runs"][1]["overrides"] == {"train.unet_lr": 3e-4}
    config = load_config(sweep_dir / record["runs"][1]["config"])
    assert config.train.cache_latents_to_disk and config.train.max_steps == 700
    assert config.train.unet_lr == 3e-4 and config.output.dir == str(sweep_dir)
    assert config.output.name == "pot-02"
    with open(sweep_dir / record["runs"][0]["config"], "rb") as handle:
        assert tomllib.load(handle)["model"]["base"] == str(tmp_path / "model")


class FakeRuns:
    """Runs that finish after a few state reads; records how many ran at once."""

    def __init__(self, sweep_dir: Path, reads_to_finish: int = 2, fail: set[int] = frozenset()) -> None:
        self.sweep_dir = sweep_dir
        self.reads: dict[Path, int] = {}
        self.reads_to_finish = reads_to_finish
        self.fail = fail
        self.most_at_once = 0
        self.cancelled: list[Path] = []
        self.launched: list[str] = []
        self.envs: list[dict[str, str]] = []

    def launch(self, config: Path, env: Mapping[str, str]) -> Path:
        number = int(config.stem)
        self.envs.append(dict(env))
        if number in self.fail:
            raise RuntimeError("no GPU left")
        run_dir = self.sweep_dir / f"run-{number}"
        run_dir.mkdir()
        self.reads[run_dir] = 0
        self.launched.append(config.name)
        self.most_at_once = max(
            self.most_at_once, sum(1 for n in self.reads.values() if n < self.reads_to_finish)
        )
        return run_dir

    def state(self, run_dir: Path) -> str:
        if run_dir in self.cancelled:
            return "cancelled"
        self.reads[run_dir] += 1
        return "done" if self.reads[run_dir] >= self.reads_to_finish else "running"

    def cancel(self, run_dir: Path) -> None:
        self.cancelled.append(run_dir)

    def hooks(self) -> QueueHooks:
        return QueueHooks(launch=self.launch, state=self.state, cancel=self.cancel)


def three_run_sweep(tmp_path: Path) -> Path:
    plan = load_sweep(
        write(tmp_path, 'base = "run.toml"\nmax_steps = 500\n[grid]\n"train.seed" = [1, 2, 3]\n')
    )
    return create_sweep(plan)


@pytest.mark.parametrize("parallel", [1, 2])
def test_queue_runs_every_entry_at_most_parallel_at_once(tmp_path: Path, parallel: int) -> None:
    sweep_dir = three_run_sweep(tmp_path)
    fake = FakeRuns(sweep_dir)
    record = run_queue(sweep_dir, parallel=parallel, hooks=fake.hooks(), poll_seconds=0)
    assert fake.launched == ["01.toml", "02.toml", "03.toml"]
    assert fake.most_at_once == parallel
    assert [e["state"] for e in record["runs"]] == ["done"] * 3
    assert read_sweep_record(sweep_dir)["runs"][2]["run_dir"] == "run-3"
    assert record["runner_pid"] is None


def test_a_run_that_cannot_start_fails_and_the_queue_goes_on(tmp_path: Path) -> None:
    sweep_dir = three_run_sweep(tmp_path)
    record = run_queue(sweep_dir, hooks=FakeRuns(sweep_dir, fail={2}).hooks(), poll_seconds=0)
    assert [e["state"] for e in record["runs"]] == ["done", "failed", "done"]
    assert record["runs"][1]["error"] == "no GPU left"


def test_stopping_the_queue_cancels_runs_in_flight_and_skips_the_rest(tmp_path: Path) -> None:
    sweep_dir = three_run_sweep(tmp_path)
    fake = FakeRuns(sweep_dir, reads_to_finish=100)
    calls = iter(range(100))
    record = run_queue(sweep_dir, hooks=fake.hooks(), should_stop=lambda: next(calls) >= 2, poll_seconds=0)
    assert fake.cancelled == [sweep_dir / "run-1"]
    assert [e["state"] for e in record["runs"]][1:] == ["skipped", "skipped"]


def fake_run(
    sweep_dir: Path, name: str, losses: list[float], images: list[Image.Image] | None = None
) -> Path:
    run_dir = sweep_dir / name
    writer = EventWriter(run_dir, name=name)
    files0 = []
    for index in range(2):
        path = run_dir / "samples" / "e000" / f"{index:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (40 * index, 90, 120)).save(path)
        files0.append(str(path))
    writer.emit("start", total=len(losses))
    writer.emit("sample", epoch=0, step=0, files=files0, prompts=[{"prompt": "a pot"}, {"prompt": "a hill"}])
    for step, loss in enumerate(losses, start=1):
        writer.emit("step", step=step, total=len(losses), loss=loss, lr=1e-4)
    files1 = []
    for index, image in enumerate(images or []):
        path = run_dir / "samples" / "e001" / f"{index:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        files1.append(str(path))
    if files1:
        writer.emit("sample", epoch=1, step=len(losses), files=files1)
    writer.emit("done", step=len(losses), seconds=12.5)
    writer.close()
    return run_dir


def test_report_compares_runs_and_composes_a_contact_sheet(tmp_path: Path) -> None:
    sweep_dir = three_run_sweep(tmp_path)
    fake_run(sweep_dir, "run-1", [1.0] * 3 + [0.1] * 10 + [1.0] * 10, [Image.new("RGB", (32, 32), "red")] * 2)
    fake_run(sweep_dir, "run-2", [0.9, 0.8])
    record = read_sweep_record(sweep_dir)
    record["runs"][0].update(run_dir="run-1", state="done")
    record["runs"][1].update(run_dir="run-2", state="done")
    (sweep_dir / "sweep.json").write_text(json.dumps(record))
    report = sweep_report(sweep_dir, cook=False, state_of=lambda path: "done")
    data = report.to_json()
    first, second, third = data["runs"]
    assert first["run_dir"] == str(sweep_dir / "run-1") and first["overrides"] == {"train.seed": 1}
    assert first["steps"] == 23 and first["seconds"] == 12.5 and first["state"] == "done"
    # Smoothed: the minimum lags the dip to 0.1, the end lags the climb back to 1.0.
    assert 0.1 < first["min_loss"] < 0.5 < first["final_loss"] < 1.0
    assert second["final_loss"] == pytest.approx(second["min_loss"])
    assert third == {**third, "run_dir": None, "state": "queued", "steps": 0, "final_loss": None}
    assert set(first) >= {
        "run_dir",
        "overrides",
        "state",
        "steps",
        "final_loss",
        "min_loss",
        "seconds",
        "cook",
    }
    grid = samples_by_prompt(report)
    assert [p.prompt for p in grid] == ["a pot", "a hill"]
    assert grid[0].baseline.name == "00.png" and grid[0].runs[1][1] is None
    sheet = contact_sheet(report)
    assert sheet == sweep_dir / "contact-sheet.png"
    with Image.open(sheet) as image:
        assert image.width > 4 * 160 and image.height > 2 * 160
        # The first run's red sample sits in column 2 of the first prompt's row.
        assert image.getpixel((6 + 160 + 6 + 80, 30 + 15 + 80)) == (255, 0, 0)


def test_the_network_type_is_a_sweepable_key_and_a_bad_one_is_named(tmp_path: Path) -> None:
    plan = load_sweep(
        write(tmp_path, 'base = "run.toml"\n[grid]\n"network.type" = ["lora", "loha", "lokr"]\n')
    )
    assert [config.network.type for config in plan.configs] == ["lora", "loha", "lokr"]
    with pytest.raises(ConfigError, match=r"network\.type = \"lycoris\": must be one of lora, locon, loha"):
        load_sweep(write(tmp_path, 'base = "run.toml"\n[grid]\n"network.type" = ["lycoris"]\n'))
