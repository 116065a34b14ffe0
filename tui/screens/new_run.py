"""The "start a run" form: base model, name and step cap, over the dataset and the plan's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static


@dataclass(frozen=True)
class NewRunRequest:
    """What the form was filled with."""

    base_model: str
    name: str
    max_steps: int | None


class NewRunScreen(ModalScreen[NewRunRequest | None]):
    """Asks for what a run needs beyond the dataset and the plan; dismisses with a request or None."""

    DEFAULT_CSS = """
    NewRunScreen {
        align: center middle;
    }
    NewRunScreen > Vertical {
        width: 84;
        max-width: 95%;
        height: auto;
        max-height: 95%;
        border: thick $primary;
        background: $surface;
        padding: 1 2;
    }
    NewRunScreen Horizontal {
        height: 3;
    }
    NewRunScreen Label {
        width: 14;
        padding: 1 0 0 0;
    }
    NewRunScreen Input {
        width: 1fr;
    }
    NewRunScreen #settings {
        color: $text-muted;
        margin: 1 0 0 0;
    }
    NewRunScreen #problem {
        color: $error;
        height: auto;
    }
    NewRunScreen .keys {
        color: $text-muted;
        margin-top: 1;
    }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="new_run.cancel", tooltip="Close without starting a run"),
        Binding(
            "ctrl+s", "submit", "Start", id="new_run.start", tooltip="Write the config and start the run"
        ),
    ]

    def __init__(self, base_model: str, name: str, max_steps: int | None, settings: list[str]) -> None:
        super().__init__()
        self.base_model = base_model
        self.run_name = name
        self.max_steps = max_steps
        self.settings = settings

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("[b]Start a run[/b] on this dataset (detached: it goes on when Kiln quits)")
            with Horizontal():
                yield Label("base model")
                yield Input(self.base_model, placeholder="diffusers folder or SD 1.5 .safetensors", id="base")
            with Horizontal():
                yield Label("name")
                yield Input(self.run_name, id="name")
            with Horizontal():
                yield Label("max steps")
                yield Input(
                    str(self.max_steps or ""), placeholder="empty: the plan's epochs in full", id="steps"
                )
            yield Static("\n".join(escape(line) for line in self.settings), id="settings")
            yield Static("", id="problem")
            yield Static("[b]enter[/b] / [b]ctrl+s[/b] start   [b]esc[/b] cancel", classes="keys")

    def on_mount(self) -> None:
        first = "#base" if not self.base_model else "#name"
        self.query_one(first, Input).focus()

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.action_submit()

    def action_submit(self) -> None:
        base = self.query_one("#base", Input).value.strip()
        name = self.query_one("#name", Input).value.strip()
        steps_text = self.query_one("#steps", Input).value.strip()
        problem = self.query_one("#problem", Static)
        if not base:
            problem.update("Give the base model: a diffusers folder or an SD 1.5 .safetensors file.")
            self.query_one("#base", Input).focus()
            return
        if not name:
            problem.update("Give the run a name (letters, digits, - or _).")
            self.query_one("#name", Input).focus()
            return
        steps: int | None = None
        if steps_text:
            try:
                steps = int(steps_text)
            except ValueError:
                steps = 0
            if steps < 1:
                problem.update("Max steps: a whole number from 1 up, or empty for the whole plan.")
                self.query_one("#steps", Input).focus()
                return
        self.dismiss(NewRunRequest(base_model=base, name=name, max_steps=steps))

    def action_cancel(self) -> None:
        self.dismiss(None)


def describe_settings(config: Any, notes: list[str], source: str) -> list[str]:
    """Lines for the form: what the run will use, and where the settings came from."""
    train, data = config.train, config.dataset
    lines = [
        f"dataset {data.path}  ·  resolution {data.resolution}  ·  settings from {source}",
        f"batch {train.batch_size}  ·  epochs {train.epochs}  ·  U-Net LR {train.unet_lr:g}  ·  "
        f"text-encoder LR {config.text_encoder_lr:g}  ·  {train.precision}",
        f"{len(config.sample.prompts)} sample prompt(s) from the captions; latents cached on disk",
    ]
    lines.extend(f"note: {note}" for note in notes)
    from kiln.engine.runs.newrun import nvidia_gpu_visible

    if train.precision == "fp16" and not nvidia_gpu_visible():
        lines.append("note: no NVIDIA GPU visible here and fp16 needs one: pick bf16 or fp32 in the plan (2)")
    return lines
