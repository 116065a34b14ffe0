"""Test-training sweeps: a base config and a grid (or list) of overrides, run as short runs.

The guide asks for 10-20 test trainings of 500-1000 steps before the final one. A sweep file
names a base config and what to vary::

    base = "run.toml"            # relative to the sweep file
    max_steps = 800              # per run; outside 500..1000 warns, never refuses
    [grid]
    "train.unet_lr" = [1e-4, 3e-4]
    "train.text_encoder_lr_ratio" = [0.25, 0.1667]

``[grid]`` runs the product of its lists; ``[[runs]]`` tables list runs explicitly instead.
A sweep folder (``<runs folder>/sweep-<time>-<name>/``) holds ``sweep.json``, one resolved
config per run in ``configs/``, and the run folders themselves. Runs are queued one after
another (or ``parallel`` at a time), each started detached, and share the dataset's disk
latent cache (``train.cache_latents_to_disk``), so the VAE encodes each image once per sweep.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.engine.errors import ConfigError, RunError
from kiln.engine.fsutil import atomic_write_text
from kiln.engine.runs.events import LIVE_STATES
from kiln.engine.runs.gpus import GpuPool, job_env
from kiln.engine.runs.layout import stamped_folder
from kiln.engine.train.config import (
    TrainConfig,
    all_keys,
    apply_overrides,
    load_config,
    require_paths,
    resolved_toml,
    suggest_key,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SWEEP_FILE = "sweep.json"
SWEEP_LOG = "sweep.log"
CONFIGS_FOLDER = "configs"
SWEEP_KEYS = ("base", "max_steps", "name", "grid", "runs")
TEST_RUN_STEPS = (500, 1000)
# States of a queued entry before its run exists, and of runs still going.
QUEUED = "queued"
SKIPPED = "skipped"
ACTIVE_STATES = LIVE_STATES
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class SweepPlan:
    """A checked sweep file.

    Attributes:
        source: The sweep file.
        base_path: The base config file.
        base: The base config as read.
        name: The sweep's name (``name``, else the sweep file's stem).
        max_steps: Steps per run (None: each run's own ``train.max_steps``).
        entries: Per run, the keys the sweep varies and their values.
        configs: Per run, the full config it trains with.
        warnings: Things worth saying that do not stop the sweep.
    """

    source: Path
    base_path: Path
    base: TrainConfig
    name: str
    max_steps: int | None
    entries: tuple[dict[str, Any], ...]
    configs: tuple[TrainConfig, ...]
    warnings: tuple[str, ...] = field(default=())


def load_sweep(path: Path | str) -> SweepPlan:
    """Read and check a sweep file: every key known, every run's config valid.

    Raises:
        ConfigError: The file is missing or not TOML, a key is unknown (named), a value is
            wrong for its config key (named, with the run), or neither ``[grid]`` nor
            ``[[runs]]`` lists a run.
    """
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such sweep file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the sweep file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    for key in data:
        if key not in SWEEP_KEYS:
            hint = ""
            if key in {k.partition(".")[0] for k in all_keys()}:
                hint = f' (config keys go inside [grid] or [[runs]], e.g. "{key}.<name>" = [...])'
            raise ConfigError(f"{path}: unknown key {key}{hint}; a sweep file holds {', '.join(SWEEP_KEYS)}")
    base_value = data.get("base")
    if not isinstance(base_value, str) or not base_value:
        raise ConfigError(f'{path}: base = "run.toml" is required: the config every run starts from')
    base_path = (path.parent / Path(base_value).expanduser()).resolve()
    base = load_config(base_path)
    require_paths(base, str(base_path))
    max_steps = data.get("max_steps")
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1
    ):
        raise ConfigError(f"{path}: max_steps = {max_steps!r}: must be a whole number, at least 1")
    name = data.get("name", path.stem)
    if (
        not isinstance(name, str)
        or not name
        or "/" in name
        or name.startswith(".")
        or any(ord(char) < 32 or ord(char) == 127 for char in name)  # a newline, a tab...
    ):
        raise ConfigError(f"{path}: name = {name!r}: must be a plain folder name")
    entries = _entries(path, data)
    configs = []
    warnings: list[str] = []
    for index, entry in enumerate(entries, start=1):
        overrides = dict(entry)
        if max_steps is not None:
            overrides.setdefault("train.max_steps", max_steps)
        configs.append(apply_overrides(base, overrides, source=f"{path} run {index} ({_describe(entry)})"))
    low, high = TEST_RUN_STEPS
    for index, config in enumerate(configs, start=1):
        steps = config.train.max_steps
        if steps == 0:
            warnings.append(
                f"run {index}: no step cap (max_steps unset and train.max_steps = 0): it trains its full "
                f"length; test runs are meant to be {low}..{high} steps"
            )
        elif not low <= steps <= high:
            warnings.append(f"run {index}: {steps} steps is outside the guide's {low}..{high} for a test run")
    if len(warnings) == len(configs) > 1 and len({c.train.max_steps for c in configs}) == 1:
        # The same steps for every run: say it once.
        warnings = [warnings[0].replace("run 1: ", "every run: ", 1)]
    return SweepPlan(
        source=path.resolve(),
        base_path=base_path,
        base=base,
        name=name,
        max_steps=max_steps,
        entries=tuple(entries),
        configs=tuple(configs),
        warnings=tuple(warnings),
    )


def _entries(path: Path, data: Mapping[str, Any]) -> list[dict[str, Any]]:
    grid, runs = data.get("grid"), data.get("runs")
    if grid is not None and runs is not None:
        raise ConfigError(f"{path}: give [grid] or [[runs]], not both")
    if grid is None and runs is None:
        raise ConfigError(
            f'{path}: no runs: add [grid] with lists ("train.unet_lr" = [1e-4, 3e-4]) or [[runs]]'
        )
    if grid is not None:
        if not isinstance(grid, Mapping):
            raise ConfigError(f"{path}: grid must be a table ([grid])")
        flat = _flatten(path, grid, "grid")
        axes = []
        for key, values in flat.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{path}: grid {key} = {values!r}: must be a non-empty list of values")
            axes.append([(key, value) for value in values])
        return [dict(combination) for combination in itertools.product(*axes)]
    if not isinstance(runs, list) or not runs or not all(isinstance(run, Mapping) for run in runs):
        raise ConfigError(f"{path}: runs must be a list of tables ([[runs]] with keys under each)")
    return [_flatten(path, run, f"runs[{index}]") for index, run in enumerate(runs, start=1)]


def _flatten(path: Path, table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``{"train": {"unet_lr": x}}`` or ``{"train.unet_lr": x}`` -> ``{"train.unet_lr": x}``, keys checked."""
    known = set(all_keys())
    flat = _dotted(table)
    for key in flat:
        if key not in known:
            raise ConfigError(f"{path}: {where}: unknown key {key}{suggest_key(key)}")
    return flat


def _dotted(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _describe(entry: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in entry.items()) or "base"


# ---------------------------------------------------------------- the sweep folder


def sweep_runs_folder(plan: SweepPlan) -> Path:
    """Where the base config's runs go (``output.dir`` or ``<dataset>/runs``): the sweep goes there."""
    from kiln.engine.runs.layout import runs_folder

    return runs_folder(plan.base)


def create_sweep(plan: SweepPlan, parent: Path | None = None, now: float | None = None) -> Path:
    """Make the sweep folder: ``sweep.json`` and ``configs/NN.toml`` per run (nothing starts yet).

    Each run's config sends its run folder into the sweep folder, names it after the sweep
    and its number, and caches latents on disk so the runs share them.
    """
    parent = Path(parent) if parent is not None else sweep_runs_folder(plan)
    parent.mkdir(parents=True, exist_ok=True)
    sweep_dir = stamped_folder(parent, plan.name, now, prefix="sweep-")
    (sweep_dir / CONFIGS_FOLDER).mkdir()
    runs = []
    width = max(2, len(str(len(plan.configs))))
    for index, (entry, config) in enumerate(zip(plan.entries, plan.configs, strict=True), start=1):
        config = apply_overrides(
            config,
            {
                "output.dir": str(sweep_dir),
                "output.name": f"{config.output.name}-{index:0{width}d}",
                "train.cache_latents": True,
                "train.cache_latents_to_disk": True,
            },
            source=f"sweep run {index}",
        )
        config_path = sweep_dir / CONFIGS_FOLDER / f"{index:0{width}d}.toml"
        atomic_write_text(config_path, resolved_toml(config))
        runs.append(
            {
                "index": index,
                "overrides": entry,
                "config": str(config_path.relative_to(sweep_dir)),
                "run_dir": None,
                "state": QUEUED,
            }
        )
    record = {
        "kind": "kiln-sweep",
        "version": 1,
        "name": plan.name,
        "sweep_file": str(plan.source),
        "base": str(plan.base_path),
        "max_steps": plan.max_steps,
        "created": round(now if now is not None else time.time(), 3),
        "warnings": list(plan.warnings),
        "runner_pid": None,
        "runs": runs,
    }
    write_sweep_record(sweep_dir, record)
    return sweep_dir


def is_sweep_dir(path: Path) -> bool:
    """Whether a folder is a sweep folder (holds ``sweep.json``)."""
    return (Path(path) / SWEEP_FILE).is_file()


def read_sweep_record(sweep_dir: Path) -> dict[str, Any]:
    """``sweep.json`` as written.

    Raises:
        RunError: The folder is not a sweep folder or its record is unreadable.
    """
    path = Path(sweep_dir) / SWEEP_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(
            f"{sweep_dir}: not a sweep folder (no {SWEEP_FILE}); `kiln sweep SWEEP.toml` makes one"
        ) from None
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable sweep record ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise RunError(f"{path}: not a Kiln sweep record (no runs list)")
    return data


def write_sweep_record(sweep_dir: Path, record: Mapping[str, Any]) -> None:
    """Replace ``sweep.json`` atomically (readers never see half a record)."""
    atomic_write_text(Path(sweep_dir) / SWEEP_FILE, json.dumps(record, indent=2, default=str) + "\n")


def run_path(sweep_dir: Path, entry: Mapping[str, Any]) -> Path | None:
    """An entry's run folder (stored relative to the sweep folder), or None before it started."""
    value = entry.get("run_dir")
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else Path(sweep_dir) / path


# ---------------------------------------------------------------- the queue


@dataclass
class QueueHooks:
    """How the queue starts and reads runs; the defaults are :mod:`kiln.engine.runs.folders`."""

    launch: Callable[[Path, Mapping[str, str]], Path]
    """Start the run of a config with these environment additions (its GPU); its folder."""
    state: Callable[[Path], str]
    cancel: Callable[[Path], None]

    @classmethod
    def default(cls) -> QueueHooks:
        """Start each run detached on this machine (``start_detached``), read ``read_run``."""
        from kiln.engine.runs import folders as runs

        return cls(
            launch=lambda config, env: runs.start_detached(config, env=env),
            state=lambda run_dir: runs.read_run(run_dir).state,
            cancel=runs.cancel_run,
        )


def run_queue(
    sweep_dir: Path,
    parallel: int = 1,
    hooks: QueueHooks | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_change: Callable[[dict[str, Any]], None] | None = None,
    poll_seconds: float = POLL_SECONDS,
    gpus: Sequence[str] = (),
    share_gpus: bool = False,
) -> dict[str, Any]:
    """Start the sweep's queued runs, ``parallel`` at a time, until every one has ended.

    The record in ``sweep.json`` is rewritten whenever a run starts or ends, so a TUI or a
    report sees the queue as it is. When ``should_stop`` turns true the runs in flight are
    cancelled and the queued ones marked ``skipped``. A run that fails to start is marked
    ``failed`` with the reason, and the queue goes on.

    With ``gpus`` each run gets one of them to itself (``CUDA_VISIBLE_DEVICES``, recorded as
    the entry's ``gpu``) and the rest wait until a run ends or fails and frees its device, so
    at most ``min(parallel, len(gpus))`` run at once; ``share_gpus`` lets ``parallel`` runs
    share the devices, the least busy first. Without ``gpus`` nothing is pinned.

    Returns:
        The final record.
    """
    sweep_dir = Path(sweep_dir)
    hooks = hooks or QueueHooks.default()
    record = read_sweep_record(sweep_dir)
    record["runner_pid"] = os.getpid()
    write_sweep_record(sweep_dir, record)
    entries: list[dict[str, Any]] = record["runs"]
    in_flight: list[dict[str, Any]] = [
        e for e in entries if e.get("state") in ACTIVE_STATES and e.get("run_dir")
    ]
    pool = GpuPool(gpus, share=share_gpus)
    for entry in in_flight:
        pool.claim(entry.get("gpu"))
    capacity = pool.capacity(parallel)

    def changed() -> None:
        write_sweep_record(sweep_dir, record)
        if on_change is not None:
            on_change(record)

    while True:
        if should_stop():
            for entry in in_flight:
                path = run_path(sweep_dir, entry)
                if path is not None:
                    try:
                        hooks.cancel(path)
                    except Exception as exc:  # a run that already ended cannot be cancelled
                        entry["error"] = str(exc)
            for entry in entries:
                if entry.get("state") == QUEUED:
                    entry["state"] = SKIPPED
            record["runner_pid"] = None
            changed()
            return record
        for entry in list(in_flight):
            path = run_path(sweep_dir, entry)
            state = hooks.state(path) if path is not None else "failed"
            if state != entry.get("state"):
                entry["state"] = state
                if state not in ACTIVE_STATES:
                    in_flight.remove(entry)
                    pool.release(entry.get("gpu"))
                changed()
        queued = [e for e in entries if e.get("state") == QUEUED]
        while queued and len(in_flight) < capacity:
            device = pool.take()
            if pool and device is None:
                break  # every GPU busy: wait for a run to end
            entry = queued.pop(0)
            if device is not None:
                entry["gpu"] = device
            try:
                path = hooks.launch(sweep_dir / entry["config"], job_env(device))
            except Exception as exc:
                pool.release(device)
                entry["state"] = "failed"
                entry["error"] = str(exc)
                changed()
                continue
            try:
                entry["run_dir"] = str(Path(path).resolve().relative_to(sweep_dir.resolve()))
            except ValueError:
                entry["run_dir"] = str(Path(path).resolve())
            entry["state"] = "starting"
            entry["started"] = round(time.time(), 3)
            in_flight.append(entry)
            changed()
        if not in_flight and not queued:
            record["runner_pid"] = None
            changed()
            return record
        time.sleep(poll_seconds)
