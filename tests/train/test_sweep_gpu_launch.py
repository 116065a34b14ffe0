"""A sweep job's GPU reaches its training process: a real detached launch (the training
command swapped for one that writes its environment), ``launch.json``, and the resume."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from kiln.engine.runs import runner
from kiln.engine.runs.folders import relaunch_env, start_detached
from kiln.engine.train.config import resolved_toml

from tests.train.test_runctl import run_config


def test_a_detached_launch_hands_its_process_the_gpu_and_records_it(
    tmp_path: Path, tiny_model: Path, train_dataset: Path, monkeypatch
) -> None:
    seen = tmp_path / "env.json"
    dump = f"import json, os; open({str(seen)!r}, 'w').write(json.dumps(dict(os.environ)))"
    monkeypatch.setattr(runner, "worker_command", lambda run_dir, **_: [sys.executable, "-c", dump])
    config_file = tmp_path / "run.toml"
    config_file.write_text(resolved_toml(run_config(tiny_model, train_dataset, tmp_path / "runs")))
    run_dir = start_detached(config_file, cpu=True, env={"CUDA_VISIBLE_DEVICES": "3"})
    deadline = time.monotonic() + 60
    while not seen.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(seen.read_text())["CUDA_VISIBLE_DEVICES"] == "3"
    launch = json.loads((run_dir / "launch.json").read_text())
    assert launch["env"] == {"CUDA_VISIBLE_DEVICES": "3"}
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert relaunch_env(launch) == {"CUDA_VISIBLE_DEVICES": "3"}  # a resume goes back to its GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    assert relaunch_env(launch) == {}  # unless the resuming shell chose one
