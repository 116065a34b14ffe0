"""The reg set's own balance under the dataset's gauge: regularisation images are not training
images, so their white/black share is shown apart and never enters the gauge's DSB.

The reg folder is the one typed in the plan section (kept with the plan's settings); the
line measures it in a worker, uncached (nothing is written into the reg folder), and hides
itself when no reg folder is set.
"""

from __future__ import annotations

from pathlib import Path

from kiln.engine.curate import Curation
from kiln.engine.plan.saved import load_plan_settings
from rich.markup import escape
from textual import work
from textual.widgets import Static
from textual.worker import get_current_worker


class RegLine(Static):
    """``Reg set (not in this DSB): 20 class images in /data/reg · 43%W | 57%B  mediocre``."""

    DEFAULT_CSS = """
    RegLine {
        height: auto;
        padding: 0 1;
        color: $text-muted;
    }
    """

    def __init__(self, curation: Curation, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.curation = curation
        self.shown_for: str | None = None

    def on_mount(self) -> None:
        self.follow_settings()

    def follow_settings(self) -> None:
        """Measure the reg folder the plan's settings name (again only when it changed)."""
        try:
            value = load_plan_settings(self.curation.store).get("reg")
        except Exception:  # a locked or damaged store: no reg line rather than no screen
            value = None
        path = value.strip() if isinstance(value, str) else ""
        self.display = bool(path)
        if not path or path == self.shown_for:
            return
        self.shown_for = path
        self.update(f"Reg set (not in this DSB): measuring {escape(path)}…")
        self.measure(path)

    @work(thread=True, exclusive=True, group="reg-line")
    def measure(self, path: str) -> None:
        """Measure the class images' shares off the UI thread."""
        from kiln.engine.plan.reg import reg_tones

        worker = get_current_worker()
        folder = Path(path).expanduser()
        if not folder.is_dir():
            text = f"Reg set: {escape(path)} is not a folder (set it in the plan section)"
        else:
            try:
                count, summary = reg_tones(folder)
            except Exception as exc:  # an unreadable folder must not take the screen down
                text = f"Reg set: cannot read {escape(path)} ({escape(str(exc))})"
            else:
                balance = escape(summary.label()) if summary.images else "no measurable image"
                text = f"Reg set (not in this DSB): {count} class image(s) in {escape(path)} · {balance}"
        if not worker.is_cancelled:
            self.app.call_from_thread(self.update, text)
