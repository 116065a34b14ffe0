"""The runs section: every run of the dataset (and of ``--runs`` folders), one followed live.

The table lists runs newest first with their state and figures. The selected run shows its
loss chart, progress, LR, latest event, log tail, its newest samples next to the epoch-0
baseline, checkpoints, warnings and a cook hint. A watchdog observer (or a polling one)
reports changed run files; the screen re-reads only what changed, so a new event shows
within a second. Runs are separate processes: quitting Kiln never stops one, and the next
Kiln picks it up from its folder.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from kiln.engine.errors import KilnError
from kiln.engine.runs.events import LIVE_STATES
from kiln.engine.runs.feed import Progress, RunFeed, RunHistory, current_progress
from kiln.engine.runs.readout import duration, event_text, loss_text, lr_text, memory_text, rate_text
from kiln.engine.runs.sweep import is_sweep_dir
from kiln.tui.messages import RunFilesChanged, RunLoaded, RunsListed, SamplesLoaded
from kiln.tui.screens.confirm import ConfirmScreen
from kiln.tui.screens.section import SectionScreen
from kiln.tui.watch import RunsWatcher
from kiln.tui.widgets.loss_chart import LossChart
from kiln.tui.widgets.run_table import RunTable, run_cells
from kiln.tui.widgets.sample_grid import SampleGrid, load_thumbnail
from kiln.tui.widgets.section_bar import SectionBar
from kiln.tui.wording import packed, percent
from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.timer import Timer
from textual.widgets import DataTable, Footer, ProgressBar, Static
from textual.worker import get_current_worker

LOG_LINES = 6
LOG_TAIL_BYTES = 16 * 1024
LIST_REFRESH_S = 2.0
# Bursts of file events (a step writes events.jsonl, status.json...) become one update.
COALESCE_S = 0.08
# The chart redraws at most this often (plotext rebuilds the whole plot each time).
CHART_INTERVAL_S = 0.25


def runs_folders(dataset_root: Path, extra: list[Path]) -> list[Path]:
    """The dataset's ``runs/`` then each ``--runs`` folder, without repeats."""
    folders = [Path(dataset_root).resolve() / "runs"] + [Path(p).expanduser().resolve() for p in extra]
    return list(dict.fromkeys(folders))


def gather_runs(folders: list[Path]) -> list[tuple[Any, str | None]]:
    """Every run in the folders and in the sweep folders inside them, newest first.

    Returns ``(RunInfo, sweep name or None)`` pairs.
    """
    from kiln.engine.runs.folders import list_runs

    found: list[tuple[Any, str | None]] = []
    for folder in folders:
        found.extend((info, None) for info in list_runs(folder))
        if not folder.is_dir():
            continue
        for child in sorted(folder.iterdir()):
            if child.is_dir() and is_sweep_dir(child):
                found.extend((info, sweep_label(child.name)) for info in list_runs(child))
    found.sort(key=lambda pair: (pair[0].started or 0.0, pair[0].run_dir.name), reverse=True)
    return found


def sweep_label(folder_name: str) -> str:
    """``sweep-20260301-140500-lr`` -> ``lr``: the name a sweep's runs are listed under."""
    match = re.match(r"^sweep-\d{8}-\d{6}-(.+)$", folder_name)
    return match.group(1) if match else folder_name


def log_tail(path: Path, lines: int = LOG_LINES) -> list[str]:
    """The last lines of a log file (reads only its end)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            data = handle.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    return [line for line in text.splitlines() if line.strip()][-lines:]


class RunsScreen(SectionScreen):
    """Follow, start, cancel and resume runs."""

    CSS_PATH = "runs.tcss"
    SECTION = "runs"

    BINDINGS = [
        Binding(
            "n",
            "new_run",
            "Start",
            id="runs.new",
            tooltip="Start a run on this dataset with the plan's settings",
        ),
        Binding(
            "c",
            "cancel_run",
            "Cancel",
            id="runs.cancel",
            tooltip="Stop the run after its current step (saves a LoRA)",
        ),
        Binding(
            "r",
            "resume_run",
            "Resume",
            id="runs.resume",
            tooltip="Continue a cancelled, failed or stale run from its last save",
        ),
        Binding(
            "o", "open_config", "Config", id="runs.config", tooltip="Open the run's config.toml in $EDITOR"
        ),
        Binding(
            "v",
            "sweep_view",
            "Sweep",
            id="runs.sweep",
            tooltip="Compare the runs of the selected run's sweep",
        ),
        Binding("p", "next_prompt", "Prompt", id="runs.prompt", tooltip="Show the next sample prompt"),
        Binding(
            "e",
            "previous_epoch",
            "Epoch",
            id="runs.epoch",
            tooltip="Show an earlier epoch's samples (wraps to the newest)",
        ),
        Binding(
            "f5", "refresh", "Refresh", show=False, id="runs.refresh", tooltip="Read every run folder again"
        ),
    ]

    def __init__(
        self,
        dataset_root: Path,
        extra_folders: list[Path] | None = None,
        images: str = "auto",
        watch: bool = True,
        poll: bool = False,
        caption_extension: str = ".txt",
    ) -> None:
        super().__init__()
        self.dataset_root = Path(dataset_root)
        self.caption_extension = caption_extension
        self.folders = runs_folders(self.dataset_root, list(extra_folders or []))
        self.images_mode = images
        self.watch_files = watch
        self.poll = poll
        self.watcher: RunsWatcher | None = None
        self.infos: dict[str, Any] = {}
        self.sweeps: dict[str, str | None] = {}
        self.selected: str | None = None
        self.feed: RunFeed | None = None
        self.prompt_index = 0
        self.epoch_choice: int | None = None
        self._changed: set[Path] = set()
        self._change_timer: Timer | None = None
        self._chart_due = False
        self._chart_drawn = 0.0
        self._listed_once = False
        self._pending_select: str | None = None
        self.samples_shown_for: str | None = None
        self._cook_text: str | None = None

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield SectionBar("runs")
        with Vertical(id="list-pane"):
            yield RunTable(id="runs")
            yield Static("", id="empty")
        with Horizontal(id="detail"):
            with Vertical(id="main-pane"):
                yield Static("", id="run-head")
                with Horizontal(id="progress-row"):
                    yield ProgressBar(total=100, show_eta=False, show_percentage=False, id="progress")
                    yield Static("", id="progress-text")
                yield Static("", id="figures")
                yield Static("", id="last-event")
                yield LossChart(id="chart")
            with Vertical(id="side-pane"):
                yield SampleGrid(self.images_mode, id="samples")
                yield Static("", id="files")
                yield Static("", id="log")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#list-pane").border_title = "runs"
        self.query_one("#log").border_title = "train.log"
        self.query_one("#empty", Static).display = False
        self.show_nothing()
        if self.watch_files:
            self.watcher = RunsWatcher(
                lambda paths: self.post_message(RunFilesChanged(paths)), poll=self.poll
            )
            self.watcher.watch(self.folders)
        self.refresh_list()
        # Status files say "running" long after a process died; only time tells (stale runs).
        self.set_interval(LIST_REFRESH_S, self.refresh_list)
        self.set_interval(CHART_INTERVAL_S, self._draw_chart_if_due)
        self.query_one(RunTable).focus()

    def on_unmount(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    # -- the list ----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="runs-list")
    def refresh_list(self) -> None:
        """Read every run's status (a few small files) off the UI thread."""
        worker = get_current_worker()
        try:
            found = gather_runs(self.folders)
        except OSError:
            return
        if not worker.is_cancelled:
            self.post_message(RunsListed(found))

    def on_runs_listed(self, message: RunsListed) -> None:
        table = self.query_one(RunTable)
        self.infos = {str(info.run_dir): info for info, _ in message.runs}
        self.sweeps = {str(info.run_dir): sweep for info, sweep in message.runs}
        now = time.time()
        rows = [
            (str(info.run_dir), run_cells(info, f"{sweep}/{info.name}" if sweep else info.name, now))
            for info, sweep in message.runs
        ]
        table.set_rows(rows)
        empty = self.query_one("#empty", Static)
        if not rows:
            folders = ", ".join(self._shown_folder(folder) for folder in self.folders)
            empty.update(
                f"No runs yet in {escape(folders)}.\n\n"
                "[b]n[/b] starts one on this dataset with the plan's settings; "
                "`kiln train CONFIG --detach` or `kiln sweep SWEEP.toml` from a shell show up here too."
            )
        empty.display = not rows
        table.display = bool(rows)
        live = sum(1 for info, _ in message.runs if info.state in LIVE_STATES)
        self.query_one("#list-pane").border_title = f"{len(rows)} run(s) · {live} running"
        if self.watcher is not None:
            # Watches are recursive; a runs folder made since the last listing joins here.
            self.watcher.watch(self.folders)
        if self._pending_select in self.infos:
            key, self._pending_select = self._pending_select, None
            table.move_to(key)
            self.select(key)
        elif rows and (self.selected not in self.infos or not self._listed_once):
            self.select(table.current_key or rows[0][0])
        elif not rows:
            self.selected = None
            self.feed = None
            self.show_nothing()
        elif self.selected is not None:
            self.show_head()
            self._poll_selected()
        self._listed_once = True

    def _poll_selected(self) -> None:
        """Read the followed run's new events (the periodic safety net for missed file events)."""
        if self.feed is None:
            return
        read = self.feed.poll()
        if read.events or read.restarted:
            self.show_feed()
            if any(event.get("type") == "sample" for event in read.events):
                self.load_samples()

    def _shown_folder(self, folder: Path) -> str:
        """A runs folder as the user knows it: ``runs/`` inside the dataset, else its path."""
        try:
            return folder.relative_to(self.dataset_root.resolve()).as_posix() + "/"
        except ValueError:
            return str(folder)

    @on(DataTable.RowHighlighted, "#runs")
    def row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        # A rebuild highlights row 0 on its way back to the run it was on: follow where the
        # cursor is now, not where the message says it passed.
        key = self.query_one(RunTable).current_key
        if key is not None and key != self.selected:
            self.select(key)

    def select(self, key: str) -> None:
        """Follow another run: its history is read in a worker, then shown."""
        self.selected = key
        self.feed = None
        self.samples_shown_for = None
        self.prompt_index = 0
        self.epoch_choice = None
        self.show_head()
        self.load_run(key)

    @work(thread=True, exclusive=True, group="run-load")
    def load_run(self, key: str) -> None:
        """Read the run's whole history (a long run's events file can take a moment)."""
        worker = get_current_worker()
        feed = RunFeed(Path(key))
        feed.poll()
        tail = log_tail(Path(key) / "train.log")
        if not worker.is_cancelled:
            self.post_message(RunLoaded(key, feed, tail))

    def on_run_loaded(self, message: RunLoaded) -> None:
        if message.key != self.selected:
            return
        self.feed = message.feed
        # Events written while the worker read were announced to a screen with no feed yet.
        self.feed.poll()
        self.show_feed()
        self.show_log(message.log)
        self.load_samples()

    # -- file changes ------------------------------------------------------------------------

    def on_run_files_changed(self, message: RunFilesChanged) -> None:
        self._changed |= message.paths
        if self._change_timer is None:
            self._change_timer = self.set_timer(COALESCE_S, self.apply_changes)

    def apply_changes(self) -> None:
        """Re-read what changed: statuses, the selected run's new events, log and samples."""
        self._change_timer = None
        changed, self._changed = self._changed, set()
        unknown = False
        selected = Path(self.selected) if self.selected else None
        events = log = samples = False
        for path in changed:
            run_key = self._run_of(path)
            if run_key is None:
                unknown = True
                continue
            if path.name == "status.json":
                self._reread_status(run_key)
            if selected is not None and run_key == str(selected):
                events |= path.name == "events.jsonl"
                log |= path.name == "train.log"
                samples |= path.suffix.lower() == ".png"
        if unknown:
            self.refresh_list()
        if self.feed is not None and events:
            read = self.feed.poll()
            if read.events or read.restarted or read.missing:
                self.show_feed()
                samples |= any(event.get("type") == "sample" for event in read.events)
        if log and selected is not None:
            self.show_log(log_tail(selected / "train.log"))
        if samples:
            self.load_samples()

    def _run_of(self, path: Path) -> str | None:
        for parent in path.parents:
            key = str(parent)
            if key in self.infos:
                return key
        return None

    def _reread_status(self, key: str) -> None:
        from kiln.engine.runs.folders import read_run

        try:
            info = read_run(Path(key))
        except (KilnError, OSError):
            return
        self.infos[key] = info
        sweep = self.sweeps.get(key)
        cells = run_cells(info, f"{sweep}/{info.name}" if sweep else info.name)
        try:
            self.query_one(RunTable).update_row(key, cells)
        except Exception:  # the row went away in a rebuild meanwhile
            return
        if key == self.selected:
            self.show_head()

    # -- the detail panes --------------------------------------------------------------------

    def show_nothing(self) -> None:
        """The detail panes with no run selected."""
        self.query_one("#main-pane").border_title = "no run selected"
        self.query_one("#run-head", Static).update("")
        self.query_one("#figures", Static).update("")
        self.query_one("#last-event", Static).update("")
        self.query_one("#progress-text", Static).update("")
        self.query_one(ProgressBar).update(total=100, progress=0)
        self.query_one(LossChart).show(None)
        self.query_one(SampleGrid).show_message("no samples")
        self.query_one("#files", Static).update("")
        self.query_one("#log", Static).update("")

    def show_head(self) -> None:
        """The lines from the run's status: state, progress, rate, ETA."""
        info = self.infos.get(self.selected or "")
        if info is None:
            return
        sweep = self.sweeps.get(self.selected or "")
        self.query_one("#main-pane").border_title = f"{sweep}/{info.name}" if sweep else info.name
        head = Text()
        head.append(info.state, style=f"bold {_state_colour(info.state)}")
        head.append(f"  {info.run_dir.name}", style="dim")
        if info.readonly:
            head.append("  read-only: written by another Kiln; shown as it is", style="yellow")
        if info.error and info.state in ("failed", "stale"):
            head.append(f"\n{info.error}", style="red")
        self.query_one("#run-head", Static).update(head)
        self._show_progress(info)

    def _show_progress(self, info: Any) -> None:
        now = self._now(info)
        step, total, epoch = now.step, now.total, now.epoch
        self.query_one(ProgressBar).update(total=max(1, total), progress=min(step, max(1, total)))
        epochs = f"e{epoch}/{info.epochs}" if info.epochs else ""
        # The percent as the runs table rounds it (kiln.tui.wording.percent), not the bar's own.
        shown = f" {percent(step, total)}%" if total > 0 else ""
        self.query_one("#progress-text", Static).update(f"{shown} {step}/{total or '?'} {epochs}")
        self._show_figures(info)

    def _now(self, info: Any) -> Progress:
        history = self.feed.history if self.feed is not None else RunHistory()
        return current_progress(info, history, info.state in LIVE_STATES)

    def _show_figures(self, info: Any) -> None:
        history = self.feed.history if self.feed is not None else RunHistory()
        smooth = history.smoothed_losses()
        live = info.state in LIVE_STATES
        now = self._now(info)
        it_s, eta_s = now.it_s, now.eta_s
        parts = [
            f"loss {loss_text(history.losses[-1] if history.losses else info.loss)}",
            f"smoothed {loss_text(smooth[-1] if smooth else None)}",
            rate_text(it_s) if live and it_s else "",
            f"ETA {duration(eta_s)}" if live and eta_s is not None else "",
            memory_text(info.peak_mb, info.memory, info.estimate_mb),
            f"val {loss_text(history.validation[-1][2])}" if history.validation else "",
            f"lr {lr_text(history.lr)}" + (f" / te {lr_text(history.lr_te)}" if history.lr_te else ""),
        ]  # most wanted first: a narrow pane wraps the rest onto a second line
        figures = self.query_one("#figures", Static)
        figures.update(packed([part for part in parts if part], figures.size.width))

    def show_feed(self) -> None:
        """Everything that comes from the events: figures, latest event, chart, files."""
        feed = self.feed
        if feed is None:
            return
        info = self.infos.get(self.selected or "")
        if info is not None:
            self._show_progress(info)
        history = feed.history
        last = Text(event_text(history.last), style="dim")
        if feed.missing and history.count == 0:
            last = Text("no events yet (the run is loading, or its folder is gone)", style="dim")
        if feed.malformed:
            last.append(f"  ({feed.malformed} malformed line(s) skipped)", style="yellow")
        self.query_one("#last-event", Static).update(last)
        self._chart_due = True
        self._draw_chart_if_due(force=time.monotonic() - self._chart_drawn > CHART_INTERVAL_S)
        self.show_files(history)

    def _draw_chart_if_due(self, force: bool = False) -> None:
        if not self._chart_due and not force:
            return
        if not force and time.monotonic() - self._chart_drawn < CHART_INTERVAL_S:
            return
        self._chart_due = False
        self._chart_drawn = time.monotonic()
        self.query_one(LossChart).show(self.feed.history if self.feed is not None else None)

    def show_files(self, history: RunHistory) -> None:
        """Checkpoints, warnings and the cook hint under the samples."""
        lines = Text()
        if history.checkpoints:
            names = ", ".join(Path(c.path).name for c in history.checkpoints[-3:])
            more = f" (+{len(history.checkpoints) - 3})" if len(history.checkpoints) > 3 else ""
            lines.append(f"LoRA: {names}{more}\n")
        else:
            lines.append("LoRA: none saved yet\n", style="dim")
        if history.warnings:
            lines.append(f"⚠ {len(history.warnings)} warning(s): {history.warnings[-1]}\n", style="yellow")
        if self._cook_text:
            lines.append(self._cook_text, style="magenta")
        self.query_one("#files", Static).update(lines)

    def show_log(self, lines: list[str]) -> None:
        """The train.log tail."""
        self.query_one("#log", Static).update(Text("\n".join(lines), no_wrap=True, overflow="ellipsis"))

    # -- samples -----------------------------------------------------------------------------

    def load_samples(self) -> None:
        """Show the chosen prompt's baseline and trained sample (decoded in a worker)."""
        if self.feed is None:
            return
        history = self.feed.history
        trained = sorted(epoch for epoch in history.samples if epoch > 0)
        grid = self.query_one(SampleGrid)
        if not history.samples:
            grid.show_message("no samples yet (sample.prompts renders them at epoch 0 and after epochs)")
            self._cook_text = None
            return
        epoch = self.epoch_choice if self.epoch_choice in trained else (trained[-1] if trained else None)
        baseline = history.samples.get(0, [])
        current = history.samples.get(epoch, []) if epoch is not None else []
        count = max(len(baseline), len(current), 1)
        index = self.prompt_index % count
        prompt = history.prompts[index].get("prompt", "") if index < len(history.prompts) else ""
        pairs = [
            ("epoch 0 (baseline)", Path(baseline[index]) if index < len(baseline) else None),
            (
                f"epoch {epoch}" if epoch is not None else "not trained yet",
                Path(current[index]) if index < len(current) else None,
            ),
        ]
        title = f"prompt {index + 1}/{count}: {prompt}"
        self.decode_samples(self.selected or "", title, pairs, epoch)

    @work(thread=True, exclusive=True, group="samples")
    def decode_samples(
        self, key: str, title: str, pairs: list[tuple[str, Path | None]], epoch: int | None
    ) -> None:
        """Decode and downscale the pictures; measure the cook hint for the shown epoch."""
        worker = get_current_worker()
        items = []
        for label, path in pairs:
            picture = load_thumbnail(path) if path is not None and self.images_mode != "none" else None
            items.append((label, path, picture))
            if worker.is_cancelled:
                return
        hint = None
        if epoch is not None:
            try:
                from kiln.engine.runs.cook import run_cook_hints

                found = run_cook_hints(Path(key), epochs=[epoch])
                hint = found[-1].summary() if found else None
            except Exception:  # a hint is a nicety: never let it break the screen
                hint = None
        if not worker.is_cancelled:
            self.post_message(SamplesLoaded(key, title, items, hint))

    def on_samples_loaded(self, message: SamplesLoaded) -> None:
        if message.key != self.selected:
            return
        self._cook_text = f"cook hint: {message.hint}" if message.hint else None
        self.query_one(SampleGrid).show(message.title, message.items)
        self.samples_shown_for = message.key
        if self.feed is not None:
            self.show_files(self.feed.history)

    def action_next_prompt(self) -> None:
        self.prompt_index += 1
        self.load_samples()

    def action_previous_epoch(self) -> None:
        if self.feed is None:
            return
        trained = sorted(epoch for epoch in self.feed.history.samples if epoch > 0)
        if not trained:
            return
        current = self.epoch_choice if self.epoch_choice in trained else trained[-1]
        position = trained.index(current)
        self.epoch_choice = trained[position - 1] if position > 0 else trained[-1]
        self.load_samples()

    # -- actions -----------------------------------------------------------------------------

    def _selected_info(self) -> Any | None:
        info = self.infos.get(self.selected or "")
        if info is None:
            self.notify("No run selected.", severity="warning")
        return info

    def action_refresh(self) -> None:
        self.refresh_list()
        if self.selected:
            self.load_run(self.selected)

    def action_cancel_run(self) -> None:
        info = self._selected_info()
        if info is None:
            return
        if info.readonly:
            self.notify("This run comes from another Kiln version: read-only here.", severity="warning")
            return
        if info.state not in LIVE_STATES:
            self.notify(f"{info.name} is {info.state}: nothing to cancel.", severity="warning")
            return

        def decide(yes: bool | None) -> None:
            if not yes:
                return
            from kiln.engine.runs.folders import cancel_run

            try:
                cancel_run(info.run_dir)
            except (KilnError, OSError) as exc:
                self.notify(str(exc), severity="error")
                return
            self.notify(f"Cancelling {info.name}: it stops after the current step and saves a LoRA.")

        self.app.push_screen(
            ConfirmScreen(
                f"Cancel {info.name}?",
                f"Step {info.step}/{info.total}. It stops after the current step, saves a LoRA and its "
                "resume state; r resumes it later.",
            ),
            decide,
        )

    def action_resume_run(self) -> None:
        info = self._selected_info()
        if info is None:
            return
        self.resume(info.run_dir)

    @work(thread=True, exclusive=True, group="run-action")
    def resume(self, run_dir: Path, force: bool = False) -> None:
        """Resume detached (checks the save and the config first, off the UI thread). A config
        edited since the save asks first, naming the changed keys; yes resumes as ``--force``."""
        from kiln.engine.runs.folders import changed_keys, check_resumable, resume_run

        try:
            if not force:
                save = check_resumable(run_dir, force=True)
                changed = changed_keys(run_dir, save)
                if changed:
                    self.app.call_from_thread(self._ask_force, run_dir, changed)
                    return
            resume_run(run_dir, detach=True, force=force)
        except (KilnError, OSError) as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.app.call_from_thread(self.notify, f"Resumed {run_dir.name} in the background.")
        self.app.call_from_thread(self.refresh_list)

    def _ask_force(self, run_dir: Path, changed: list[str]) -> None:
        def decide(yes: bool | None) -> None:
            if yes:
                self.resume(run_dir, force=True)

        self.app.push_screen(
            ConfirmScreen(
                f"Resume {run_dir.name} with the edited config?",
                f"config.toml changed since the last save: {', '.join(changed)}. Yes trains on with the "
                "new values (as `kiln resume --force`); no leaves the run as it is.",
            ),
            decide,
        )

    def action_open_config(self) -> None:
        info = self._selected_info()
        if info is None:
            return
        path = info.run_dir / "config.toml"
        if not path.is_file():
            self.notify(f"{path} does not exist.", severity="warning")
            return
        command = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        try:
            with self.app.suspend():
                subprocess.run([*shlex.split(command), str(path)], check=False)
        except OSError as exc:
            self.notify(f"Cannot run {command!r}: {exc}; set $EDITOR", severity="error")
            return
        except Exception as exc:
            self.notify(f"Cannot suspend here ({exc})", severity="error")
            return
        if info.state not in LIVE_STATES:
            self.notify(
                "A changed config applies when the run resumes (r): it names the changes and asks first."
            )

    def action_sweep_view(self) -> None:
        key = self.selected
        sweep_dir = Path(key).parent if key else None
        if key and sweep_dir is not None and not is_sweep_dir(sweep_dir):
            info = self.infos.get(key)
            name = info.name if info is not None else Path(key).name
            self.notify(
                f"{name} is not part of a sweep: select a run listed as sweep/name to compare its sweep.",
                severity="warning",
            )
            return
        if sweep_dir is None or not is_sweep_dir(sweep_dir):
            sweeps = self._sweep_dirs()
            if not sweeps:
                self.notify("No sweep here: `kiln sweep SWEEP.toml` runs one.", severity="warning")
                return
            sweep_dir = sweeps[0]
        from kiln.tui.screens.sweep import SweepScreen

        def follow(key: str | None) -> None:
            if key and key in self.infos:
                self.query_one(RunTable).move_to(key)
                self.select(key)

        self.app.push_screen(SweepScreen(sweep_dir, self.images_mode), follow)

    def _sweep_dirs(self) -> list[Path]:
        found: list[Path] = []
        for folder in self.folders:
            if folder.is_dir():
                found.extend(child for child in folder.iterdir() if child.is_dir() and is_sweep_dir(child))
        return sorted(found, key=lambda path: path.name, reverse=True)

    def action_new_run(self) -> None:
        from kiln.tui.screens.new_run import NewRunScreen, describe_settings, initial_base

        overrides, notes, source = self.plan_settings()
        base = initial_base(self.kiln.curation.store, [Path(key) for key in self.infos])
        preview = None
        try:
            preview = self._run_config(base or "preview", "preview", overrides)
            settings = describe_settings(preview, notes, source)
        except KilnError as exc:
            settings = [f"note: {exc}"]
        name = self.dataset_root.name
        steps = overrides.pop("train.max_steps", None)

        def start(request: Any) -> None:
            if request is not None:
                self.start_run(request, overrides)

        self.app.push_screen(NewRunScreen(base, name, steps, settings, config=preview), start)

    def plan_settings(self) -> tuple[dict[str, Any], list[str], str]:
        """The plan section's settings as config keys (empty when the plan was not opened)."""
        from kiln.engine.runs.newrun import plan_overrides

        inputs = self.kiln.plan_inputs()
        if inputs is None:
            return {}, [], "defaults (open the plan section, key 2, to set batch, epochs, LRs)"
        overrides, notes = plan_overrides(
            inputs.texts, precision=inputs.precision, no_upscale=inputs.no_upscale, run=inputs.run
        )
        return overrides, notes, "the plan section"

    def _run_config(self, base: str, name: str, overrides: dict[str, Any]) -> Any:
        from kiln.engine.runs.newrun import dataset_run_config

        return dataset_run_config(self.dataset_root, base, name, overrides, self.caption_extension)

    @work(thread=True, exclusive=True, group="run-action")
    def start_run(self, request: Any, overrides: dict[str, Any]) -> None:
        """Write the config and start the run detached (model and dataset checked first)."""
        from kiln.engine.models.loading import model_source
        from kiln.engine.runs.folders import start_detached
        from kiln.engine.runs.newrun import write_run_config
        from kiln.engine.runs.preflight import check_run

        settings = {**overrides, **getattr(request, "overrides", {})}
        if request.max_steps:
            settings["train.max_steps"] = request.max_steps
        try:
            config = self._run_config(request.base_model, request.name, settings)
            # Every refusal comes before the config file and the run folder are written.
            model_source(config.model.base, config.model.allow_pickle)
            check_run(config)
            path = write_run_config(self.dataset_root, config)
            run_dir = start_detached(path)
        except (KilnError, OSError) as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=10)
            return
        self.app.call_from_thread(self.notify, f"Started {run_dir.name} (config: {path})")
        self.app.call_from_thread(self._follow_new_run, str(run_dir))

    def _follow_new_run(self, key: str) -> None:
        self._pending_select = key
        self.refresh_list()


def _state_colour(state: str) -> str:
    return {
        "running": "green",
        "done": "blue",
        "failed": "red",
        "cancelled": "yellow",
        "stale": "magenta",
    }.get(state, "")
