"""One trainer per run folder, with real processes: two ``kiln resume RUN --detach`` started at
once train the run once (issue 20, item 5), and a read-only run folder is refused in one line
(item 8). The fast checks of the lock itself are in tests/test_run_reliability.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from kiln.engine.runs import layout as rundir
from kiln.engine.runs import runlock
from kiln.engine.runs.events import read_events, read_status
from kiln.engine.runs.folders import cancel_run, read_run, start_detached
from kiln.engine.runs.testhooks import HOLD_ENV
from kiln.engine.train.config import resolved_toml

from tests.train.test_runctl import environment, run_config, wait_for

pytestmark = pytest.mark.slow


def kiln_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != runlock.LOCK_FD_ENV}
    return {**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture
def cancelled_run(tiny_model: Path, train_dataset: Path, tmp_path: Path) -> Path:
    """A detached run cancelled at step 2 (a resume state saved there)."""
    config_file = tmp_path / "run.toml"
    config_file.write_text(resolved_toml(run_config(tiny_model, train_dataset, tmp_path / "runs")))
    flag = tmp_path / "at-2"
    with environment(OMP_NUM_THREADS="1", **{HOLD_ENV: f"2:{flag}"}):
        run_dir = start_detached(config_file, cpu=True)
    wait_for(flag.exists, "the run to reach step 2")
    cancel_run(run_dir)
    wait_for(lambda: read_run(run_dir).state != "running", "the run to stop")
    assert read_run(run_dir).state == "cancelled"
    wait_for(lambda: runlock.holder(run_dir) is None, "the cancelled run's process to exit")
    return run_dir


def test_two_detached_resumes_at_once_train_the_run_once(cancelled_run: Path, tmp_path: Path) -> None:
    run_dir = cancelled_run
    flag = tmp_path / "at-4"
    command = [sys.executable, "-m", "kiln.cli", "resume", str(run_dir), "--detach"]
    env = kiln_env(**{HOLD_ENV: f"4:{flag}"})
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    resumes = [subprocess.Popen(command, env=env, **pipes) for _ in range(2)]  # type: ignore[call-overload]
    outcomes = [(process.wait(timeout=300), *process.communicate()) for process in resumes]
    try:
        assert sorted(code for code, _, _ in outcomes) == [0, 1], outcomes
        _, _, refused = next(outcome for outcome in outcomes if outcome[0] == 1)
        assert refused.count("\n") == 1 and "Traceback" not in refused
        assert "being trained by process" in refused or "still running" in refused

        wait_for(flag.exists, "the resumed run to reach step 4")
        trainer = runlock.holder(run_dir)
        assert trainer and trainer == read_status(run_dir)["pid"] == int(flag.read_text())
        assert read_run(run_dir).state == "running"

        # A third trainer, started by hand on the folder, exits 2 before touching it.
        events = (run_dir / "events.jsonl").read_bytes()
        worker = subprocess.run(
            [sys.executable, "-m", "kiln.engine.runs.worker", str(run_dir), "--resume", "--cpu"],
            capture_output=True,
            text=True,
            env=kiln_env(),
            timeout=120,
        )
        assert worker.returncode == 2 and f"process {trainer}" in worker.stderr
        assert (run_dir / "events.jsonl").read_bytes() == events
        again = subprocess.run(command, env=kiln_env(), capture_output=True, text=True, timeout=120)
        assert again.returncode == 1 and again.stderr.count("\n") == 1

        cancel_run(run_dir)
        wait_for(lambda: read_run(run_dir).state != "running", "the resumed run to stop")
    finally:  # nothing may outlive the test
        for pid in {runlock.holder(run_dir), (read_status(run_dir) or {}).get("pid")}:
            if isinstance(pid, int) and pid > 0 and read_run(run_dir).state == "running":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    info = read_run(run_dir)
    assert info.state == "cancelled" and info.step == 4
    history = read_events(run_dir)
    kinds = [event["type"] for event in history]
    assert kinds.count("resumed") == 1 and "failed" not in kinds
    assert kinds.count("cancelled") == 2  # the first cancel, then this one: no FileNotFoundError
    steps = [event["step"] for event in history if event["type"] == "step"]
    assert steps == [1, 2, 3, 4]  # every step once
    wait_for(lambda: runlock.holder(run_dir) is None, "the trainer to exit and let go of the run")


@pytest.mark.skipif(shutil.which("setpriv") is None and os.geteuid() == 0, reason="needs a user without root")
def test_resume_of_a_read_only_run_folder_is_one_line(cancelled_run: Path) -> None:
    assert (cancelled_run / rundir.CANCEL_FILE).exists()  # what the resume used to fail on
    home = Path(tempfile.mkdtemp(prefix="kiln-ro-", dir="/tmp"))
    try:
        home.chmod(0o755)
        run_dir = Path(shutil.copytree(cancelled_run, home / cancelled_run.name))
        for path in [run_dir, *run_dir.rglob("*")]:
            mode = path.stat().st_mode
            path.chmod((mode | 0o444 | (0o111 if path.is_dir() else 0)) & ~0o222)
        command = [sys.executable, "-m", "kiln.cli", "resume", str(run_dir), "--detach"]
        if os.geteuid() == 0:  # root writes anywhere: try as nobody
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        env = kiln_env(HOME="/tmp")
        resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert resumed.returncode == 1, resumed.stderr
        assert resumed.stderr.count("\n") == 1 and "Traceback" not in resumed.stderr
        assert "read-only" in resumed.stderr and str(run_dir) in resumed.stderr
        assert read_run(run_dir).state == "cancelled"
    finally:
        for path in [home, *home.rglob("*")]:
            if path.is_dir():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
        shutil.rmtree(home, ignore_errors=True)
