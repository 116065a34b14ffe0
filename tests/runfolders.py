"""Run folders written by hand for tests: finished, failed or old-layout runs with fixed times.

Nothing here trains: the files are what a run leaves behind (status.json, events.jsonl,
train.log, samples, config.toml), with fixed timestamps so snapshots are deterministic.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from kiln.engine.runs.events import RUN_LAYOUT
from PIL import Image

# 2026-03-01 14:05:00 UTC.
T0 = 1772373900.0


# The peak GPU memory every fake run reports (an SD 1.5 LoRA at batch 1, roughly).
PEAK_MB = 6246.4


def loss_curve(steps: int, start: float = 0.2, end: float = 0.08) -> list[float]:
    """A deterministic, wiggly, falling loss curve."""
    return [
        round(end + (start - end) * math.exp(-3 * i / steps) + 0.02 * math.sin(i * 1.7), 6)
        for i in range(1, steps + 1)
    ]


def write_run(
    folder: Path,
    name: str,
    *,
    stamp: str = "20260301-140500",
    state: str = "done",
    steps: int = 60,
    epochs: int = 3,
    t0: float = T0,
    samples: bool = True,
    layout: int | None = RUN_LAYOUT,
    error: str | None = None,
    dataset: Path | None = None,
) -> Path:
    """Write a run folder that ended in ``state`` after ``steps`` steps; its path."""
    if state == "failed" and error is None:
        error = "CUDA out of memory"
    run_dir = Path(folder) / f"{stamp}-{name}"
    run_dir.mkdir(parents=True)
    losses = loss_curve(steps)
    per_epoch = max(1, steps // epochs)
    events: list[dict] = []
    t = t0

    def emit(kind: str, **fields) -> None:
        events.append({"t": round(t, 3), "type": kind, **fields})

    emit("start", name=name, total=steps, epochs=epochs, step=0, epoch=1, images=12, device="cuda:0")
    prompts = [{"prompt": "a kilnpot on a table", "seed": 1000}, {"prompt": "kilnstyle, hill", "seed": 1001}]
    if samples:
        emit("sample", epoch=0, step=0, files=_samples(run_dir, 0), prompts=prompts)
    done_steps = steps if state == "done" else steps * 2 // 3
    for step in range(1, done_steps + 1):
        t += 0.5
        epoch = min(epochs, (step - 1) // per_epoch + 1)
        emit(
            "step",
            step=step,
            total=steps,
            epoch=epoch,
            loss=losses[step - 1],
            lr=1e-4,
            lr_te=2e-5,
            it_s=2.0,
            peak_mb=PEAK_MB,
            memory="vram",
        )
        if step % per_epoch == 0:
            emit("epoch", epoch=epoch, epochs=epochs, step=step, loss=losses[step - 1])
            emit(
                "checkpoint",
                epoch=epoch,
                step=step,
                path=str(run_dir / "lora" / f"{name}-e{epoch:03d}.safetensors"),
            )
            if samples:
                emit("sample", epoch=epoch, step=step, files=_samples(run_dir, epoch), prompts=prompts)
    emit("warning", message="2 image(s) have no .txt caption; trained with an empty one")
    if state == "done":
        emit("done", step=done_steps, epoch=epochs, seconds=round(t - t0, 3))
    elif state == "failed":
        emit("failed", step=done_steps, epoch=epochs, error=error)
    elif state == "cancelled":
        emit("cancelled", step=done_steps, epoch=epochs)
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    status = {
        "state": state,
        "name": name,
        "run_dir": str(run_dir),
        "step": done_steps,
        "total": steps,
        "epoch": epochs,
        "epochs": epochs,
        "loss": losses[done_steps - 1],
        "it_s": 2.0,
        "eta_s": 0 if state == "done" else None,
        "peak_mb": PEAK_MB,
        "memory": "vram",
        "pid": 999999,
        "started": t0,
        "updated": round(t, 3),
        "error": error if state == "failed" else None,
    }
    if layout is not None:
        status.update(layout=layout, host="test-host", proc_start=None)
    (run_dir / "status.json").write_text(json.dumps(status, indent=2), encoding="utf-8")
    config = (
        f'[model]\nbase = "/models/sd15"\n\n[dataset]\npath = "{dataset or "/data/pots"}"\n\n'
        f'[output]\nname = "{name}"\n'
    )
    (run_dir / "config.toml").write_text(config, encoding="utf-8")
    (run_dir / "train.log").write_text(
        "".join(f"2026-03-01 14:{5 + i:02d}:00,000 INFO epoch {i + 1} done\n" for i in range(epochs)),
        encoding="utf-8",
    )
    return run_dir


def _samples(run_dir: Path, epoch: int) -> list[str]:
    folder = run_dir / "samples" / f"e{epoch:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(2):
        path = folder / f"{index:02d}.png"
        shade = 40 + 50 * epoch + 60 * index
        Image.new("RGB", (32, 32), (shade % 256, 120, 200 - 20 * index)).save(path)
        files.append(str(path))
    return files


def write_sweep(
    folder: Path, name: str, runs: list[tuple[dict, str]], stamp: str = "20260303-090000"
) -> Path:
    """A sweep folder holding a finished fake run per ``(overrides, state)``; queued ones have none."""
    sweep_dir = Path(folder) / f"sweep-{stamp}-{name}"
    sweep_dir.mkdir(parents=True)
    entries = []
    for index, (overrides, state) in enumerate(runs, start=1):
        entry = {
            "index": index,
            "overrides": overrides,
            "config": f"configs/{index:02d}.toml",
            "state": state,
        }
        if state == "queued":
            entry["run_dir"] = None
        else:
            run_dir = write_run(
                sweep_dir,
                f"{name}-{index:02d}",
                stamp=f"{stamp[:-2]}{index:02d}",
                state=state,
                t0=T0 + 86400 * 2 + 600 * index,
                steps=40 + 10 * index,
            )
            entry["run_dir"] = run_dir.name
        entries.append(entry)
    record = {
        "kind": "kiln-sweep",
        "version": 1,
        "name": name,
        "max_steps": 800,
        "warnings": [],
        "runs": entries,
    }
    (sweep_dir / "sweep.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return sweep_dir
