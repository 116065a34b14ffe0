"""The lint pane: what in the captions works against the method, each finding one key from its image."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path

from kiln.engine.caption.lint import Finding, LintReport, lint_dataset
from kiln.engine.dataset.scan import Dataset
from kiln.engine.dataset.store import Store
from kiln.tui.screens.section import worker_error_text
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Label, Static
from textual.worker import get_current_worker

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow"}


def shown_fix(fix: str, root: Path) -> str:
    """A finding's fix with the dataset path written relative to where Kiln was started.

    The fixes are ``kiln ...`` commands naming the dataset by its absolute path; relative to
    the working directory they are shorter and still paste into the same shell.
    """
    quoted = shlex.quote(str(root))
    try:
        relative = os.path.relpath(root)
    except ValueError:  # another drive (Windows)
        return fix
    if relative.startswith(os.pardir + os.sep + os.pardir) or len(relative) >= len(str(root)):
        return fix
    return fix.replace(quoted, shlex.quote(relative))


class LintPane(Vertical):
    """Findings in a table; the one under the cursor in full below it; enter jumps to its image."""

    class Linted(Message):
        """A lint report computed in a worker."""

        def __init__(self, report: LintReport | None, error: str | None = None) -> None:
            super().__init__()
            self.report = report
            self.error = error

    class Jump(Message):
        """The user chose a finding: show its image in the dataset section (bubbles up)."""

        def __init__(self, finding: Finding) -> None:
            super().__init__()
            self.finding = finding

    def __init__(self, root: Path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = root
        self.report: LintReport | None = None
        self._by_id: dict[str, Finding] = {}

    def compose(self) -> ComposeResult:
        with Horizontal(classes="form-row"):
            yield Label("Trigger", classes="label")
            yield Input(
                placeholder="blank: inferred per concept from its captions", compact=True, id="lint-trigger"
            )
        yield Static("linting …", id="lint-summary")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="findings")
        yield Static("", id="finding-detail")

    def on_mount(self) -> None:
        table = self.findings_table
        table.add_column("rule", width=17, key="rule")
        table.add_column("file", width=24, key="file")
        table.add_column("fix", key="fix")

    @property
    def findings_table(self) -> DataTable:
        """The findings, one row each."""
        return self.query_one("#findings", DataTable)

    @property
    def trigger(self) -> str | None:
        """The trigger typed by the user, or None to infer one per concept."""
        text = " ".join(self.query_one("#lint-trigger", Input).value.split())
        return text or None

    def refresh_lint(
        self,
        dataset: Dataset,
        store: Store,
        include_excluded: bool,
        keep: Callable[[Finding], bool] | None = None,
    ) -> None:
        """Lint the captions again (in a worker), listing only the findings ``keep`` accepts."""
        self.lint(dataset, store, include_excluded, self.trigger, keep)

    @work(thread=True, exclusive=True, group="lint")
    def lint(
        self,
        dataset: Dataset,
        store: Store,
        include_excluded: bool,
        trigger: str | None,
        keep: Callable[[Finding], bool] | None,
    ) -> None:
        """Run the lint rules off the UI thread."""
        worker = get_current_worker()
        try:
            report = lint_dataset(dataset, store, trigger=trigger, include_excluded=include_excluded)
            if keep is not None:
                report.findings = [finding for finding in report.findings if keep(finding)]
        except Exception as exc:  # a worker error must never take the workbench down
            self.post_message(self.Linted(None, worker_error_text(exc)))
            return
        if not worker.is_cancelled:
            self.post_message(self.Linted(report))

    @on(Input.Submitted, "#lint-trigger")
    def trigger_submitted(self) -> None:
        self.findings_table.focus()
        self.post_message(self.TriggerChanged())

    class TriggerChanged(Message):
        """The trigger field was submitted: lint again (bubbles up to the screen)."""

    def on_lint_pane_linted(self, event: Linted) -> None:
        event.stop()
        if event.report is None:
            self.query_one("#lint-summary", Static).update(Text(f"✗ cannot lint: {event.error}", style="red"))
            return
        report = self.report = event.report
        table = self.findings_table
        keep = self.current_finding()
        table.clear()
        self._by_id = {}
        for finding in report.findings:
            self._by_id[finding.id] = finding
            table.add_row(
                Text(finding.rule, style=SEVERITY_STYLE[finding.severity]),
                finding.file,
                Text(shown_fix(finding.fix, self.root), style="dim"),
                key=finding.id,
            )
        if keep is not None and keep.id in self._by_id:
            table.move_cursor(row=table.get_row_index(keep.id), animate=False)
        self.query_one("#lint-summary", Static).update(self.summary(report))
        self.show_detail()

    @staticmethod
    def summary(report: LintReport) -> Text:
        """One line: findings by severity, the triggers, the token figures."""
        errors = sum(1 for finding in report.findings if finding.severity == "error")
        warnings = len(report.findings) - errors
        if not report.findings:
            text = Text(f"✓ no findings in {report.images} images", style="green")
        else:
            text = Text(f"{_plural(len(report.findings), 'finding')} in {report.images} images: ")
            text.append(_plural(errors, "error"), style="bold red" if errors else "")
            text.append(f", {_plural(warnings, 'warning')}", style="yellow" if warnings else "")
        words = [
            f"{concept}: {trigger.word}" for concept, trigger in sorted(report.triggers.items()) if trigger
        ]
        if words:
            text.append(" · trigger " + ", ".join(words), style="dim")
        if report.tokens_available and report.max_tokens is not None:
            text.append(f" · longest {report.max_tokens}/75 tokens", style="dim")
        elif not report.tokens_available:
            text.append(" · token counts unavailable", style="dim")
        return text

    def current_finding(self) -> Finding | None:
        """The finding under the cursor."""
        table = self.findings_table
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:
            return None
        return self._by_id.get(str(key))

    @on(DataTable.RowHighlighted, "#findings")
    def show_detail(self) -> None:
        """The whole finding under the cursor: id, what is wrong, the fix."""
        detail = self.query_one("#finding-detail", Static)
        finding = self.current_finding()
        if finding is None:
            detail.update("")
            return
        text = Text(finding.id, style="bold")
        text.append(f"\n{finding.message}")
        text.append("\nfix: ", style="dim")
        text.append(shown_fix(finding.fix, self.root))
        detail.update(text)

    @on(DataTable.RowSelected, "#findings")
    def finding_chosen(self) -> None:
        finding = self.current_finding()
        if finding is not None:
            self.post_message(self.Jump(finding))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
