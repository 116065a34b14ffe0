"""The "start a run" form: base model, name and step cap, over the dataset and the plan's settings."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.engine.dataset.store import Store
from kiln.engine.train.config import OPTIMIZERS
from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Select, Static
from textual.worker import get_current_worker


@dataclass(frozen=True)
class NewRunRequest:
    """What the form was filled with: the run's name, base and step cap, and config keys."""

    base_model: str
    name: str
    max_steps: int | None
    overrides: dict[str, Any] = field(default_factory=dict)


# (input id, label, config key, kind): the settings a CPU or small run needs, as form fields.
TEXT_FIELDS: tuple[tuple[str, str, str, type], ...] = (
    ("min_bucket", "min bucket", "dataset.min_bucket_reso", int),
    ("rank", "rank", "network.rank", int),
    ("alpha", "alpha", "network.alpha", float),
    ("unet_lr", "U-Net LR", "train.unet_lr", float),
    ("te_lr", "TE LR", "train.text_encoder_lr", float),
    ("sample_steps", "sample steps", "sample.steps", int),
)
MODULES = (
    ("LoRA", "lora"),
    ("LoCon (+3x3 convs)", "locon"),
    ("LoHa (LyCORIS)", "loha"),
    ("LoKr (LyCORIS)", "lokr"),
    ("DoRA (LyCORIS)", "dora"),
)


def network_choice(kind: Any, conv_rank: int) -> str:
    """The form's network choice for a config: its type, a plain LoRA with conv layers as LoCon."""
    if kind in {value for _, value in MODULES} and kind != "lora":
        return str(kind)
    return "locon" if conv_rank else "lora"


def precision_choices(gpu: bool) -> list[str]:
    """The precisions this machine can train in: fp16 only with an NVIDIA GPU."""
    return ["fp16", "bf16", "fp32"] if gpu else ["fp32", "bf16"]


def initial_base(store: Store, run_dirs: Sequence[Path]) -> str:
    """The base the form starts from: the one chosen in the Bases view, else the newest run's,
    else ``$KILN_BASE_MODEL`` (empty when none)."""
    from kiln.engine.bases.chosen import load_chosen_base
    from kiln.engine.runs.newrun import latest_base_model

    chosen = load_chosen_base(store)
    return (
        (chosen.path if chosen else "")
        or latest_base_model(run_dirs)
        or os.environ.get("KILN_BASE_MODEL", "")
    )


class NewRunScreen(ModalScreen[NewRunRequest | None]):
    """Asks for what a run needs beyond the dataset and the plan; dismisses with a request or None."""

    DEFAULT_CSS = """
    NewRunScreen {
        align: center middle;
    }
    NewRunScreen > VerticalScroll {
        width: 84;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: thick $primary;
        background: $surface;
        padding: 0 1;
    }
    NewRunScreen Horizontal {
        height: 1;
        margin: 0 0 1 0;
    }
    NewRunScreen Label {
        width: 13;
        padding: 0 1 0 0;
    }
    NewRunScreen Input {
        width: 1fr;
    }
    NewRunScreen Select {
        width: 1fr;
    }
    NewRunScreen #family {
        width: auto;
        padding: 0 0 0 1;
        color: $accent;
    }
    NewRunScreen #settings {
        color: $text-muted;
    }
    NewRunScreen #problem {
        color: $error;
        height: auto;
    }
    NewRunScreen .keys {
        color: $text-muted;
    }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="new_run.cancel", tooltip="Close without starting a run"),
        Binding(
            "ctrl+s", "submit", "Start", id="new_run.start", tooltip="Write the config and start the run"
        ),
    ]

    def __init__(
        self,
        base_model: str,
        name: str,
        max_steps: int | None,
        settings: list[str],
        config: Any = None,
        gpu: bool | None = None,
    ) -> None:
        super().__init__()
        self.base_model = base_model
        self.run_name = name
        self.max_steps = max_steps
        self.settings = settings
        self.config = config
        if gpu is None:
            from kiln.engine.nvidia import nvidia_gpu_visible

            gpu = nvidia_gpu_visible()
        self.gpu = gpu

    def _value(self, key: str) -> Any:
        if self.config is None:
            return None
        section, _, name = key.partition(".")
        return getattr(getattr(self.config, section), name)

    def compose(self) -> ComposeResult:
        precisions = precision_choices(self.gpu)
        precision = self._value("train.precision")
        if precision not in precisions:  # fp16 on a CPU: never offered
            precision = precisions[0]
        conv = self._value("network.conv_rank") or 0
        optimizer = self._value("train.optimizer") or "adamw"
        with VerticalScroll():
            yield Static("[b]Start a run[/b] on this dataset (detached: it goes on when Kiln quits)")
            # Above the fields: a refusal stays in sight on a 24-line terminal.
            yield Static("", id="problem")
            with Horizontal():
                yield Label("base model")
                yield Input(
                    self.base_model,
                    placeholder="diffusers folder or SD 1.5 / SDXL .safetensors",
                    id="base",
                    compact=True,
                )
                # The family read from the model's files as the path is typed (SD 1.5 / SDXL).
                yield Static("", id="family")
            with Horizontal():
                yield Label("name")
                yield Input(self.run_name, id="name", compact=True)
                yield Label("max steps")
                yield Input(
                    str(self.max_steps or ""), placeholder="empty: all epochs", id="steps", compact=True
                )
            with Horizontal():
                yield Label("precision")
                yield Select(
                    [(p, p) for p in precisions],
                    value=precision,
                    allow_blank=False,
                    id="precision",
                    compact=True,
                )
                yield Label("optimizer")
                yield Select(
                    [(o, o) for o in OPTIMIZERS],
                    value=optimizer,
                    allow_blank=False,
                    id="optimizer",
                    compact=True,
                )
            with Horizontal():
                yield Label("module")
                yield Select(
                    [(label, value) for label, value in MODULES],
                    value=network_choice(self._value("network.type"), conv),
                    allow_blank=False,
                    id="module",
                    compact=True,
                )
                yield from self._text_field(TEXT_FIELDS[0])
            for pair in (TEXT_FIELDS[1:3], TEXT_FIELDS[3:5]):
                with Horizontal():
                    for entry in pair:
                        yield from self._text_field(entry)
            with Horizontal():
                yield from self._text_field(TEXT_FIELDS[5])
            yield Static("\n".join(escape(line) for line in self.settings), id="settings")
            yield Static("[b]enter[/b] / [b]ctrl+s[/b] start   [b]esc[/b] cancel", classes="keys")

    def _text_field(self, entry: tuple[str, str, str, type]) -> ComposeResult:
        ident, label, key, _ = entry
        value = self._value(key)
        if key == "train.text_encoder_lr" and self.config is not None:
            value = self.config.text_encoder_lr
        text = "" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))
        placeholder = "0: by device" if key == "sample.steps" else ""
        yield Label(label)
        yield Input(text, id=ident, placeholder=placeholder, compact=True)

    def on_mount(self) -> None:
        first = "#base" if not self.base_model else "#name"
        self.query_one(first, Input).focus()
        self.detect_family(self.base_model)

    @on(Input.Changed, "#base")
    def base_changed(self, event: Input.Changed) -> None:
        self.detect_family(event.value)

    @work(thread=True, exclusive=True, group="new-run-family")
    def detect_family(self, base: str) -> None:
        """Read the model's family from its files (a header, off the UI thread: it may be on a
        slow disk) and show it beside the path."""
        from kiln.engine.errors import KilnError
        from kiln.engine.models.family import detect_family

        text = ""
        path = Path(base.strip()).expanduser() if base.strip() else None
        if path is not None and path.exists():
            try:
                text = detect_family(path).title
            except (KilnError, OSError):
                text = ""
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_family, text)

    def _show_family(self, text: str) -> None:
        if self.is_attached:
            self.query_one("#family", Static).update(text)

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.action_submit()

    def _fail(self, message: str, widget: str) -> None:
        self.query_one("#problem", Static).update(escape(message))
        self.query_one(widget).focus()

    def action_submit(self) -> None:
        base = self.query_one("#base", Input).value.strip()
        name = self.query_one("#name", Input).value.strip()
        steps_text = self.query_one("#steps", Input).value.strip()
        if not base:
            self._fail(
                "Give the base model: a diffusers folder or an SD 1.5 / SDXL .safetensors file.", "#base"
            )
            return
        from kiln.engine.errors import KilnError
        from kiln.engine.models.loading import model_source

        try:
            model_source(base)  # before any config is written: a missing or wrong path says so here
        except KilnError as exc:
            self._fail(str(exc), "#base")
            return
        if not name:
            self._fail("Give the run a name (letters, digits, - or _).", "#name")
            return
        steps: int | None = None
        if steps_text:
            try:
                steps = int(steps_text)
            except ValueError:
                steps = 0
            if steps < 1:
                self._fail("Max steps: a whole number from 1 up, or empty for the whole plan.", "#steps")
                return
        overrides: dict[str, Any] = {
            "train.precision": self.query_one("#precision", Select).value,
            "train.optimizer": self.query_one("#optimizer", Select).value,
        }
        for ident, label, key, kind in TEXT_FIELDS:
            text = self.query_one(f"#{ident}", Input).value.strip()
            if not text:
                continue
            try:
                overrides[key] = kind(text)
            except ValueError:
                self._fail(
                    f"{label}: {text!r} is not a {'whole number' if kind is int else 'number'}.", f"#{ident}"
                )
                return
        rank = overrides.get("network.rank", self._value("network.rank") or 16)
        module = self.query_one("#module", Select).value
        overrides["network.type"] = module
        if module == "locon":
            overrides["network.conv_rank"] = self._value("network.conv_rank") or max(1, int(rank) // 2)
        elif module == "lora":
            overrides["network.conv_rank"] = 0
        from kiln.engine.models.family import resolve_family
        from kiln.engine.train.config import TrainConfig, apply_overrides, check_family_settings

        try:  # the same checks as the config file, named by key, before anything is written
            checked = apply_overrides(self.config or TrainConfig(), overrides, source="new run")
            # The family's own limits (SDXL: clip skip 1, bucket steps of 32), read from its files.
            check_family_settings(checked, resolve_family(base, checked.model.family), source="new run")
        except KilnError as exc:
            self._fail(str(exc), "#base")
            return
        self.dismiss(NewRunRequest(base_model=base, name=name, max_steps=steps, overrides=overrides))

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
    from kiln.engine.nvidia import nvidia_gpu_visible

    if train.precision == "fp16" and not nvidia_gpu_visible():
        lines.append("note: no NVIDIA GPU visible here and fp16 needs one: fp16 is not offered below")
    return lines
