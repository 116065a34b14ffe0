"""The Bases view (``b`` in the TEC section): the user's checkpoints side by side, least TEC first.

Folders and references are remembered in the catalog, so the view opens on the last look and
fills the table from the catalog at once (nothing already measured is read again); ctrl+r
looks again in a worker, measuring only new or changed checkpoints. ``s`` changes the order,
``enter`` closes the view and measures the base in full in the TEC section (the table holds
the headline figures only), ``u`` uses it as the dataset's base: the new-run form starts from
it, the plan from its family, the Captions section from its caption style, with a warning
when the dataset is captioned in the other style.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.engine.bases.catalog import VERDICT_NOTE, BaseEntry, Catalog, rank, scan_bases
from kiln.engine.errors import KilnError
from kiln.tui.form_keys import field_tab_bindings
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Label, Static
from textual.worker import get_current_worker

SORTS = ("tec", "name", "style")
VERDICT_STYLES = {"close to zero": "green", "drifting": "yellow", "corrupted": "bold red"}


@dataclass(frozen=True)
class FullReport:
    """What the view dismisses with for ``enter``: measure ``path`` against ``reference``."""

    path: str
    reference: str


class BasesScreen(ModalScreen[FullReport | None]):
    """The base catalog as a table over the TEC section."""

    DEFAULT_CSS = """
    BasesScreen { align: center middle; }
    BasesScreen > Vertical { width: 100%; height: 100%; background: $surface; padding: 0 1; }
    BasesScreen .form-row { height: 1; }
    BasesScreen .form-row Label { width: 12; color: $text-muted; }
    BasesScreen .form-row Input { width: 1fr; }
    BasesScreen #bases-status { height: auto; max-height: 3; }
    BasesScreen #bases-table { height: 1fr; }
    BasesScreen #bases-info { height: auto; max-height: 5; }
    """

    BINDINGS = [
        Binding(
            "ctrl+r", "scan", "Look", id="bases.scan", tooltip="Look through the folders (measures new ones)"
        ),
        Binding("s", "sort", "Sort", id="bases.sort", tooltip="Order by TEC, by name, or by caption style"),
        Binding("u", "use", "Use as base", id="bases.use", tooltip="Make this checkpoint the dataset's base"),
        Binding(
            "enter",
            "report",
            "Full report",
            id="bases.report",
            tooltip="Measure it in full in the TEC section",
        ),
        Binding("escape", "close", "Close", id="bases.close", tooltip="Back to the TEC section"),
        *field_tab_bindings("bases"),
    ]

    class Scanned(Message):
        def __init__(
            self, entries: list[BaseEntry] | None, notes: list[str], error: str | None = None
        ) -> None:
            super().__init__()
            self.entries = entries
            self.notes = notes
            self.error = error

    class Progress(Message):
        def __init__(self, line: str) -> None:
            super().__init__()
            self.line = line

    def __init__(self, catalog_file: Path | None = None, reference: str = "", options: Any = None) -> None:
        super().__init__()
        self.catalog_file = catalog_file
        self.options = options  # TEC's ProbeOptions (None: the built-in words)
        self.catalog = Catalog.load(catalog_file)
        last = self.catalog.last
        references = last.get("references", {}) if isinstance(last.get("references"), dict) else {}
        self.initial = {
            "folders": ", ".join(last.get("folders", [])) if isinstance(last.get("folders"), list) else "",
            "sd15": str(references.get("sd15") or reference),
            "sdxl": str(references.get("sdxl", "")),
        }
        self.entries: list[BaseEntry] = []
        self.sort = "tec"
        self.scanning = False

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text("Bases: your checkpoints, least text-encoder corruption first", style="bold"))
            for key, label, placeholder in (
                ("folders", "Folders", "model folders, comma-separated (e.g. ~/models, ~/more)"),
                ("sd15", "SD 1.5 ref", "vanilla SD 1.5 (v1-5-pruned-emaonly.safetensors)"),
                ("sdxl", "SDXL ref", "SDXL base 1.0 (optional)"),
            ):
                with Horizontal(classes="form-row"):
                    yield Label(label)
                    yield Input(self.initial[key], placeholder=placeholder, compact=True, id=f"bases-{key}")
            yield Static(id="bases-status")
            yield DataTable(id="bases-table", cursor_type="row", zebra_stripes=True)
            yield Static(id="bases-info")
            yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#bases-table", DataTable)
        table.add_columns("#", "base", "family", "TEC", "confused", "verdict", "captions", "hint")
        if self.initial["folders"]:
            self.action_scan()  # the catalog answers at once for everything it has measured
            table.focus()
        else:
            self.show_status(
                Text("Type the folders that hold your checkpoints and a reference, then ctrl+r.")
            )
            self.query_one("#bases-folders", Input).focus()

    # -- looking -------------------------------------------------------------------------------

    def action_scan(self) -> None:
        if self.scanning:
            return
        folders = [
            Path(part.strip()).expanduser() for part in self.value("folders").split(",") if part.strip()
        ]
        references = {
            family: Path(self.value(family)).expanduser() for family in ("sd15", "sdxl") if self.value(family)
        }
        if not folders:
            self.show_status(Text("✗ give the folders that hold your checkpoints", style="bold red"))
            return
        if not references:
            self.show_status(
                Text("✗ give a reference: vanilla SD 1.5 (and SDXL base for SDXL)", style="bold red")
            )
            return
        self.scanning = True
        self.show_status(Text("looking through the folders…", style="dim"))
        self.scan_worker(folders, references)

    def value(self, key: str) -> str:
        return self.query_one(f"#bases-{key}", Input).value.strip()

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.action_scan()
        self.query_one("#bases-table").focus()

    @work(thread=True, exclusive=True, group="bases")
    def scan_worker(self, folders: list[Path], references: dict[str, Path]) -> None:
        worker = get_current_worker()

        def progress(line: str) -> None:
            if worker.is_cancelled:
                raise KilnError("cancelled")
            self.post_message(self.Progress(line))

        try:
            entries, notes = scan_bases(folders, references, self.catalog, self.options, progress=progress)
        except (KilnError, OSError) as exc:
            self.post_message(self.Scanned(None, [], str(exc)))
            return
        self.post_message(self.Scanned(entries, notes))

    def on_bases_screen_progress(self, message: Progress) -> None:
        self.show_status(Text(message.line, style="dim"))

    def on_bases_screen_scanned(self, message: Scanned) -> None:
        self.scanning = False
        if message.error is not None or message.entries is None:
            self.show_status(Text(f"✗ {message.error}", style="bold red"))
            return
        self.entries = message.entries
        self.fill()
        status = Text(f"{len(self.entries)} checkpoint(s)", style="bold")
        status.append(f" · {VERDICT_NOTE}", style="dim")
        for note in message.notes[:2]:
            status.append(f"\n⚠ {note}", style="yellow")
        self.show_status(status)

    def show_status(self, text: Text) -> None:
        self.query_one("#bases-status", Static).update(text)

    # -- the table -----------------------------------------------------------------------------

    def ordered(self) -> list[BaseEntry]:
        if self.sort == "name":
            return sorted(self.entries, key=lambda entry: entry.checkpoint.title.lower())
        if self.sort == "style":
            return sorted(rank(self.entries), key=lambda entry: entry.style or "~")
        return rank(self.entries)

    def fill(self) -> None:
        table = self.query_one("#bases-table", DataTable)
        cursor = self.current.sha256 if self.current is not None else None
        table.clear()
        for number, entry in enumerate(self.ordered(), start=1):
            m = entry.measurement
            verdict = (
                Text(m.verdict, style=VERDICT_STYLES[m.verdict])
                if m
                else Text(entry.error or "", style="dim")
            )
            hint = (
                f"{m.hint.style} {m.hint.tag_drift:.1f}/{m.hint.sentence_drift:.1f}" if m and m.hint else ""
            )
            table.add_row(
                str(number),
                entry.checkpoint.title,
                "SDXL" if entry.checkpoint.family == "sdxl" else "SD 1.x",
                f"{m.score:.2f}" if m else "",
                f"{m.confused}/{m.words}" if m else "",
                verdict,
                f"{entry.style} ({entry.style_source})" if entry.style else "?",
                hint,
                key=f"{entry.sha256}:{entry.checkpoint.path}",
            )
        if cursor is not None:
            for index, entry in enumerate(self.ordered()):
                if entry.sha256 == cursor:
                    table.move_cursor(row=index)
        self.show_info()

    @property
    def current(self) -> BaseEntry | None:
        ordered = self.ordered()
        row = self.query_one("#bases-table", DataTable).cursor_row
        return ordered[row] if 0 <= row < len(ordered) else None

    @on(DataTable.RowHighlighted, "#bases-table")
    def show_info(self) -> None:
        entry = self.current
        info = Text()
        if entry is not None:
            c = entry.checkpoint
            info.append(f"{c.path}", style="bold")
            info.append(f"\n{c.kind} · {c.prediction} · AutoV2 {entry.autov2} · {c.size / 1e9:.2f} GB")
            if entry.measurement and entry.measurement.top_confused:
                pairs = ", ".join(f"{a} → {b}" for a, b in entry.measurement.top_confused)
                info.append(f"\nconfused: {pairs}")
            if entry.style_note:
                info.append(f"\ncaptions: {entry.style_note}", style="dim")
        self.query_one("#bases-info", Static).update(info)

    def action_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self.fill()
        self.notify(f"Sorted by {self.sort}")

    # -- acting on a base ----------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # While typing, s, u and enter belong to the field.
        return not (action in ("use", "report", "sort") and isinstance(self.focused, Input))

    @on(DataTable.RowSelected, "#bases-table")
    def row_selected(self) -> None:
        self.action_report()  # the table takes enter itself

    def action_report(self) -> None:
        entry = self.current
        if entry is None:
            return
        reference = self.value("sdxl" if entry.checkpoint.family == "sdxl" else "sd15")
        self.dismiss(FullReport(str(entry.checkpoint.path), reference))

    def action_use(self) -> None:
        entry = self.current
        if entry is None:
            return
        kiln: Any = self.app
        warning = kiln.use_base(str(entry.checkpoint.path), entry.checkpoint.family, entry.style)
        line = Text(f"✓ {entry.checkpoint.title} is this dataset's base", style="bold green")
        line.append(
            " (new run, plan family" + (", caption style)" if entry.style in ("blip", "wd14") else ")")
        )
        if warning:
            line.append(f"\n⚠ {warning}", style="yellow")
        self.show_status(line)

    def action_close(self) -> None:
        self.dismiss(None)
