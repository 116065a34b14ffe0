"""Issue 14 items 6 and 7: exit codes a script can trust, and runs inside sweep folders in the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kiln.cli import main
from kiln.engine.runs.events import read_events
from kiln.engine.runs.testhooks import HOLD_ENV
from kiln.engine.train.config import resolved_toml

from tests.runfolders import write_run, write_sweep
from tests.train.test_runctl import run_config


@pytest.mark.slow
def test_ctrl_c_on_a_foreground_run_exits_130(tiny_model: Path, train_dataset: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(resolved_toml(run_config(tiny_model, train_dataset, tmp_path / "runs")))
    flag = tmp_path / "held"
    env = {**os.environ, "OMP_NUM_THREADS": "1", HOLD_ENV: f"2:{flag}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "kiln.cli", "train", str(config), "--cpu", "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not flag.exists():
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    run_dir = Path(out.strip().splitlines()[-1])
    assert read_events(run_dir)[-1]["type"] == "cancelled"
    # kiln watch of that run exits with the run's own code.
    assert main(["watch", str(run_dir), "--interval", "0.05"]) == 130


def test_watch_exit_codes_follow_the_run(tmp_path: Path) -> None:
    assert main(["watch", str(write_run(tmp_path, "ok")), "--interval", "0.05"]) == 0
    failed = write_run(tmp_path, "bad", stamp="20260301-150000", state="failed")
    assert main(["watch", str(failed), "--interval", "0.05"]) == 1
    cancelled = write_run(tmp_path, "stop", stamp="20260301-160000", state="cancelled")
    assert main(["watch", str(cancelled), "--interval", "0.05"]) == 130


def test_train_help_documents_the_exit_codes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kiln.cli", "train", "--help"], capture_output=True, text=True, check=True
    )
    text = result.stdout
    assert "exit codes:" in text
    for code in ("0 ", "1 ", "2 ", "130 "):
        assert f"\n  {code}" in text, code


def test_runs_and_watch_see_the_runs_inside_sweep_folders(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    write_run(tmp_path, "plain")
    sweep = write_sweep(
        tmp_path, "lr", [({"train.unet_lr": 1e-4}, "done"), ({"train.unet_lr": 3e-4}, "failed")]
    )
    assert main(["runs", "--runs", str(tmp_path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["runs"]
    assert len(listed) == 3
    assert sorted(entry["sweep"] or "" for entry in listed) == ["", sweep.name, sweep.name]
    assert main(["runs", "--runs", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert f"{sweep.name}/20260303-090002-lr-02" in table and "failed" in table
    # kiln watch NAME finds a sweep's run by its folder name, and by sweep/name.
    assert main(["watch", "20260303-090002-lr-02", "--runs", str(tmp_path), "--once"]) == 0
    assert "failed" in capsys.readouterr().out
    assert main(["watch", f"{sweep.name}/20260303-090001-lr-01", "--runs", str(tmp_path), "--once"]) == 0
    assert main(["watch", "20260303-090002-lr-02", "--runs", str(tmp_path), "--interval", "0.05"]) == 1
