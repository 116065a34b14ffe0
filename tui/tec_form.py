"""The TEC form read into a measurement: paths checked, options parsed, a message per bad field.

No Textual here, and no torch: the TEC screen hands over what the form holds and gets back a
:class:`TecJob` or a message for each field at fault, so nothing a user types can raise and
nothing heavy loads before the worker starts. :func:`measure` is what that worker runs; it
is the only place the meter (and so torch) is imported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from kiln.engine.errors import KilnError
from kiln.engine.runs.tec_series import TecRun
from kiln.engine.tec.checks import Weights, inspect_weights
from kiln.engine.tec.vocab import BUILTIN, read_words

if TYPE_CHECKING:
    from kiln.engine.tec.measures import TecReport
    from kiln.engine.tec.meter import EpochTec

Mode = Literal["checkpoint", "run"]
JobKind = Literal["checkpoint", "lora", "run"]
MODES: tuple[Mode, ...] = ("checkpoint", "run")
POSITIONS = ("word", "eos")
DEVICES = ("cpu", "cuda")
ProgressFn = Callable[[str, int, int], None]
# The fields that can carry a message, in form order.
FIELDS = ("candidate", "reference", "run", "base", "scale", "words")


@dataclass(frozen=True)
class TecInputs:
    """Everything the form holds, as typed.

    Attributes:
        mode: ``checkpoint`` (candidate against reference) or ``run`` (each saved epoch).
        candidate: The checkpoint or LoRA to measure.
        reference: What it is compared with (a LoRA candidate's base).
        run: The run picked in the list (run mode).
        base: The run's base model, typed; '' takes the run config's ``model.base``.
        scale: The LoRA weight to merge at.
        words: A words file; '' for the built-in list.
        full_vocab: Probe every token instead.
        position: ``word`` or ``eos``.
        device: ``cpu`` or ``cuda``.
        allow_pickle: Accept pickled weights the user trusts.
    """

    mode: Mode = "checkpoint"
    candidate: str = ""
    reference: str = ""
    run: TecRun | None = None
    base: str = ""
    scale: str = "1.0"
    words: str = ""
    full_vocab: bool = False
    position: str = "word"
    device: str = "cpu"
    allow_pickle: bool = False


@dataclass(frozen=True)
class TecJob:
    """One measurement, checked and ready for the worker.

    Attributes:
        kind: ``checkpoint`` (two checkpoints), ``lora`` (a LoRA merged into its base) or
            ``run`` (each saved LoRA of a run).
        candidate: The checkpoint or LoRA measured (None for a run).
        reference: The reference checkpoint, or the LoRA's base (None for a run).
        run: The run folder (run kind).
        base: The run's base when typed (None: its config's).
        loras: The run's LoRA files, for the progress stages.
        scale: LoRA weight.
        words: Probe words (None: the built-in list).
        words_source: What the words are called in the report.
        full_vocab: Probe every token.
        position: ``word`` or ``eos``.
        device: ``cpu`` or ``cuda``.
        allow_pickle: Accept pickled weights (None: a run's config decides).
    """

    kind: JobKind
    candidate: Path | None = None
    reference: Path | None = None
    run: Path | None = None
    base: Path | None = None
    loras: tuple[Path, ...] = ()
    scale: float = 1.0
    words: tuple[str, ...] | None = None
    words_source: str = BUILTIN
    full_vocab: bool = False
    position: str = "word"
    device: str = "cpu"
    allow_pickle: bool | None = False

    def stages(self) -> list[str]:
        """The progress stages the meter reports, in order: the reference, then each candidate."""
        if self.kind == "run":
            return ["reference", *(path.name for path in self.loras)]
        return ["reference", "candidate"]


@dataclass(frozen=True)
class TecCheck:
    """The form checked: a job, or why not.

    Attributes:
        job: The measurement to run, when every field is fine.
        errors: A one-line message per field at fault (``candidate``, ``reference``, ``run``,
            ``base``, ``scale``, ``words``).
        notes: Information for fields that are fine (``candidate``: "a LoRA: merged into ...").
    """

    job: TecJob | None = None
    errors: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TecResult:
    """What a finished measurement gives: one report, or one per epoch of a run."""

    job: TecJob
    report: TecReport | None = None
    series: tuple[EpochTec, ...] = ()


def check_inputs(inputs: TecInputs) -> TecCheck:
    """Check every field (paths by name and header only) and build the job if all are fine."""
    errors: dict[str, str] = {}
    notes: dict[str, str] = {}
    scale = _scale(inputs.scale, errors)
    words, source = _words(inputs, errors)
    common = {
        "scale": scale if scale is not None else 1.0,
        "words": words,
        "words_source": source,
        "full_vocab": inputs.full_vocab,
        "position": inputs.position if inputs.position in POSITIONS else "word",
        "device": inputs.device if inputs.device in DEVICES else "cpu",
    }
    job: TecJob | None
    if inputs.mode == "run":
        job = _run_job(inputs, errors, notes, common)
    else:
        job = _checkpoint_job(inputs, errors, notes, common)
    ordered = {key: errors[key] for key in FIELDS if key in errors}
    return TecCheck(job if not errors else None, ordered, notes)


def _checkpoint_job(inputs: TecInputs, errors: dict, notes: dict, common: dict) -> TecJob | None:
    candidate = _weights(inputs.candidate, "candidate", inputs.allow_pickle, errors)
    reference = _weights(inputs.reference, "reference", inputs.allow_pickle, errors)
    kind: JobKind = "checkpoint"
    if candidate is not None and candidate.kind == "lora":
        kind = "lora"
        # The note also tells the screen to show the scale field (an error, if any, shows instead).
        notes["candidate"] = "a LoRA: merged into the reference (its base) at the scale below"
        if not candidate.text_encoder:
            errors["candidate"] = (
                "this LoRA holds no text-encoder weights (U-Net only): it adds no TEC to measure"
            )
    if kind == "checkpoint":
        # Two checkpoints merge nothing: the (hidden) scale field has no say.
        errors.pop("scale", None)
    if reference is not None and reference.kind == "lora":
        errors["reference"] = "a LoRA, not a checkpoint: pick the model to compare with (a LoRA's base)"
    if candidate is None or reference is None or errors:
        return None
    return TecJob(
        kind,
        candidate=candidate.path,
        reference=reference.path,
        allow_pickle=inputs.allow_pickle,
        **common,
    )


def _run_job(inputs: TecInputs, errors: dict, notes: dict, common: dict) -> TecJob | None:
    run = inputs.run
    if run is None:
        errors["run"] = "no run picked: train one first (kiln train), or pick one in the list"
        return None
    if run.problem:
        errors["run"] = run.problem
    allow = inputs.allow_pickle or run.allow_pickle
    base: Weights | None = None
    if inputs.base.strip():
        base = _weights(inputs.base, "base", allow, errors)
    elif run.base_problem:
        errors["base"] = f"{run.base_problem}: type the base model the run trained on"
    else:
        base = _weights(run.base, "base", allow, errors)
        if base is not None:
            notes["base"] = f"from the run's config: {short_path(run.base)}"
    if base is not None and base.kind == "lora":
        errors["base"] = "a LoRA, not a checkpoint: type the model the run trained on"
    if errors:
        return None
    return TecJob(
        "run",
        run=run.path,
        base=Path(inputs.base.strip()).expanduser() if inputs.base.strip() else None,
        loras=run.loras,
        allow_pickle=True if inputs.allow_pickle else None,
        **common,
    )


def _weights(text: str, key: str, allow_pickle: bool, errors: dict[str, str]) -> Weights | None:
    text = text.strip()
    if not text:
        errors[key] = {
            "candidate": "type the checkpoint (diffusers folder or .safetensors) or LoRA to measure",
            "reference": "type the checkpoint to compare with (vanilla SD 1.5 in practice)",
        }.get(key, "type the base model (diffusers folder or .safetensors)")
        return None
    try:
        weights = inspect_weights(text)
    except KilnError as exc:
        errors[key] = field_message(str(exc), text)
        return None
    if weights.pickle and not allow_pickle:
        errors[key] = (
            "pickled weights (.ckpt/.pt/.bin) can run code when loaded: turn Allow pickle on if you "
            "trust them, or convert them to .safetensors"
        )
        return None
    return weights


def _scale(text: str, errors: dict[str, str]) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        errors["scale"] = f"{text.strip()!r} is not a number; type e.g. 1.0 (as trained) or 0.8"
        return None
    if not math.isfinite(value) or value < 0:
        errors["scale"] = f"{text.strip()} must be 0 or more (1.0 = as trained)"
        return None
    return value


def _words(inputs: TecInputs, errors: dict[str, str]) -> tuple[tuple[str, ...] | None, str]:
    text = inputs.words.strip()
    if not text:
        return None, BUILTIN
    if inputs.full_vocab:
        errors["words"] = "full vocabulary is on: clear the words file, or turn full vocabulary off"
        return None, BUILTIN
    try:
        words = read_words(text)
    except KilnError as exc:
        errors["words"] = field_message(str(exc), text)
        return None, BUILTIN
    if not words:
        errors["words"] = "no words in the file: one word a line (# starts a comment)"
        return None, BUILTIN
    return tuple(words), str(Path(text).expanduser())


# The engine's messages name the CLI's flags; the form calls the same things by its own names.
_CLI_WORDING = (
    ("pass --words FILE", "pick a Words file"),
    ("--words FILE", "a Words file"),
    ("--full-vocab", "Full vocab"),
    ("pass --allow-pickle", "turn Allow pickle on"),
    ("--allow-pickle", "Allow pickle"),
    ("pass --base MODEL", "type the Base model"),
    ("--device cuda", "Device cuda"),
    ("--device cpu", "Device cpu"),
)


def form_wording(message: str) -> str:
    """An engine message in the form's terms: "pick a Words file" rather than "pass --words FILE"."""
    for flag, name in _CLI_WORDING:
        message = message.replace(flag, name)
    return message


def short_path(path: Path | str) -> str:
    """A path as short as it can be said: relative to the current folder, else from ``~``."""
    path = Path(path)
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            return prefix + path.relative_to(base).as_posix()
        except ValueError:
            continue
    return str(path)


def field_message(message: str, typed: str) -> str:
    """An engine message shown under its field, without the path the field already shows."""
    message = form_wording(message)
    for shown in {typed, str(Path(typed).expanduser()), str(Path(typed).expanduser().resolve())}:
        if message.startswith(shown + ": "):
            return message[len(shown) + 2 :]
    return message


def measure(job: TecJob, progress: ProgressFn | None = None) -> TecResult:
    """Run the measurement (in a worker thread: this imports torch and loads the text encoders).

    Raises:
        KilnError: A model cannot be read, the tokenizers differ, no probe word fits, no CUDA.
    """
    # transformers announces missing optional packages (torchvision) at import: not news here,
    # and nothing may write to the terminal under a running TUI.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from kiln.engine.runs.tec_series import run_tec_series
    from kiln.engine.tec.meter import ProbeOptions, checkpoint_tec_report, lora_tec_report

    options = ProbeOptions(
        words=job.words,
        words_source=job.words_source,
        full_vocab=job.full_vocab,
        position=job.position,  # type: ignore[arg-type]
        device=job.device,
    )
    if job.kind == "checkpoint":
        assert job.candidate is not None and job.reference is not None
        report = checkpoint_tec_report(
            job.candidate, job.reference, options, bool(job.allow_pickle), progress
        )
        return TecResult(job, report=report)
    if job.kind == "lora":
        assert job.candidate is not None and job.reference is not None
        report = lora_tec_report(
            job.candidate, job.reference, job.scale, options, bool(job.allow_pickle), progress
        )
        return TecResult(job, report=report)
    assert job.run is not None
    series = run_tec_series(job.run, job.base, job.scale, options, job.allow_pickle, progress)
    return TecResult(job, series=tuple(series))
