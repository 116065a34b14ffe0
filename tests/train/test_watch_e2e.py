"""End to end on the tiny model: a detached run followed by a TUI started after it, by ``kiln
watch``, and a two-entry sweep with its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kiln.cli import main
from kiln.engine.runs.events import LIVE_STATES
from kiln.engine.runs.folders import read_run, start_detached
from kiln.engine.runs.sweep_report import sweep_report
from kiln.tui.screens.runs import RunsScreen
from kiln.tui.widgets.run_table import RunTable

from kiln import engine
from tests.tui.helpers import make_app, wait_for

# End to end: detached training processes, `kiln watch` and sweeps in subprocesses.
pytestmark = pytest.mark.slow

REPO = Path(engine.__file__).resolve().parent.parent
RUN_TIMEOUT_S = 240


def tiny_config(tiny_model: Path, dataset: Path, runs: Path, **train) -> str:
    """A TOML config: a few steps on the tiny model, one small sample prompt."""
    values = {"epochs": 2, "batch_size": 2, "precision": "fp32", "unet_lr": 1e-3, "max_steps": 6}
    values.update(train)
    train_lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in values.items())
    return f"""
[model]
base = {json.dumps(str(tiny_model))}

[dataset]
path = {json.dumps(str(dataset))}
resolution = 64
min_bucket_reso = 32
max_bucket_reso = 128
bucket_reso_steps = 32

[network]
rank = 4
alpha = 2.0

[train]
{train_lines}

[sample]
prompts = ["pot, colour --s 2 --w 64 --h 64 --d 3"]
baseline = "on"

[output]
dir = {json.dumps(str(runs))}
name = "tiny"
"""


def wait_until_ended(run_dir: Path, timeout: float = RUN_TIMEOUT_S) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_run(run_dir).state
        if state not in LIVE_STATES:
            return state
        time.sleep(0.5)
    raise AssertionError(f"{run_dir} still running after {timeout} s; see its train.log")


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    return env


@pytest.fixture(autouse=True, scope="module")
def one_thread_runs():
    """Detached runs inherit the environment: one torch thread, as the in-process tests use (the
    tiny model's ops are microseconds long; more threads only fight over 2 shared cores)."""
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    if previous is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = previous


@pytest.fixture(scope="module")
def detached(tiny_model: Path, train_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """A detached tiny-model run, and a ``kiln watch`` started on it at once."""
    root = tmp_path_factory.mktemp("detached")
    config = root / "run.toml"
    config.write_text(tiny_config(tiny_model, train_dataset, root / "runs"))
    run_dir = start_detached(config)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "kiln.cli", "watch", str(run_dir), "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    yield run_dir, watcher
    if watcher.poll() is None:
        watcher.kill()
        watcher.wait()


async def test_tui_started_after_a_detached_run_follows_it_to_the_end(detached, tmp_path: Path) -> None:
    run_dir, _ = detached
    dataset = tmp_path / "empty"
    dataset.mkdir()
    app = make_app(dataset, watch=True, runs=[run_dir.parent])
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        await wait_for(pilot, lambda: screen.query_one(RunTable).current_key == str(run_dir), timeout=20)
        await wait_for(
            pilot,
            lambda: screen.feed is not None and screen.feed.history.end is not None,
            timeout=RUN_TIMEOUT_S,
        )
        history = screen.feed.history
        assert history.end["type"] == "done", (run_dir / "train.log").read_text()[-2000:]
        assert history.steps == list(range(1, 7))
        assert set(history.samples) >= {0} and history.checkpoints
        await wait_for(pilot, lambda: screen.infos[str(run_dir)].state == "done", timeout=10)
        assert "done" in str(screen.query_one("#run-head").render())


def test_kiln_watch_exits_0_when_the_run_is_done_and_once_json_reports_it(detached, capsys) -> None:
    run_dir, watcher = detached
    out, err = watcher.communicate(timeout=RUN_TIMEOUT_S)
    assert watcher.returncode == 0, err
    assert "done" in out
    assert wait_until_ended(run_dir) == "done"
    capsys.readouterr()
    assert main(["watch", str(run_dir), "--once", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["state"] == "done" and data["step"] == data["total"] == 6
    assert {"state", "step", "total", "epoch", "loss", "it_s", "eta_s", "last_event"} <= set(data)
    assert data["last_event"]["type"] == "done" and data["run_dir"] == str(run_dir)
    # A finished run watched again exits at once, with the run's outcome.
    assert main(["watch", str(run_dir), "--interval", "0.1"]) == 0


def test_two_entry_sweep_runs_both_shares_the_latent_cache_and_reports(
    tiny_model: Path, train_dataset: Path, tmp_path: Path, capsys
) -> None:
    (tmp_path / "run.toml").write_text(
        tiny_config(tiny_model, train_dataset, tmp_path / "runs", cache_latents_to_disk=False, max_steps=0)
    )
    sweep_file = tmp_path / "lr.toml"
    sweep_file.write_text('base = "run.toml"\nmax_steps = 3\n[grid]\n"train.unet_lr" = [1e-3, 1e-2]\n')
    assert main(["sweep", str(sweep_file)]) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    sweep_dir = Path(out.splitlines()[0])
    assert sweep_dir.parent == tmp_path / "runs" and "outside the guide's 500..1000" in err
    assert main(["sweep", "--report", str(sweep_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    runs = report["runs"]
    assert [run["overrides"] for run in runs] == [{"train.unet_lr": 1e-3}, {"train.unet_lr": 1e-2}]
    for run in runs:
        assert run["state"] == "done" and run["steps"] == 3
        assert run["final_loss"] > 0 and run["min_loss"] <= run["final_loss"] and run["seconds"] > 0
        assert Path(run["run_dir"]).parent == sweep_dir
        assert "cook" in run
    assert Path(report["contact_sheet"]).is_file()
    # The sweep turned the disk cache on: the second run found every latent the first encoded.
    second_log = (Path(runs[1]["run_dir"]) / "train.log").read_text()
    assert " 0 encoded" in second_log, second_log[-2000:]
    assert main(["sweep", "--report", str(sweep_dir)]) == 0
    table = capsys.readouterr().out
    assert "unet_lr" in table and "contact sheet:" in table
    # The TEC hook: the meter's built-in words do not survive the tiny byte tokenizer, which
    # the report says per run; probing the whole (tiny) vocabulary gives each run its drift.
    assert main(["sweep", "--report", str(sweep_dir), "--json", "--tec", "--no-cook", "--no-sheet"]) == 0
    out, err = capsys.readouterr()
    assert [run["tec"] for run in json.loads(out)["runs"]] == [None, None]
    assert "run 1: no TEC figure: only 0 of the" in err
    from kiln.engine.tec.meter import ProbeOptions

    report = sweep_report(sweep_dir, cook=False, tec=True, tec_options=ProbeOptions(full_vocab=True))
    assert all(isinstance(row.tec, float) and row.tec > 0 for row in report.rows), [
        r.tec_note for r in report.rows
    ]
