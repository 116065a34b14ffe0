"""A sweep compared: per run its settings, smoothed losses, time and cook hint; samples side by side.

Used by ``kiln sweep --report`` (a table, JSON, and a contact sheet composed with Pillow) and
by the runs section's sweep view (the same rows, the samples as previews).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.engine.runs.feed import RunFeed
from kiln.engine.runs.sweep import read_sweep_record, run_path

CONTACT_SHEET = "contact-sheet.png"
CELL = 160
_LABEL_HEIGHT = 30
_MARGIN = 6


@dataclass(frozen=True)
class SweepRow:
    """One run of a sweep, as the comparison table shows it.

    Attributes:
        index: The run's number in the sweep (1-based).
        run_dir: Its run folder (None while queued).
        overrides: The keys the sweep set for it.
        state: ``queued``, ``skipped``, or the run's state (running, done, failed, ...).
        steps: Steps done.
        final_loss: The last smoothed loss (None before the first step).
        min_loss: The lowest smoothed loss.
        validation_loss: The last validation loss (runs with ``train.validation_split``).
        seconds: Time from the run's start to its end (or to its latest event).
        cook: The latest epoch's cook hint (``overcooked? noise ...``), None when nothing
            points either way or there are no samples yet.
        tec: The text-encoder drift of its last LoRA (None unless asked for and available).
        tec_note: Why ``tec`` is None when it was asked for.
        samples: Its newest epoch's sample files, in prompt order.
        sample_epoch: The epoch of ``samples``.
        baseline: Its epoch-0 samples.
        prompts: The sample prompts (text), in order.
        gpu: The GPU the queue gave it (``CUDA_VISIBLE_DEVICES``), None when nothing was pinned.
    """

    index: int
    run_dir: Path | None
    overrides: dict[str, Any]
    state: str
    steps: int = 0
    final_loss: float | None = None
    min_loss: float | None = None
    validation_loss: float | None = None
    seconds: float | None = None
    cook: str | None = None
    tec: float | None = None
    tec_note: str | None = None
    samples: tuple[Path, ...] = ()
    sample_epoch: int | None = None
    baseline: tuple[Path, ...] = ()
    prompts: tuple[str, ...] = ()
    gpu: str | None = None

    def to_json(self, with_tec: bool = False) -> dict[str, Any]:
        """The row as ``kiln sweep --report --json`` prints it."""
        data: dict[str, Any] = {
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "overrides": self.overrides,
            "state": self.state,
            "steps": self.steps,
            "final_loss": self.final_loss,
            "min_loss": self.min_loss,
            "seconds": self.seconds,
            "cook": self.cook,
            "validation_loss": self.validation_loss,
            "gpu": self.gpu,
        }
        if with_tec:
            data["tec"] = self.tec
        return data


@dataclass(frozen=True)
class SweepReport:
    """Every run of a sweep."""

    sweep_dir: Path
    name: str
    rows: tuple[SweepRow, ...]
    warnings: tuple[str, ...] = ()
    with_tec: bool = False

    def to_json(self) -> dict[str, Any]:
        """``{"sweep_dir", "name", "runs": [...]}``."""
        return {
            "sweep_dir": str(self.sweep_dir),
            "name": self.name,
            "runs": [row.to_json(self.with_tec) for row in self.rows],
        }

    @property
    def pinned(self) -> bool:
        """Whether the queue gave any run a GPU of its own (tables then show a gpu column)."""
        return any(row.gpu is not None for row in self.rows)

    def keys(self) -> list[str]:
        """The config keys the sweep varies, in first-seen order (the table's setting columns)."""
        seen: dict[str, None] = {}
        for row in self.rows:
            for key in row.overrides:
                seen.setdefault(key, None)
        return list(seen)

    @property
    def finished(self) -> bool:
        """Whether no run is queued or going."""
        return all(row.state not in ("queued", "starting", "running") for row in self.rows)


def sweep_report(
    sweep_dir: Path | str,
    cook: bool = True,
    tec: bool = False,
    state_of: Callable[[Path], str] | None = None,
    tec_options: Any = None,
) -> SweepReport:
    """Read a sweep folder into a report.

    Args:
        sweep_dir: The sweep folder (holds ``sweep.json``).
        cook: Measure the runs' samples for cook hints (decodes images: a second or two).
        tec: Measure each run's text-encoder drift with :mod:`kiln.engine.tec` when that module
            exists (loads the text encoder: slow); left None otherwise.
        state_of: A run folder's state; defaults to :func:`kiln.engine.runs.folders.read_run`
            (which also notices a run whose process died).
        tec_options: The TEC meter's ``ProbeOptions`` (None: its defaults).

    Raises:
        RunError: The folder is not a sweep folder.
    """
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    record = read_sweep_record(sweep_dir)
    if state_of is None:
        from kiln.engine.runs.folders import read_run

        def state_of(path: Path) -> str:
            return read_run(path).state

    rows = [
        _row(sweep_dir, entry, position, cook, tec, state_of, tec_options)
        for position, entry in enumerate(record["runs"], 1)
    ]
    return SweepReport(
        sweep_dir=sweep_dir,
        name=str(record.get("name") or sweep_dir.name),
        rows=tuple(rows),
        warnings=tuple(str(w) for w in record.get("warnings") or ()),
        with_tec=tec,
    )


def _row(
    sweep_dir: Path,
    entry: dict[str, Any],
    position: int,
    cook: bool,
    tec: bool,
    state_of: Callable[[Path], str],
    tec_options: Any = None,
) -> SweepRow:
    index = int(entry.get("index") or position)
    overrides = dict(entry.get("overrides") or {})
    path = run_path(sweep_dir, entry)
    if path is None or not path.is_dir():
        return SweepRow(
            index=index,
            run_dir=path,
            overrides=overrides,
            state=str(entry.get("state") or "queued"),
            gpu=_gpu(entry),
        )
    feed = RunFeed(path)
    feed.poll()
    history = feed.history
    smooth = history.smoothed_losses()
    start_t = history.start.get("t") if history.start else None
    end_t = (history.end or history.last or {}).get("t")
    seconds = None
    if history.end is not None and isinstance(history.end.get("seconds"), (int, float)):
        seconds = float(history.end["seconds"])
    elif isinstance(start_t, (int, float)) and isinstance(end_t, (int, float)):
        seconds = round(float(end_t) - float(start_t), 3)
    latest = history.latest_sample_epoch()
    hint = None
    if cook and latest is not None:
        from kiln.engine.runs.cook import latest_cook_hint

        found = latest_cook_hint(path)
        hint = found.summary() if found is not None else None
    drift, note = tec_drift(path, tec_options) if tec else (None, None)
    return SweepRow(
        index=index,
        run_dir=path,
        overrides=overrides,
        state=state_of(path),
        steps=history.steps[-1] if history.steps else 0,
        final_loss=round(smooth[-1], 6) if smooth else None,
        min_loss=round(min(smooth), 6) if smooth else None,
        validation_loss=history.validation[-1][2] if history.validation else None,
        seconds=seconds,
        cook=hint,
        tec=drift,
        tec_note=note,
        samples=tuple(Path(p) for p in history.samples.get(latest, [])) if latest is not None else (),
        sample_epoch=latest,
        baseline=tuple(Path(p) for p in history.samples.get(0, [])),
        prompts=tuple(str(p.get("prompt", "")) for p in history.prompts),
        gpu=_gpu(entry),
    )


def _gpu(entry: Mapping[str, Any]) -> str | None:
    value = entry.get("gpu")
    return None if value is None else str(value)


def tec_drift(run_dir: Path, options: Any = None) -> tuple[float | None, str | None]:
    """The TEC score the run's last LoRA adds to its base, and why not when there is none.

    The hook for the TEC meter (:mod:`kiln.engine.tec`): the score is None when the module is
    missing, the run saved no LoRA yet, or the measure fails; the note says which, so a
    report never fails for want of a TEC figure.
    """
    try:
        from kiln.engine.runs.tec_series import run_tec_series
        from kiln.engine.tec.meter import ProbeOptions
    except ImportError:
        return None, "the TEC meter (kiln.engine.tec) is not installed"
    try:
        series = run_tec_series(run_dir, options=options if options is not None else ProbeOptions())
    except Exception as exc:
        return None, _sweep_note(str(exc), run_dir)
    if not series:
        return None, "no saved LoRA yet"
    return round(float(series[-1].report.score), 6), None


def _sweep_note(message: str, run_dir: Path) -> str:
    """A TEC error as `kiln sweep --report --tec` can act on it: the meter's own options
    (``--base``, ``--allow-pickle``) are not sweep options, so name the config key or the
    `kiln tec` command that takes them."""
    message = message.replace(
        "pass --base MODEL",
        f"set model.base in its config.toml, or run `kiln tec --run {run_dir} --base MODEL`",
    )
    return message.replace(
        "or pass --allow-pickle (model.allow_pickle = true)",
        "or set model.allow_pickle = true in the run's config.toml",
    )


# ---------------------------------------------------------------- samples side by side


@dataclass(frozen=True)
class PromptSamples:
    """One prompt's samples across a sweep: the baseline, then each run's newest sample."""

    prompt: str
    baseline: Path | None
    runs: tuple[tuple[SweepRow, Path | None], ...]


def samples_by_prompt(report: SweepReport) -> list[PromptSamples]:
    """Per prompt, the epoch-0 baseline and every run's newest sample (None where missing)."""
    count = max((len(row.samples) for row in report.rows), default=0)
    count = max(count, max((len(row.baseline) for row in report.rows), default=0))
    grid = []
    for position in range(count):
        prompt = next((row.prompts[position] for row in report.rows if len(row.prompts) > position), "")
        baseline = next((row.baseline[position] for row in report.rows if len(row.baseline) > position), None)
        cells = tuple(
            (row, row.samples[position] if len(row.samples) > position else None) for row in report.rows
        )
        grid.append(PromptSamples(prompt=prompt, baseline=baseline, runs=cells))
    return grid


def contact_sheet(report: SweepReport, out: Path | None = None, cell: int = CELL) -> Path | None:
    """Compose the sweep's samples into one image: a row per prompt, the baseline then each run.

    Each column is labelled with the run's number and settings, each row with its prompt.
    Written atomically to ``<sweep>/contact-sheet.png`` (or ``out``); None when no run has
    samples yet.
    """
    from PIL import Image, ImageDraw, ImageFont

    grid = samples_by_prompt(report)
    if not grid or all(p.baseline is None and all(s is None for _, s in p.runs) for p in grid):
        return None
    columns = 1 + len(report.rows)
    width = _MARGIN + columns * (cell + _MARGIN)
    height = _LABEL_HEIGHT + len(grid) * (cell + _LABEL_HEIGHT // 2 + _MARGIN) + _MARGIN
    sheet = Image.new("RGB", (width, height), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    labels = ["baseline (epoch 0)"] + [
        f"#{row.index} " + " ".join(f"{k.rpartition('.')[2]}={_short(v)}" for k, v in row.overrides.items())
        for row in report.rows
    ]
    for column, label in enumerate(labels):
        x = _MARGIN + column * (cell + _MARGIN)
        draw.text((x, 4), _fit(draw, label, font, cell), fill=(230, 230, 230), font=font)
        if column:
            row = report.rows[column - 1]
            sub = f"{row.state}" + (f" e{row.sample_epoch}" if row.sample_epoch is not None else "")
            draw.text((x, 16), _fit(draw, sub, font, cell), fill=(150, 150, 160), font=font)
    for line, prompt in enumerate(grid):
        y = _LABEL_HEIGHT + line * (cell + _LABEL_HEIGHT // 2 + _MARGIN)
        draw.text(
            (_MARGIN, y),
            _fit(draw, prompt.prompt, font, width - 2 * _MARGIN),
            fill=(200, 200, 120),
            font=font,
        )
        y += _LABEL_HEIGHT // 2
        files = [prompt.baseline] + [path for _, path in prompt.runs]
        for column, path in enumerate(files):
            x = _MARGIN + column * (cell + _MARGIN)
            _paste(sheet, draw, path, (x, y), cell)
    target = Path(out) if out is not None else report.sweep_dir / CONTACT_SHEET
    tmp = target.with_name(f".{target.name}.tmp")
    sheet.save(tmp, format="PNG")
    tmp.replace(target)
    return target


def _paste(sheet: Any, draw: Any, path: Path | None, corner: tuple[int, int], cell: int) -> None:
    from PIL import Image

    x, y = corner
    if path is None:
        draw.rectangle((x, y, x + cell - 1, y + cell - 1), outline=(70, 70, 80))
        draw.text((x + 6, y + cell // 2 - 6), "no sample", fill=(120, 120, 130))
        return
    try:
        with Image.open(path) as image:
            picture = image.convert("RGB")
    except OSError:
        draw.rectangle((x, y, x + cell - 1, y + cell - 1), outline=(160, 60, 60))
        draw.text((x + 6, y + cell // 2 - 6), "unreadable", fill=(200, 100, 100))
        return
    # Fit the cell both ways: small samples (a test model's 64 px) are enlarged, pixel for pixel.
    scale = cell / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    picture = picture.resize(size, resample)
    sheet.paste(picture, (x + (cell - picture.width) // 2, y + (cell - picture.height) // 2))


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
