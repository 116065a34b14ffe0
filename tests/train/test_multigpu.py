"""Two training processes under ``accelerate launch`` on the CPU (gloo): the slow test of run control.

One run, detached, held after step 2 in both processes; a cancel reaches the main process
only, yet both stop at the same step (the stop is agreed across processes); then ``kiln
resume`` relaunches two processes that finish with Kohya's step count for two processes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.store import Store
from kiln.engine.plan.loads import dataset_load
from kiln.engine.plan.steps import plan_steps
from kiln.engine.runs.events import read_events
from kiln.engine.runs.folders import cancel_run, read_run
from kiln.engine.runs.testhooks import HOLD_ENV
from kiln.engine.train.config import config_from_mapping, resolved_toml
from kiln.engine.train.data import bucket_spec

from tests.train.test_cli_train import kiln

# End to end: a two-process (gloo) training run, cancelled and resumed.
pytestmark = pytest.mark.slow


def wait_for(predicate, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_two_process_run_agrees_on_cancel_and_resumes_to_kohyas_step_count(
    tiny_model: Path, train_dataset: Path, tmp_path: Path
) -> None:
    config = config_from_mapping(
        {
            "model": {"base": str(tiny_model)},
            "dataset": {
                "path": str(train_dataset),
                "resolution": 64,
                "min_bucket_reso": 32,
                "max_bucket_reso": 128,
                "bucket_reso_steps": 32,
            },
            "network": {"rank": 4, "alpha": 2.0, "train_text_encoder": False},
            "train": {"epochs": 2, "batch_size": 1, "precision": "fp32", "scheduler": "linear"},
            "output": {"dir": str(tmp_path / "runs"), "name": "ddp"},
        }
    )
    path = tmp_path / "run.toml"
    path.write_text(resolved_toml(config), encoding="utf-8")
    flag = tmp_path / "held"

    launched = kiln("train", str(path), "--gpus", "2", "--cpu", "--detach", env={HOLD_ENV: f"2:{flag}"})
    assert launched.returncode == 0, launched.stderr
    run_dir = Path(launched.stdout.strip().splitlines()[-1])
    wait_for(flag.exists, "both processes to reach step 2")
    cancel_run(run_dir)  # SIGTERM to the main process only
    time.sleep(0.5)
    flag.unlink()  # releases the other process, which learns of the stop from the main one
    wait_for(lambda: read_run(run_dir).state != "running", "the processes to stop")
    info = read_run(run_dir)
    assert info.state == "cancelled" and info.step == 2, info.error

    resumed = kiln("resume", str(run_dir), "--quiet")
    assert resumed.returncode == 0, resumed.stderr + (run_dir / "train.log").read_text()[-3000:]
    assert resumed.stdout.strip().splitlines()[-1] == str(run_dir)

    dataset = scan_dataset(train_dataset)
    with Store(dataset.root) as store:
        load = dataset_load(dataset, store, bucket_spec(config.dataset))
    plan = plan_steps(load.bucket_items(), batch=1, epochs=2, processes=2)
    single = plan_steps(load.bucket_items(), batch=1, epochs=2)
    assert plan.total_steps < single.total_steps
    events = read_events(run_dir)
    start = next(e for e in events if e["type"] == "start")
    assert start["processes"] == 2 and start["total"] == plan.total_steps
    assert start["steps_per_epoch"] == plan.steps_per_epoch
    kinds = [e["type"] for e in events]
    assert kinds.count("start") == 1 and kinds.count("resumed") == 1 and kinds[-1] == "done"
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert steps == list(range(1, plan.total_steps + 1))  # cancelled at 2, resumed from 2: no repeats
    assert sorted(p.name for p in (run_dir / "lora").iterdir()) == [
        "ddp-e001.safetensors",
        "ddp-e002.safetensors",
    ]
    info = read_run(run_dir)
    assert info.state == "done" and info.step == plan.total_steps
    assert json.loads((run_dir / "launch.json").read_text())["gpus"] == 2
    log = (run_dir / "train.log").read_text()
    assert "Traceback" not in log and "terminate called" not in log  # every process left cleanly
