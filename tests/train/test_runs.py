"""kiln.engine.runs.folders without training: what a run folder reads as, finding runs, cancel's refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kiln.engine.errors import RunError
from kiln.engine.runs import layout as rundir
from kiln.engine.runs.events import RUN_LAYOUT, EventWriter
from kiln.engine.runs.folders import (
    STALE_AFTER_S,
    RunInfo,
    cancel_run,
    list_runs,
    read_run,
    resolve_run,
)
from kiln.engine.runs.procinfo import HOST, process_alive, process_start


def make_run(folder: Path, name: str, **status: Any) -> Path:
    """A run folder with a config and a status; ``status=None`` leaves status.json out."""
    run_dir = folder / name
    run_dir.mkdir(parents=True)
    (run_dir / rundir.CONFIG_FILE).write_text("[output]\nname = 'x'\n", encoding="utf-8")
    if status.get("status", True) is not None:
        now = time.time()
        data = {
            "state": "running",
            "name": name.split("-")[-1],
            "run_dir": str(run_dir),
            "step": 5,
            "total": 10,
            "epoch": 1,
            "epochs": 2,
            "loss": 0.12,
            "it_s": 2.5,
            "eta_s": 2.0,
            "pid": os.getpid(),
            "started": now - 60,
            "updated": now,
            "error": None,
            "layout": RUN_LAYOUT,
            "host": HOST,
            "proc_start": process_start(os.getpid()),
        }
        data.update({k: v for k, v in status.items() if k != "status"})
        (run_dir / "status.json").write_text(json.dumps(data), encoding="utf-8")
    return run_dir


@pytest.fixture
def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_live_process_with_fresh_heartbeat_reads_running(tmp_path: Path) -> None:
    info = read_run(make_run(tmp_path, "20260101-100000-pot"))
    assert info == RunInfo(
        run_dir=tmp_path / "20260101-100000-pot",
        name="pot",
        state="running",
        step=5,
        total=10,
        epoch=1,
        epochs=2,
        loss=0.12,
        it_s=2.5,
        eta_s=2.0,
        started=info.started,
        updated=info.updated,
        pid=os.getpid(),
        error=None,
        readonly=False,
    )


def test_gone_process_without_final_event_reads_stale(tmp_path: Path, dead_pid: int) -> None:
    info = read_run(make_run(tmp_path, "run", pid=dead_pid, proc_start=None))
    assert info.state == "stale" and info.it_s is None and info.eta_s is None
    assert f"process {dead_pid} is gone" in info.error
    assert info.step == 5 and not info.readonly


def test_reused_pid_reads_stale(tmp_path: Path) -> None:
    # Our own pid is alive, but the recorded start time is another process's.
    start = process_start(os.getpid())
    assert start is not None
    info = read_run(make_run(tmp_path, "run", proc_start=start - 1))
    assert info.state == "stale"


def test_unreaped_child_counts_as_gone(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start(child.pid)
    deadline = time.time() + 20
    while process_alive(child.pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not process_alive(child.pid), "a zombie must not count as alive"
    assert read_run(make_run(tmp_path, "run", pid=child.pid, proc_start=start)).state == "stale"
    child.wait()


def test_silent_heartbeat_reads_stale_even_when_the_pid_lives(tmp_path: Path) -> None:
    old = time.time() - STALE_AFTER_S - 5
    assert read_run(make_run(tmp_path, "here", updated=old)).state == "stale"
    # On another host the pid means nothing: only the heartbeat counts.
    remote = make_run(tmp_path, "remote", host="elsewhere", pid=1, updated=time.time())
    assert read_run(remote).state == "running"
    silent = read_run(make_run(tmp_path, "silent", host="elsewhere", pid=1, updated=old))
    assert silent.state == "stale" and "on elsewhere" in silent.error


def test_final_states_stand_whatever_the_process(tmp_path: Path, dead_pid: int) -> None:
    for state in ("done", "failed", "cancelled"):
        info = read_run(make_run(tmp_path, state, state=state, pid=dead_pid, error="boom"))
        assert info.state == state and info.it_s is None


def test_event_writer_heartbeat_keeps_status_fresh(tmp_path: Path) -> None:
    beats = []
    writer = EventWriter(tmp_path / "run", name="n", heartbeat_s=0.1, on_beat=lambda: beats.append(1))
    try:
        first = json.loads((tmp_path / "run" / "status.json").read_text())["updated"]
        time.sleep(0.5)
        second = json.loads((tmp_path / "run" / "status.json").read_text())
        assert second["updated"] > first and len(beats) >= 2
        assert second["pid"] == os.getpid() and second["host"] == HOST
        assert second["proc_start"] == process_start(os.getpid()) and second["layout"] == RUN_LAYOUT
    finally:
        writer.close()
    (tmp_path / "run" / rundir.CONFIG_FILE).write_text("", encoding="utf-8")
    assert read_run(tmp_path / "run").state == "running"  # "starting" reads as running


def test_old_layout_status_is_listed_readonly(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "old", layout=None, state="done")
    info = read_run(run_dir)
    assert info.readonly and info.state == "done"
    with pytest.raises(RunError, match="another Kiln version"):
        cancel_run(run_dir)


def test_folder_without_status_is_a_run_that_never_started(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "20260101-100000-new", status=None)
    assert read_run(run_dir).state == "running"  # just made: the process is on its way
    old = time.time() - STALE_AFTER_S - 5
    os.utime(run_dir / rundir.CONFIG_FILE, (old, old))
    info = read_run(run_dir)
    assert info.state == "stale" and info.name == "new" and "never started" in info.error


def test_list_runs_is_newest_first_and_skips_other_folders(tmp_path: Path) -> None:
    now = time.time()
    make_run(tmp_path, "20260101-100000-a", started=now - 100, state="done")
    make_run(tmp_path, "20260102-100000-b", started=now - 10, state="failed")
    make_run(tmp_path, "20260101-120000-c", started=now - 50, state="cancelled")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    (tmp_path / "file.txt").write_text("x")
    runs = list_runs(tmp_path)
    assert [run.run_dir.name for run in runs] == [
        "20260102-100000-b",
        "20260101-120000-c",
        "20260101-100000-a",
    ]
    assert [run.state for run in runs] == ["failed", "cancelled", "done"]
    assert list_runs(tmp_path / "missing") == []


def test_resolve_run_takes_a_path_a_name_or_a_unique_prefix(tmp_path: Path) -> None:
    a = make_run(tmp_path, "20260101-100000-pot", state="done")
    make_run(tmp_path, "20260101-110000-pot", state="done")
    make_run(tmp_path, "20260102-090000-hill", state="done")
    assert resolve_run(str(a)) == a.resolve()
    assert resolve_run("20260101-100000-pot", tmp_path) == a.resolve()
    assert resolve_run("20260102", tmp_path).name == "20260102-090000-hill"
    assert resolve_run("hill", tmp_path).name == "20260102-090000-hill"
    with pytest.raises(RunError, match="matches 2 runs"):
        resolve_run("20260101", tmp_path)
    with pytest.raises(RunError, match="no run 'nope'"):
        resolve_run("nope", tmp_path)
    with pytest.raises(RunError, match="not a Kiln run folder"):
        resolve_run(str(tmp_path))


def test_cancel_refuses_finished_and_stale_runs_in_one_line(tmp_path: Path, dead_pid: int) -> None:
    done = make_run(tmp_path, "done", state="done", step=10)
    with pytest.raises(RunError) as finished:
        cancel_run(done)
    assert "already done (step 10/10): nothing to cancel" in str(finished.value)
    assert "\n" not in str(finished.value)
    stale = make_run(tmp_path, "stale", pid=dead_pid)
    with pytest.raises(RunError, match="kiln resume stale"):
        cancel_run(stale)
    assert not (stale / rundir.CANCEL_FILE).exists()


def test_cancel_signals_the_training_process_and_leaves_a_request(tmp_path: Path) -> None:
    flag = tmp_path / "got-term"
    code = (
        "import signal, sys, time, pathlib\n"
        f"flag = pathlib.Path({str(flag)!r})\n"
        "signal.signal(signal.SIGTERM, lambda *a: (flag.write_text('1'), sys.exit(0)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        run_dir = make_run(tmp_path, "live", pid=child.pid, proc_start=process_start(child.pid))
        cancel_run(run_dir)
        assert child.wait(timeout=20) == 0 and flag.read_text() == "1"
        assert (run_dir / rundir.CANCEL_FILE).is_file()
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            child.wait()


def test_cancel_of_a_multi_gpu_launcher_only_leaves_the_request(tmp_path: Path) -> None:
    # SIGTERM to accelerate's launcher would have it kill the workers 30 s later; the main
    # worker reads the request on its next heartbeat instead.
    run_dir = make_run(tmp_path, "launching", state="starting", launcher=True)
    cancel_run(run_dir)  # our own pid: a signal here would end the test run
    assert (run_dir / rundir.CANCEL_FILE).is_file()


def test_runs_api_and_commands_load_no_torch() -> None:
    # `kiln runs` and the TUI's runs screen list runs many times a second: no model code.
    code = (
        "import sys, kiln.engine.runs.folders, kiln.engine.runs.runner, kiln.engine.train.checkpoint\n"
        "import kiln.cli.runs\n"
        "from kiln.cli import build_parser; build_parser()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'diffusers', 'accelerate'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_family_of_the_start_event_stays_in_the_status_through_a_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "20260101-100000-xl"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text('[output]\nname = "xl"\n')
    writer = EventWriter(run_dir, name="xl", heartbeat_s=0)
    assert read_run(run_dir).family is None  # before the trainer has loaded the model
    writer.emit("start", total=10, family="sdxl")
    writer.emit("cancelled", step=3)
    writer.close()
    assert read_run(run_dir).family == "sdxl"
    resumed = EventWriter(run_dir, name="xl", heartbeat_s=0, resume=True)
    assert read_run(run_dir).family == "sdxl"  # kept until the resumed event says it again
    resumed.close()
