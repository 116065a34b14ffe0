"""Runs on disk: what each run folder says about itself, and the actions on a run.

This is the API the CLI (``kiln runs``, ``kiln cancel``, ``kiln resume``) and the TUI use.
A run is a folder written by the training process (see :mod:`kiln.engine.runs.layout`); its
``status.json`` carries the pid, host and start time of the process and a heartbeat
(``updated``, rewritten every few seconds). A run whose status says it is running but whose
process is gone, or whose heartbeat stopped, is ``stale``: killed, crashed or lost in a
reboot, and resumable from its last save.

Nothing here imports torch: listing runs must stay instant.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.engine.errors import RunError
from kiln.engine.runs import layout as rundir
from kiln.engine.runs import runlock
from kiln.engine.runs.events import EVENTS_FILE, RUN_LAYOUT, STATUS_FILE, read_status
from kiln.engine.runs.procinfo import HOST, process_alive

# The states a RunInfo reports. A run still loading its model counts as running (step 0).
RUN_STATES = ("running", "stale", "done", "failed", "cancelled")
FINAL_STATES = ("done", "failed", "cancelled")
# A heartbeat older than this means the process is stuck or gone (it beats every 2 s).
STALE_AFTER_S = 30.0
# Before the trainer's first heartbeat (launcher and imports), a run on another host is
# given this long; on this host the launcher's pid answers instead.
STARTING_GRACE_S = 300.0
# How long a resume waits for an ended run's process to exit and let go of the run folder.
EXITING_WAIT_S = 60.0
_STAMP = re.compile(r"^(\d{8}-\d{6})-")


@dataclass(frozen=True)
class RunInfo:
    """One run as its folder describes it.

    Attributes:
        run_dir: The run folder.
        name: The run's name (``output.name``).
        state: One of :data:`RUN_STATES`: ``running`` (also while loading), ``stale`` (the
            process is gone or silent without a final event), ``done``, ``failed``,
            ``cancelled``.
        step: Optimizer steps done.
        total: Steps the run will take (0 until the trainer has planned them).
        epoch: The epoch in progress (or the last one, once finished).
        epochs: Epochs planned.
        loss: The last step's loss.
        it_s: Steps per second lately (None unless running).
        eta_s: Seconds left (None unless running or done).
        started: When the run first started (unix time).
        updated: The last heartbeat or status change (unix time).
        pid: The training process (the main one of a multi-GPU run).
        error: Why it failed, or why it is stale.
        readonly: The folder comes from another or older Kiln layout: listed, never
            cancelled or resumed.
        sampling: ``"k/n"`` while a running run renders its k-th of n samples, else None.
        family: The base model's family (``sd15``, ``sdxl``) once the trainer has loaded it;
            None before, and for runs of Kiln versions without SDXL (all SD 1.5).
        network: The network type (``lora``, ``loha``...), from the same event.
        peak_mb: The training process's peak memory so far, in MiB (None before the first
            step's report, and for runs of Kiln versions that did not record it).
        memory: What ``peak_mb`` measures: ``vram`` (CUDA) or ``ram`` (a CPU run).
        estimate_mb: The memory the trainer estimated before the first step (the start
            event's ``memory_estimate``), in MiB; None when not recorded.
    """

    run_dir: Path
    name: str
    state: str
    step: int
    total: int
    epoch: int
    epochs: int
    loss: float | None
    it_s: float | None
    eta_s: float | None
    started: float | None
    updated: float | None
    pid: int | None
    error: str | None
    readonly: bool
    sampling: str | None = None
    family: str | None = None
    network: str | None = None
    peak_mb: float | None = None
    memory: str | None = None
    estimate_mb: float | None = None


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` looks like a run folder (any of the files a run writes first)."""
    path = Path(path)
    return path.is_dir() and any(
        (path / name).is_file() for name in (STATUS_FILE, rundir.CONFIG_FILE, EVENTS_FILE)
    )


def read_run(run_dir: Path) -> RunInfo:
    """What a run folder says about its run, with the liveness of its process checked.

    Raises:
        RunError: ``run_dir`` is not a run folder.
    """
    run_dir = Path(run_dir)
    if not is_run_folder(run_dir):
        raise RunError(f"{run_dir}: not a Kiln run folder (no status.json, config.toml or events.jsonl)")
    status = _read_status_settled(run_dir)
    now = time.time()
    if status is None:
        if (run_dir / STATUS_FILE).exists():
            return _unreadable_status_run(run_dir, now)
        return _unstarted_run(run_dir, now)
    readonly = status.get("layout") != RUN_LAYOUT or not (run_dir / rundir.CONFIG_FILE).is_file()
    recorded = status.get("state")
    error = _text(status.get("error"))
    it_s, eta_s = _number(status.get("it_s")), _number(status.get("eta_s"))
    if recorded in FINAL_STATES:
        state = recorded
        it_s = None
    else:
        gone = _gone_reason(status, now)
        if gone is not None and runlock.holder(run_dir) is not None:
            gone = None  # the status names another process, but a trainer holds the run
        if gone is None:
            state = "running"
        else:
            state, error, it_s, eta_s = "stale", gone, None, None
    return RunInfo(
        run_dir=run_dir,
        name=_text(status.get("name")) or _name_from_folder(run_dir),
        state=state,
        step=_int(status.get("step")),
        total=_int(status.get("total")),
        epoch=_int(status.get("epoch")),
        epochs=_int(status.get("epochs")),
        loss=_number(status.get("loss")),
        it_s=it_s,
        eta_s=eta_s,
        started=_number(status.get("started")),
        updated=_number(status.get("updated")),
        pid=status.get("pid") if isinstance(status.get("pid"), int) else None,
        error=error,
        readonly=readonly,
        sampling=_text(status.get("sampling")) if state == "running" else None,
        family=_text(status.get("family")) or None,
        network=_text(status.get("network")) or None,
        peak_mb=_number(status.get("peak_mb")),
        memory=_text(status.get("memory")) or _estimate(status, "memory"),
        estimate_mb=_number(_estimate(status, "total_mb")),
    )


def _estimate(status: dict, key: str) -> Any:
    """One figure of the status's ``memory_estimate`` (None when absent or malformed)."""
    estimate = status.get("memory_estimate")
    return estimate.get(key) if isinstance(estimate, dict) else None


def list_runs(folder: Path) -> list[RunInfo]:
    """Every run in ``folder``, newest first; folders that are not runs are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    runs = []
    for child in folder.iterdir():
        if not is_run_folder(child):
            continue
        with contextlib.suppress(RunError, OSError):
            runs.append(read_run(child))
    return sorted(runs, key=_newest_first_key, reverse=True)


def list_runs_and_sweeps(folder: Path) -> list[tuple[RunInfo, str | None]]:
    """Every run in ``folder`` and in the sweep folders inside it (as the TUI lists them), newest
    first: ``(RunInfo, sweep folder name or None)`` pairs."""
    found: list[tuple[RunInfo, str | None]] = [(info, None) for info in list_runs(folder)]
    for sweep_dir in _sweep_dirs(Path(folder)):
        found.extend((info, sweep_dir.name) for info in list_runs(sweep_dir))
    return sorted(found, key=lambda pair: _newest_first_key(pair[0]), reverse=True)


def _sweep_dirs(folder: Path) -> list[Path]:
    """The sweep folders (holding ``sweep.json``) directly inside ``folder``."""
    if not folder.is_dir():
        return []
    with contextlib.suppress(OSError):
        return sorted(child for child in folder.iterdir() if (child / "sweep.json").is_file())
    return []


def default_runs_dir() -> Path:
    """Where ``kiln runs`` looks without ``--runs``: ``./runs`` when it exists, else the current folder."""
    here = Path.cwd()
    return here / "runs" if (here / "runs").is_dir() else here


def resolve_run(ref: str, runs_dir: Path | None = None) -> Path:
    """The run folder ``ref`` names: a path to a run folder, or a run's folder name in ``runs_dir``.

    A unique prefix of a folder name is enough (``20260301-0912`` or the whole name).

    Raises:
        RunError: Nothing or more than one run matches.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        if is_run_folder(path):
            return path.resolve()
        raise RunError(f"{path}: not a Kiln run folder (no status.json, config.toml or events.jsonl)")
    folder = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if os.sep in ref or "/" in ref:
        if is_run_folder(folder / ref):  # sweep-.../RUN, as `kiln runs` lists it
            return (folder / ref).resolve()
        raise RunError(f"{ref}: no such run folder")
    children = folder.iterdir() if folder.is_dir() else ()
    # Runs inside sweep folders count too, by their own folder name.
    places = {child.name: child for child in children if is_run_folder(child)}
    for sweep_dir in _sweep_dirs(folder):
        for child in sweep_dir.iterdir():
            if is_run_folder(child):
                places.setdefault(child.name, child)
    names = sorted(places)
    if ref in names:
        return places[ref].resolve()
    matches = [name for name in names if name.startswith(ref)] or [name for name in names if ref in name]
    if len(matches) == 1:
        return places[matches[0]].resolve()
    if matches:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise RunError(f"{ref!r} matches {len(matches)} runs in {folder} ({shown}); give the full name")
    raise RunError(f"no run {ref!r} in {folder}; `kiln runs --runs DIR` lists the runs of another folder")


def cancel_run(run_dir: Path) -> None:
    """Ask a running run to stop after its current step, save a LoRA and its resume state.

    Leaves a cancel request in the run folder (the trainer checks it every heartbeat, also
    across machines) and sends SIGTERM to the training process when it runs here. Returns
    at once; the run ends with a ``cancelled`` event. A second cancel within a few seconds
    stops the run at once (the last complete save stays intact).

    Raises:
        RunError: The run is finished, stale, read-only, or not a run.
    """
    run_dir = Path(run_dir)
    info = read_run(run_dir)
    if info.readonly:
        raise RunError(f"{run_dir}: written by another Kiln version; cancel it with that version")
    if info.state in FINAL_STATES:
        raise RunError(
            f"{run_dir.name} is already {info.state} (step {info.step}/{info.total}): nothing to cancel"
        )
    if info.state == "stale":
        raise RunError(
            f"{run_dir.name} is not running ({info.error}); nothing to cancel, "
            f"`kiln resume {run_dir.name}` continues it"
        )
    (run_dir / rundir.CANCEL_FILE).write_text(f"{time.time():.3f}\n", encoding="utf-8")
    status = read_status(run_dir) or {}
    pid = status.get("pid")
    # A multi-GPU launcher forwards SIGTERM to every worker and kills them 30 s later; the
    # request file reaches the main worker instead, and it stops all of them together.
    if status.get("launcher") or status.get("host", HOST) != HOST or not isinstance(pid, int):
        return
    if process_alive(pid, status.get("proc_start")):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def start_detached(
    config_path: Path,
    *,
    gpus: int = 1,
    overrides: Sequence[str] = (),
    cpu: bool = False,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Start a training run in its own process session and return its run folder at once.

    The run survives the terminal, tmux pane or SSH connection that started it; its output
    goes to ``train.log``. The config is checked (and the model and dataset found) before
    the run folder is made, so a bad config leaves nothing behind.

    Args:
        config_path: The TOML config.
        gpus: Training processes (one per GPU); more than one launches with accelerate.
        overrides: ``KEY=VALUE`` strings, as ``kiln train --set`` takes them.
        cpu: Train on the CPU even when a GPU is present.
        env: Environment additions for the training process (a sweep's
            ``CUDA_VISIBLE_DEVICES``); they are kept in ``launch.json`` so a resume uses the
            same device.
    """
    from kiln.engine.runs import runner
    from kiln.engine.train.config import load_config, parse_override, require_paths

    parsed = dict(parse_override(text) for text in overrides)
    config = load_config(config_path, parsed)
    require_paths(config, str(config_path))
    run_dir = runner.new_run_dir(config)
    runner.spawn(run_dir, gpus=gpus, cpu=cpu, env=env)
    return run_dir


def resume_run(run_dir: Path, *, detach: bool, force: bool = False) -> Path:
    """Continue a cancelled, failed or stale run from its last complete save.

    Same total steps, same LR schedule, the data order continuing where it stopped; events
    append to the same ``events.jsonl`` after a ``resumed`` event. With ``detach`` the run
    goes on in its own process session and this returns at once; without, it trains here
    (quietly) and returns when the run ends.

    Raises:
        RunError: The run is running, finished, read-only, has no complete save, or its
            config changed since the save (unless ``force``).
    """
    from kiln.engine.runs import runner

    run_dir = Path(run_dir)
    check_resumable(run_dir, force=force)
    launch = read_launch(run_dir)
    gpus, cpu = int(launch.get("gpus", 1)), bool(launch.get("cpu", False))
    if detach or gpus > 1:
        env = relaunch_env(launch)
        process = runner.spawn(run_dir, resume=True, force=force, gpus=gpus, cpu=cpu, env=env)
        if not detach:
            process.wait()
        return run_dir
    runner.train_here(run_dir, resume=True, force=force, cpu=cpu)
    return run_dir


def check_resumable(run_dir: Path, force: bool = False) -> Path:
    """The save a resume would start from, after every check a resume needs.

    Raises:
        RunError: Running, finished, read-only, no complete save, or a changed config.
    """
    from kiln.engine.train import checkpoint

    run_dir = Path(run_dir)
    info = read_run(run_dir)
    name = run_dir.name
    if info.readonly:
        raise RunError(f"{run_dir}: written by another Kiln version; it cannot be resumed by this one")
    if info.state == "running":
        raise RunError(f"{name} is still running (pid {info.pid}); `kiln cancel {name}` stops it first")
    if info.state == "done":
        raise RunError(
            f"{name} finished at step {info.step}/{info.total}: nothing to resume "
            f"(its LoRA files are in {run_dir / rundir.LORA_FOLDER})"
        )
    # A run that wrote its final event may still hold its lock while its process exits.
    deadline = time.monotonic() + (EXITING_WAIT_S if info.state in FINAL_STATES else 0.0)
    trainer = runlock.holder(run_dir)
    while trainer is not None and time.monotonic() < deadline:
        time.sleep(0.1)
        trainer = runlock.holder(run_dir)
    if trainer is not None:
        who = f"process {trainer}" if trainer else "another process"
        raise runlock.RunBusy(
            f"{name} is being trained by {who}; one trainer per run folder (`kiln cancel {name}` stops it)"
        )
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunError(f"{run_dir}: the run folder is read-only; make it writable to resume the run")
    save, skipped = checkpoint.latest_complete(run_dir / rundir.STATE_FOLDER)
    if save is None:
        why = f" ({'; '.join(f'{path.name}: {reason}' for path, reason in skipped)})" if skipped else ""
        raise RunError(
            f"{name}: no complete save in {rundir.STATE_FOLDER}/ to resume from{why}; "
            f"start it again with `kiln train {run_dir / rundir.CONFIG_FILE}`"
        )
    changed = changed_keys(run_dir, save)
    if changed and not force:
        raise RunError(
            f"{run_dir / rundir.CONFIG_FILE} changed since the save at step "
            f"{(checkpoint.read_manifest(save) or {}).get('step')}: {', '.join(changed)}; "
            "undo the change, or resume with --force to train on with it"
        )
    return save


def changed_keys(run_dir: Path, save: Path) -> list[str]:
    """Dotted config keys whose value in the run's ``config.toml`` differs from the save's."""
    from kiln.engine.train import checkpoint
    from kiln.engine.train.config import load_config

    current = load_config(Path(run_dir) / rundir.CONFIG_FILE).to_dict()
    saved = (checkpoint.read_manifest(save) or {}).get("config") or {}
    return checkpoint.config_changes(saved, current)


def read_launch(run_dir: Path) -> dict[str, Any]:
    """How the run's process was launched (gpus, cpu, command), or {} for a foreground run."""
    try:
        data = json.loads((Path(run_dir) / rundir.LAUNCH_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def relaunch_env(launch: Mapping[str, Any]) -> dict[str, str]:
    """The environment additions of a run's first launch (a sweep job's GPU), for its resume;
    a variable the resuming shell sets itself wins (``CUDA_VISIBLE_DEVICES=3 kiln resume``)."""
    saved = launch.get("env")
    if not isinstance(saved, dict):
        return {}
    return {str(k): str(v) for k, v in saved.items() if str(k) not in os.environ}


# ------------------------------------------------------------------------- helpers


def _gone_reason(status: dict[str, Any], now: float) -> str | None:
    """Why a run whose status says running is not (one phrase), or None while it lives."""
    pid, host = status.get("pid"), status.get("host")
    updated = _number(status.get("updated"))
    starting = status.get("state") == "starting"
    local = host is None or host == HOST
    if local and isinstance(pid, int):
        start = status.get("proc_start")
        if not process_alive(pid, start if isinstance(start, int) else None):
            return f"process {pid} is gone without a final event"
        if starting:
            return None  # the launcher lives; the trainer's heartbeat starts after its imports
    elif local:
        return "the status names no process"
    limit = STARTING_GRACE_S if starting else STALE_AFTER_S
    if updated is None or now - updated > limit:
        age = "never" if updated is None else f"{now - updated:.0f} s ago"
        where = "" if local else f" on {host}"
        return f"no heartbeat from process {pid}{where} (last {age})"
    return None


def _read_status_settled(run_dir: Path, tries: int = 3, pause_s: float = 0.05) -> dict[str, Any] | None:
    """``status.json``, read again briefly when it is there but unreadable (a writer that is
    not atomic, a file system hiccup): one bad read says nothing about the run."""
    for attempt in range(tries):
        status = read_status(run_dir)
        if status is not None or not (Path(run_dir) / STATUS_FILE).exists():
            return status
        if attempt + 1 < tries:
            time.sleep(pause_s)
    return None


def _unreadable_status_run(run_dir: Path, now: float) -> RunInfo:
    """A run whose ``status.json`` is there but not readable JSON: its process decides its state.

    A trainer holding the run's lock, or the launched process still alive, is running; else
    the run is stale (resumable once its status is rewritten by the resume).
    """
    launch = read_launch(run_dir)
    trainer = runlock.holder(run_dir)
    pid = trainer or (launch.get("pid") if isinstance(launch.get("pid"), int) else None)
    alive = trainer is not None or (launch.get("host", HOST) == HOST and process_alive(pid))
    try:
        updated = (run_dir / STATUS_FILE).stat().st_mtime
    except OSError:
        updated = None
    return RunInfo(
        run_dir=run_dir,
        name=_name_from_folder(run_dir),
        state="running" if alive else "stale",
        step=0,
        total=0,
        epoch=0,
        epochs=0,
        loss=None,
        it_s=None,
        eta_s=None,
        started=_number(launch.get("launched")),
        updated=updated,
        pid=pid if isinstance(pid, int) and pid > 0 else None,
        error=None if alive else "status.json is unreadable and no process trains the run",
        readonly=False,
    )


def _unstarted_run(run_dir: Path, now: float) -> RunInfo:
    """A folder with a config but no status yet: just made, or its launch failed."""
    try:
        made = (run_dir / rundir.CONFIG_FILE).stat().st_mtime
    except OSError:
        made = None
    fresh = made is not None and now - made < STALE_AFTER_S
    readonly = (run_dir / EVENTS_FILE).exists() or made is None
    return RunInfo(
        run_dir=run_dir,
        name=_name_from_folder(run_dir),
        state="running" if fresh and not readonly else "stale",
        step=0,
        total=0,
        epoch=0,
        epochs=0,
        loss=None,
        it_s=None,
        eta_s=None,
        started=made,
        updated=made,
        pid=None,
        error=None if fresh and not readonly else "no status.json: the run never started",
        readonly=readonly,
    )


def _name_from_folder(run_dir: Path) -> str:
    return _STAMP.sub("", run_dir.name) or run_dir.name


def _newest_first_key(info: RunInfo) -> tuple[float, str]:
    started = info.started
    if started is None:
        match = _STAMP.match(info.run_dir.name)
        if match:
            with contextlib.suppress(ValueError):
                started = time.mktime(time.strptime(match.group(1), "%Y%m%d-%H%M%S"))
    return (started if started is not None else 0.0, info.run_dir.name)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
