"""Launching training: a detached process in its own session, N processes with accelerate, or here.

``kiln train CONFIG --detach`` makes the run folder first, starts ``python -m
kiln.engine.runs.worker RUN_DIR`` in a new process session (``setsid``: closing the terminal,
tmux pane or SSH connection sends it nothing) with stdin from ``/dev/null`` and its output
appended to the run's ``train.log``, and returns. With ``--gpus N`` the worker runs under
``accelerate launch`` (one process per GPU). The child is started with this interpreter, so it
imports the same installed ``kiln`` package. Nothing here imports torch until a run trains in this process.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kiln.engine.errors import KilnError, UsageError
from kiln.engine.fsutil import atomic_write_text
from kiln.engine.runs import layout as rundir
from kiln.engine.runs import runlock
from kiln.engine.runs.events import EVENTS_FILE, RUN_LAYOUT, STATUS_FILE, read_status
from kiln.engine.runs.procinfo import HOST, process_start
from kiln.engine.train.config import MIXED_PRECISION, TrainConfig, load_config

Listener = Callable[[dict[str, Any]], None]
FOLLOW_POLL_S = 0.25


def child_env() -> dict[str, str]:
    """The environment of a training process: ours, unbuffered and with quiet libraries.

    The child runs ``sys.executable -m kiln.engine.runs.worker``: the same interpreter finds the
    same installed ``kiln`` package (a wheel or an editable install), so no ``PYTHONPATH`` is
    needed.
    """
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # train.log shows output as it happens
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return env


def new_run_dir(
    config: TrainConfig, gpus: int = 1, cpu: bool = False, warn: Callable[[str], None] | None = None
) -> Path:
    """Check what a run needs (model, dataset, GPUs, device, memory), then make its run folder.

    A bad path, GPU count, fp16 on a CPU or a run too big for the machine fails here, before
    a run folder exists for it; ``warn`` hears of a run close to the memory limit.
    """
    from kiln.engine.models.loading import model_source
    from kiln.engine.runs.preflight import check_run
    from kiln.engine.train.data import training_set

    rundir.check_runs_folder(rundir.runs_folder(config))
    check_gpus(gpus, cpu)
    model_source(config.model.base, config.model.allow_pickle)
    check_run(config, cpu=cpu, gpus=gpus, warn=warn)
    training_set(config.dataset)
    return rundir.create_run_dir(config)


def check_gpus(gpus: int, cpu: bool) -> None:
    """Refuse more GPUs than the machine has (a CPU run may use any number of processes)."""
    if gpus < 1:
        raise UsageError(f"--gpus {gpus}: must be at least 1")
    if gpus == 1 or cpu:
        return
    import torch

    present = torch.cuda.device_count()
    if present < gpus:
        raise UsageError(
            f"--gpus {gpus}: this machine has {present} GPU(s); use --gpus {max(present, 1)}"
            + (" or --cpu" if present < 2 else "")
        )


def worker_command(run_dir: Path, *, resume: bool, force: bool, gpus: int, cpu: bool) -> list[str]:
    """The command line of a run's training process(es)."""
    flags = [str(run_dir)] + (["--resume"] if resume else []) + (["--force"] if force else [])
    flags += ["--cpu"] if cpu else []
    if gpus == 1:
        return [sys.executable, "-m", "kiln.engine.runs.worker", *flags]
    precision = load_config(Path(run_dir) / rundir.CONFIG_FILE).train.precision
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        # --multi_gpu picks torchrun's launcher, which starts N processes even on a CPU
        # (the workers' Accelerator(cpu=True) then uses gloo); --cpu here would start one.
        "--multi_gpu",
        "--num_processes",
        str(gpus),
        "--num_machines",
        "1",
        "--mixed_precision",
        MIXED_PRECISION[precision],
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        "-m",
        "kiln.engine.runs.worker",
        *flags,
    ]


def free_port() -> int:
    """A TCP port free right now on this machine, for the processes' rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(
    run_dir: Path,
    *,
    resume: bool = False,
    force: bool = False,
    gpus: int = 1,
    cpu: bool = False,
    lock_fd: int | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen:
    """Start the run's training process(es) in a new session and return without waiting.

    Takes the run's lock (:mod:`kiln.engine.runs.runlock`) unless the caller holds it already
    (``lock_fd``, closed here either way) and hands it to the new process, which keeps it
    for its life: a second launch is refused before it touches the run. Writes
    ``launch.json`` (so a resume relaunches alike) and a ``starting`` status naming the new
    process, so the run reads as running from this moment on.
    ``env`` adds to the child's environment (a sweep's ``CUDA_VISIBLE_DEVICES``) and is
    recorded in ``launch.json`` too.

    Raises:
        RunBusy: Another process trains the run.
    """
    run_dir = Path(run_dir).resolve()
    if lock_fd is None:
        lock_fd = runlock.acquire(run_dir)
    try:
        (run_dir / rundir.CANCEL_FILE).unlink(missing_ok=True)
        command = worker_command(run_dir, resume=resume, force=force, gpus=gpus, cpu=cpu)
        child = child_env()
        child.update(env or {})
        child[runlock.LOCK_FD_ENV] = str(lock_fd)
        with open(run_dir / rundir.LOG_FILE, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            verb = "resuming" if resume else "starting"
            log.write(f"{stamp} kiln: {verb}: {shlex.join(command)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=run_dir,
                env=child,
                start_new_session=True,
                close_fds=True,
                pass_fds=(lock_fd,),
            )
        runlock.mark(lock_fd, process.pid)
    finally:
        os.close(lock_fd)  # the child's copy holds the lock now
    now = time.time()
    record_launch(run_dir, gpus=gpus, cpu=cpu, pid=process.pid, command=command, env=env)
    status = read_status(run_dir) or {}
    config = load_config(run_dir / rundir.CONFIG_FILE)
    status.update(
        {
            "state": "starting",
            "name": status.get("name") or config.output.name,
            "run_dir": str(run_dir),
            "pid": process.pid,
            "started": status.get("started", round(now, 3)) if resume else round(now, 3),
            "updated": round(now, 3),
            "error": None,
            "it_s": None,
            "eta_s": None,
            "layout": RUN_LAYOUT,
            "host": HOST,
            "proc_start": process_start(process.pid),
            # The pid is accelerate's launcher until the main worker writes its own.
            "launcher": gpus > 1,
        }
    )
    for key in ("step", "total", "epoch", "epochs", "loss"):
        status.setdefault(key, None if key == "loss" else 0)
    atomic_write_text(run_dir / STATUS_FILE, json.dumps(status, indent=2, default=str) + "\n")
    return process


def record_launch(
    run_dir: Path,
    *,
    gpus: int,
    cpu: bool,
    pid: int,
    command: list[str],
    env: Mapping[str, str] | None = None,
) -> None:
    """Write ``launch.json``: how the run's process was started, so a resume starts it alike."""
    launch = {
        "layout": RUN_LAYOUT,
        "gpus": gpus,
        "cpu": cpu,
        "env": dict(env or {}),
        "pid": pid,
        "host": HOST,
        "launched": round(time.time(), 3),
        "command": command,
    }
    atomic_write_text(Path(run_dir) / rundir.LAUNCH_FILE, json.dumps(launch, indent=2) + "\n")


def train_here(
    run_dir: Path,
    *,
    resume: bool = False,
    force: bool = False,
    cpu: bool = False,
    listeners: list[Listener] | None = None,
    on_message: Callable[[str], None] | None = None,
):
    """Train the run in this process (the foreground ``kiln train``): SIGINT/SIGTERM stop it
    after the current step, a second one within a few seconds stops it at once.

    Returns the trainer's :class:`~kiln.engine.train.loop.RunResult`.
    """
    from kiln.engine.runs.control import controlled_trainer
    from kiln.engine.runs.stopping import StopSignals

    run_dir = Path(run_dir)
    config = load_config(run_dir / rundir.CONFIG_FILE)
    lock_fd = runlock.acquire(run_dir)  # one trainer per run folder, for as long as this one trains
    try:
        (run_dir / rundir.CANCEL_FILE).unlink(missing_ok=True)
        record_launch(run_dir, gpus=1, cpu=cpu, pid=os.getpid(), command=[sys.executable, *sys.argv])
        trainer = controlled_trainer(
            config, run_dir, listeners=listeners, cpu=cpu, resume=resume, force=force
        )
        signals = StopSignals(trainer.request_stop, on_message=on_message, on_hard_exit=trainer.emit_aborted)
        with signals:
            return trainer.run()
    finally:
        os.close(lock_fd)


def follow(
    run_dir: Path,
    process: subprocess.Popen,
    listeners: list[Listener] | None = None,
    on_message: Callable[[str], None] | None = None,
    offset: int = 0,
) -> str:
    """Wait for a spawned run, passing each new event to ``listeners``; returns its final state.

    SIGINT and SIGTERM received meanwhile are passed on to the run (as ``kiln cancel``
    would), so Ctrl+C on a foreground multi-GPU run stops it after the step, and twice stops it
    at once.
    """
    from kiln.engine.runs.folders import cancel_run, read_run

    run_dir = Path(run_dir)

    def forward(signum: int, frame: object) -> None:
        try:
            cancel_run(run_dir)
        except KilnError:
            return
        if on_message is not None:
            on_message("stopping after the current step (again within 5 s: at once)")

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        path = run_dir / EVENTS_FILE
        while True:
            ended = process.poll() is not None
            offset = _pass_events(path, offset, listeners or [])
            if ended:
                break
            time.sleep(FOLLOW_POLL_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return read_run(run_dir).state


def _pass_events(path: Path, offset: int, listeners: list[Listener]) -> int:
    """Hand complete new lines of ``events.jsonl`` to the listeners; returns the new offset."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return offset
    end = data.rfind(b"\n")
    if end < 0:
        return offset
    for line in data[: end + 1].splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        for listener in listeners:
            listener(event)
    return offset + end + 1


def events_size(run_dir: Path) -> int:
    """The current length of ``events.jsonl`` (follow a resumed run from here)."""
    try:
        return (Path(run_dir) / EVENTS_FILE).stat().st_size
    except FileNotFoundError:
        return 0
