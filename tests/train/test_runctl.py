"""Run control with real processes: detached runs, cancel, SIGKILL (also inside a save), resume.

Three detached runs start together (module fixture) and wait at a chosen step through the
test hooks (kiln.engine.runs.testhooks), so each signal or kill lands at a known point whatever
the machine's speed. Each interrupted run is resumed and compared step by step (LR, loss, the
final LoRA) with the same config trained without interruption.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kiln.engine.errors import RunError
from kiln.engine.runs import layout as rundir
from kiln.engine.runs.control import controlled_trainer
from kiln.engine.runs.events import read_events, read_status
from kiln.engine.runs.folders import (
    cancel_run,
    check_resumable,
    list_runs,
    read_run,
    resume_run,
    start_detached,
)
from kiln.engine.runs.testhooks import HOLD_ENV, SAVE_PAUSE_ENV
from kiln.engine.train.checkpoint import saves
from kiln.engine.train.config import TrainConfig, config_from_mapping, resolved_toml
from safetensors.torch import load_file

from tests.train.test_cli_train import kiln


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def run_config(tiny_model: Path, dataset: Path, runs: Path) -> TrainConfig:
    """Two epochs, a cosine schedule (every step has its own LR), state saved every 2 steps."""
    return config_from_mapping(
        {
            "model": {"base": str(tiny_model)},
            "dataset": {
                "path": str(dataset),
                "resolution": 64,
                "min_bucket_reso": 32,
                "max_bucket_reso": 128,
                "bucket_reso_steps": 32,
                "shuffle_caption": True,
            },
            "network": {"rank": 4, "alpha": 2.0},
            "train": {
                "epochs": 2,
                "batch_size": 2,
                "precision": "fp32",
                "unet_lr": 1e-3,
                "scheduler": "cosine",
                "lr_warmup_steps": 2,
            },
            "save": {"precision": "fp32", "state_every_n_steps": 2},
            "output": {"dir": str(runs), "name": "ctl"},
        }
    )


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def config_file(tiny_model: Path, train_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ctl")
    path = folder / "run.toml"
    path.write_text(resolved_toml(run_config(tiny_model, train_dataset, folder / "runs")), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def detached(config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Three detached runs, started at once: held after step 3, after step 5, inside save 4."""
    flags = tmp_path_factory.mktemp("flags")
    hooks = {
        "cancel": {HOLD_ENV: f"3:{flags / 'cancel'}"},
        "kill": {HOLD_ENV: f"5:{flags / 'kill'}"},
        "killsave": {SAVE_PAUSE_ENV: f"4:{flags / 'killsave'}"},
    }
    started = {}
    for name, hook in hooks.items():
        with environment(OMP_NUM_THREADS="1", **hook):
            run_dir = start_detached(config_file, cpu=True)
        started[name] = (run_dir, Path(next(iter(hook.values())).partition(":")[2]))
    yield started
    for run_dir, _ in started.values():  # nothing may outlive the tests
        status = read_status(run_dir) or {}
        if read_run(run_dir).state == "running" and isinstance(status.get("pid"), int):
            with contextlib.suppress(ProcessLookupError):
                os.kill(status["pid"], signal.SIGKILL)


@pytest.fixture(scope="module")
def reference(detached, config_file: Path) -> dict:
    """The same config trained without interruption, here: LR and loss per step, the final LoRA."""
    from kiln.engine.train.config import load_config

    config = load_config(config_file)
    run_dir = rundir.create_run_dir(config)
    result = controlled_trainer(config, run_dir, cpu=True).run()
    assert result.state == "done", result.error
    steps = {e["step"]: e for e in read_events(run_dir) if e["type"] == "step"}
    return {"steps": steps, "total": result.step, "lora": load_file(str(result.lora))}


def resumed_part(run_dir: Path) -> tuple[dict, list[dict]]:
    """The last ``resumed`` event and the step events after it."""
    events = read_events(run_dir)
    index = max(i for i, e in enumerate(events) if e["type"] == "resumed")
    return events[index], [e for e in events[index:] if e["type"] == "step"]


def assert_matches_reference(run_dir: Path, reference: dict, first_step: int) -> None:
    resumed, steps = resumed_part(run_dir)
    assert resumed["step"] == first_step - 1 and resumed["total"] == reference["total"]
    assert [e["step"] for e in steps] == list(range(first_step, reference["total"] + 1))
    for event in steps:
        expected = reference["steps"][event["step"]]
        assert event["lr"] == expected["lr"] and event["lr_te"] == expected["lr_te"], event["step"]
        assert event["loss"] == pytest.approx(expected["loss"], rel=1e-4, abs=1e-6), event["step"]
    events = read_events(run_dir)
    assert events[-1]["type"] == "done" and events[-1]["step"] == reference["total"]
    lora = load_file(str(Path(events[-1]["lora"])))
    assert lora.keys() == reference["lora"].keys()
    for key, tensor in reference["lora"].items():
        assert (lora[key] - tensor).abs().max() < 1e-4, key
    info = read_run(run_dir)
    assert info.state == "done" and info.step == info.total == reference["total"]


@pytest.mark.slow
def test_cancel_stops_after_the_step_and_resume_matches_an_uninterrupted_run(
    detached, reference, config_file: Path
) -> None:
    run_dir, flag = detached["cancel"]
    wait_for(flag.exists, "the run to reach step 3")
    assert read_run(run_dir).state == "running"
    cancel_run(run_dir)
    wait_for(lambda: read_run(run_dir).state != "running", "the run to stop")
    info = read_run(run_dir)
    assert info.state == "cancelled" and info.step == 3  # mid-epoch: an epoch has ~9 steps
    last = read_events(run_dir)[-1]
    assert last["type"] == "cancelled" and Path(last["state"]).name == "step-000003"
    assert Path(last["lora"]).is_file()
    with pytest.raises(RunError, match="already cancelled"):
        cancel_run(run_dir)

    # An edited config is refused, naming the key, unless forced.
    config_path = run_dir / rundir.CONFIG_FILE
    original = config_path.read_text()
    config_path.write_text(original.replace("unet_lr = 0.001", "unet_lr = 0.002"))
    with pytest.raises(RunError, match=r"changed since the save at step 3: train\.unet_lr; .*--force"):
        check_resumable(run_dir)
    assert check_resumable(run_dir, force=True).name == "step-000003"
    config_path.write_text(original)

    assert resume_run(run_dir, detach=False) == run_dir
    assert_matches_reference(run_dir, reference, first_step=4)
    assert not (run_dir / rundir.CANCEL_FILE).exists()


@pytest.mark.slow
def test_sigkill_during_training_reads_stale_and_resumes_from_the_last_save(detached, reference) -> None:
    run_dir, flag = detached["kill"]
    wait_for(flag.exists, "the run to reach step 5")
    os.kill(read_status(run_dir)["pid"], signal.SIGKILL)
    wait_for(lambda: read_run(run_dir).state == "stale", "the run to read stale")
    info = read_run(run_dir)
    # status.json lags the events by up to a second on steps (it is throttled), never more.
    assert 1 <= info.step <= 5 and "gone without a final event" in info.error
    with pytest.raises(RunError, match="nothing to cancel"):
        cancel_run(run_dir)
    assert [p.name for p in saves(run_dir / rundir.STATE_FOLDER)] == ["step-000004", "step-000002"]
    resume_run(run_dir, detach=False)
    assert_matches_reference(run_dir, reference, first_step=5)
    # The saves go on and only the last two are kept.
    assert len(saves(run_dir / rundir.STATE_FOLDER)) == 2


@pytest.mark.slow
def test_sigkill_inside_a_save_resumes_from_the_previous_save(detached, reference) -> None:
    run_dir, flag = detached["killsave"]
    wait_for(flag.exists, "the run to pause inside the save of step 4")
    os.kill(read_status(run_dir)["pid"], signal.SIGKILL)
    state = run_dir / rundir.STATE_FOLDER
    wait_for(lambda: read_run(run_dir).state == "stale", "the run to read stale")
    assert [p.name for p in saves(state)] == ["step-000002"]
    assert [p.name.rpartition("-")[0] for p in state.glob("tmp-*")] == ["tmp-000004"]
    assert check_resumable(run_dir).name == "step-000002"
    resume_run(run_dir, detach=False)
    resumed, _ = resumed_part(run_dir)
    assert resumed["save"] == "step-000002"
    assert_matches_reference(run_dir, reference, first_step=3)
    assert not list(state.glob("tmp-*"))


@pytest.mark.slow
def test_detached_run_outlives_its_launcher_and_refuses_resume_when_done(
    config_file: Path, tmp_path: Path
) -> None:
    flag = tmp_path / "held"
    runs = config_file.parent / "runs"
    launched = kiln(
        "train",
        str(config_file),
        "--detach",
        "--cpu",
        "--set",
        "train.epochs=1",
        env={HOLD_ENV: f"2:{flag}"},
    )
    assert launched.returncode == 0, launched.stderr
    run_dir = Path(launched.stdout.strip().splitlines()[-1])
    assert run_dir.parent == runs and (run_dir / rundir.CONFIG_FILE).is_file()
    # The launcher has exited; the run goes on in its own session, reading nothing from us.
    wait_for(flag.exists, "the detached run to reach step 2")
    pid = read_status(run_dir)["pid"]
    assert os.getsid(pid) == pid != os.getsid(0)
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert Path(os.readlink(f"/proc/{pid}/fd/1")) == run_dir / rundir.LOG_FILE
    assert read_run(run_dir).state == "running"
    flag.unlink()
    wait_for(lambda: read_run(run_dir).state != "running", "the detached run to finish")
    info = read_run(run_dir)
    assert info.state == "done" and info.step == info.total > 2
    assert json.loads((run_dir / rundir.LAUNCH_FILE).read_text())["cpu"] is True
    assert "loading" in (run_dir / rundir.LOG_FILE).read_text()

    listed = kiln("runs", "--runs", str(runs), "--json")
    assert listed.returncode == 0, listed.stderr
    entry = next(r for r in json.loads(listed.stdout)["runs"] if r["run_dir"] == str(run_dir))
    assert entry["state"] == "done" and entry["readonly"] is False
    assert list_runs(runs)[0].run_dir == run_dir  # newest first

    resumed = kiln("resume", run_dir.name, "--runs", str(runs))
    assert resumed.returncode == 1 and resumed.stderr.count("\n") == 1
    assert f"finished at step {info.step}/{info.total}: nothing to resume" in resumed.stderr
    cancelled = kiln("cancel", str(run_dir))
    assert cancelled.returncode == 1 and "already done" in cancelled.stderr
    unknown = kiln("cancel", "no-such-run", "--runs", str(runs))
    assert unknown.returncode == 1 and "no run 'no-such-run'" in unknown.stderr
    unknown = kiln("resume", "no-such-run", "--runs", str(runs))
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1


@pytest.mark.slow
def test_second_signal_stops_a_foreground_run_at_once_keeping_the_last_save(
    config_file: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    flag = tmp_path / "in-save"
    env = {**os.environ, "OMP_NUM_THREADS": "1", SAVE_PAUSE_ENV: f"4:{flag}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "kiln.cli", "train", str(config_file), "--cpu", "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(flag.exists, "the run to pause inside the save of step 4")
        process.send_signal(signal.SIGTERM)  # stop after the step: but the save holds the loop
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)  # again within 5 s: at once
        signalled = time.monotonic()
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert time.monotonic() - signalled < 8  # not the 10 s grace: the main thread answered
    assert process.returncode == 130, err  # cancelled: the shell's code for an interrupt
    assert "stopping at once" in err
    run_dir = Path(out.strip().splitlines()[-1])
    last = read_events(run_dir)[-1]
    assert last["type"] == "cancelled" and last["reason"] == "interrupted" and last["step"] == 4
    state = run_dir / rundir.STATE_FOLDER
    assert [p.name for p in saves(state)] == ["step-000002"]  # the interrupted save never landed
    assert check_resumable(run_dir).name == "step-000002"


def test_cancel_request_file_alone_stops_the_run_on_its_next_heartbeat(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What reaches a run on another host, or a multi-GPU run before its main process speaks:
    # no signal, only the request file left by `kiln cancel`.
    import threading

    from kiln.engine.train.config import load_config

    flag = tmp_path / "held"
    monkeypatch.setenv(HOLD_ENV, f"2:{flag}")
    config = load_config(config_file)
    run_dir = rundir.create_run_dir(config)

    def request() -> None:
        wait_for(flag.exists, "the run to reach step 2", timeout=120)
        (run_dir / rundir.CANCEL_FILE).write_text("now\n")

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    result = controlled_trainer(config, run_dir, cpu=True).run()
    thread.join()
    assert result.state == "cancelled" and result.step == 2
    # The run closed its event writer: no heartbeat goes on rewriting status.json.
    assert not [t for t in threading.enumerate() if t.name == "kiln-heartbeat"]
    assert Path(read_events(run_dir)[-1]["state"]).name == "step-000002"
