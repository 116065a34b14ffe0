"""Run a captioner over dataset images and write the captions: the engine of ``kiln caption``.

One function, :func:`caption_images`, serves the CLI and the TUI alike: it reports each
image's outcome through a callback as soon as it is known, stops between batches when
``should_stop()`` says so, and records every written caption as one undo step. A bad image
costs only its own caption; a failing batch only its own images. Captions are written
atomically, so an interrupted run leaves whole files, old or new, never partial ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kiln.engine.caption.images import rgb_on_white
from kiln.engine.caption.tagtext import has_tag, join_tags, split_tags, tag_key
from kiln.engine.caption.triggers import infer_trigger
from kiln.engine.caption.undo import FileChange, History, current_bytes, relative
from kiln.engine.dataset.captions import CaptionError, read_caption, read_only_reason, write_caption
from kiln.engine.dataset.lock import caption_lock
from kiln.engine.dataset.scan import ImageRecord
from kiln.engine.dataset.store import Store
from kiln.engine.errors import ImageError, ModelError, UsageError
from PIL import Image

STYLES = ("blip", "wd14")
MODES = ("skip", "overwrite", "append")
POSITIONS = ("first", "last")

WRITTEN, UNCHANGED, SKIPPED, FAILED = "written", "unchanged", "skipped", "failed"


class Captioner(Protocol):
    """What the runner needs from a captioner (``Wd14Tagger``, ``BlipCaptioner``)."""

    style: str
    batch_size: int

    def caption_batch(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per image, in order (tags or a sentence, without the trigger)."""
        ...

    def close(self) -> None:
        """Release the model."""
        ...


def default_trigger_position(style: str) -> str:
    """Where the trigger goes by default: first among WD14 tags, last after a BLIP sentence."""
    return "first" if style == "wd14" else "last"


@dataclass(frozen=True)
class CaptionOptions:
    """What to do with each generated caption.

    Attributes:
        mode: ``skip`` images that already have a caption (the default), ``overwrite`` it,
            or ``append`` the new pieces that it does not hold yet.
        trigger: The made-up word that absorbs what the caption does not say ("" for none).
        trigger_position: ``first`` or ``last``; a caption that holds it already keeps it
            where it is.
    """

    mode: str = "skip"
    trigger: str = ""
    trigger_position: str = "last"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.trigger_position not in POSITIONS:
            raise UsageError(f"trigger position {self.trigger_position!r}: use first or last")
        if "," in self.trigger:
            raise UsageError(f"trigger {self.trigger!r}: one word or phrase, without commas")


@dataclass(frozen=True)
class CaptionOutcome:
    """What happened to one image.

    Attributes:
        rel_path: The image, relative to the dataset root.
        caption_path: Its caption sidecar.
        status: ``written``, ``unchanged`` (the new caption equals the old), ``skipped``
            (it had a caption and the mode is skip) or ``failed``.
        text: The caption now on disk (written or unchanged), else None.
        error: For ``failed``, the one-line reason and fix; for a ``skipped`` caption the user
            made read-only, why it was left as is.
    """

    rel_path: str
    caption_path: Path
    status: str
    text: str | None = None
    error: str | None = None


@dataclass
class CaptionRun:
    """The result of :func:`caption_images`."""

    outcomes: list[CaptionOutcome] = field(default_factory=list)
    stopped: bool = False
    step: int | None = None

    def count(self, status: str) -> int:
        """How many images ended with ``status``."""
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def failed(self) -> list[CaptionOutcome]:
        """The images that got no caption because of an error."""
        return [outcome for outcome in self.outcomes if outcome.status == FAILED]


def compose_caption(
    generated: str, existing: str | None, options: CaptionOptions, known_trigger: str = ""
) -> str:
    """The caption to write, from what the model said and the caption already there.

    ``append`` keeps the existing pieces in order and adds the new pieces it lacks after the
    caption's text, but before a trigger that ends the caption: the trigger keeps its place
    (first stays first, last stays last). The trigger is ``options.trigger``, else
    ``known_trigger`` (the concept's inferred one). It is added at its position when the
    caption does not hold it yet.
    """
    new = split_tags(generated)
    trigger = " ".join(options.trigger.split())
    if options.mode == "append" and existing:
        pieces = split_tags(existing)
        anchor = trigger or " ".join(known_trigger.split())
        ends_with_trigger = bool(anchor) and len(pieces) > 1 and tag_key(pieces[-1]) == tag_key(anchor)
        tail = [pieces.pop()] if ends_with_trigger else []
        known = {tag_key(piece) for piece in pieces + tail}
        for piece in new:
            if tag_key(piece) not in known:
                pieces.append(piece)
                known.add(tag_key(piece))
        pieces += tail
    else:
        pieces = new
    if trigger and not has_tag(pieces, trigger):
        if options.trigger_position == "first":
            pieces.insert(0, trigger)
        else:
            pieces.append(trigger)
    return join_tags(pieces)


def needs_caption(existing: str, mode: str) -> bool:
    """Whether an image with caption text ``existing`` is captioned in ``mode``.

    Skip mode leaves every image whose caption holds any text; an empty file counts as no
    caption. The CLI asks this first, so a run with nothing to do never loads a model.
    """
    return mode != "skip" or not existing.strip()


def caption_images(
    records: Iterable[ImageRecord],
    captioner: Captioner,
    options: CaptionOptions,
    *,
    root: Path,
    store: Store | None = None,
    on_outcome: Callable[[CaptionOutcome], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    load_image: Callable[[Path], Image.Image] = rgb_on_white,
) -> CaptionRun:
    """Caption ``records`` with ``captioner`` and write the captions.

    Args:
        records: The images, in the order to caption them.
        captioner: A loaded captioner.
        options: Mode and trigger.
        root: The dataset root (captions are recorded for undo relative to it).
        store: The dataset's store; when given, the run is one undo step.
        on_outcome: Called with each image's outcome as soon as it is known (progress).
        should_stop: Checked before each batch; True ends the run early (cancel).
        load_image: Decodes an image to RGB on white (tests may pass their own).

    Returns:
        Every outcome in order, whether the run stopped early, and its undo step id.
    """
    run = CaptionRun()
    if store is not None:
        store.require_persistent("captioning")
    history = History(store) if store is not None else None
    description = f"caption ({captioner.style}, {options.mode})"

    def report(outcome: CaptionOutcome) -> None:
        run.outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    todo: list[ImageRecord] = []
    for record in records:
        refused = _refusal(record, options)
        if refused is not None:
            report(refused)
        else:
            todo.append(record)
    triggers = _concept_triggers(todo) if options.mode == "append" and not options.trigger else {}

    batch_size = max(1, int(captioner.batch_size))
    batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="kiln-decode") as pool:

        def decode(batch: list[ImageRecord]) -> list[Future]:
            return [pool.submit(load_image, record.path) for record in batch]

        pending = decode(batches[0]) if batches else []
        for index, batch in enumerate(batches):
            if should_stop is not None and should_stop():
                run.stopped = True
                for future in pending:
                    future.cancel()
                break
            futures = pending
            # Decode the next batch while the model works on this one.
            pending = decode(batches[index + 1]) if index + 1 < len(batches) else []
            ready: list[tuple[ImageRecord, Image.Image]] = []
            for record, future in zip(batch, futures, strict=True):
                try:
                    ready.append((record, future.result()))
                except ImageError as exc:
                    report(CaptionOutcome(record.rel_path, record.caption_path, FAILED, error=str(exc)))
                except MemoryError:
                    error = "out of memory while decoding; downscale it"
                    report(CaptionOutcome(record.rel_path, record.caption_path, FAILED, error=error))
                except Exception as exc:  # an unforeseen decoder failure costs only this image
                    error = f"cannot decode ({exc.__class__.__name__}: {exc}); re-export it"
                    report(CaptionOutcome(record.rel_path, record.caption_path, FAILED, error=error))
            if not ready:
                continue
            try:
                texts = captioner.caption_batch([image for _, image in ready])
            except ModelError:
                raise  # the model itself is unusable: every batch would fail the same way
            except Exception as exc:  # a batch the model rejects costs only its own images
                reason = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
                for record, _ in ready:
                    report(
                        CaptionOutcome(
                            record.rel_path, record.caption_path, FAILED, error=f"captioner failed: {reason}"
                        )
                    )
                continue
            for (record, _), generated in zip(ready, texts, strict=True):
                known = triggers.get(record.concept, "")
                report(_write_one(record, generated, options, root, history, run, description, known))

    if history is not None and run.step is not None:
        history.discard_if_empty(run.step)
        if not any(outcome.status == WRITTEN for outcome in run.outcomes):
            run.step = None
    return run


def _concept_triggers(records: Iterable[ImageRecord]) -> dict[str, str]:
    """Each concept's trigger as its captions show it (what ``append`` must keep in place)."""
    captions: dict[str, list[list[str]]] = {}
    for record in records:
        pieces = split_tags(read_caption(record.caption_path).text)
        if pieces:
            captions.setdefault(record.concept, []).append(pieces)
    found = {concept: infer_trigger(pieces, concept) for concept, pieces in captions.items()}
    return {concept: trigger.word for concept, trigger in found.items() if trigger is not None}


def _refusal(record: ImageRecord, options: CaptionOptions) -> CaptionOutcome | None:
    """The outcome of an image the mode leaves alone, or None when it is to be captioned."""
    caption = read_caption(record.caption_path)
    if not needs_caption(caption.text, options.mode):
        return CaptionOutcome(record.rel_path, record.caption_path, SKIPPED, text=caption.text)
    read_only = read_only_reason(record.caption_path)
    if read_only is not None:
        return CaptionOutcome(
            record.rel_path, record.caption_path, SKIPPED, text=caption.text, error=read_only
        )
    if options.mode == "append" and caption.lossy:
        return CaptionOutcome(
            record.rel_path,
            record.caption_path,
            FAILED,
            error=f"{record.caption_path.name} is not valid UTF-8, so appending would lose bytes; "
            "re-save it as UTF-8 or use --mode overwrite",
        )
    return None


def _write_one(
    record: ImageRecord,
    generated: str,
    options: CaptionOptions,
    root: Path,
    history: History | None,
    run: CaptionRun,
    description: str,
    known_trigger: str = "",
) -> CaptionOutcome:
    # Read the caption again now, under the dataset's caption lock: a long run must not undo
    # an edit made while it ran, and no other writer may slip in between read and write.
    with caption_lock(root):
        return _write_locked(record, generated, options, root, history, run, description, known_trigger)


def _write_locked(
    record: ImageRecord,
    generated: str,
    options: CaptionOptions,
    root: Path,
    history: History | None,
    run: CaptionRun,
    description: str,
    known_trigger: str,
) -> CaptionOutcome:
    refused = _refusal(record, options)
    if refused is not None:
        return refused
    caption = read_caption(record.caption_path)
    existing = caption.text if caption.exists else None
    raw = current_bytes(record.caption_path) if caption.exists else None
    text = compose_caption(generated, existing, options, known_trigger)
    if not text.strip():
        return CaptionOutcome(
            record.rel_path,
            record.caption_path,
            FAILED,
            error="the captioner returned nothing for it (for WD14, try a lower --threshold)",
        )
    if existing is not None and text == existing:
        return CaptionOutcome(record.rel_path, record.caption_path, UNCHANGED, text=text)
    try:
        if history is not None:
            if run.step is None:
                run.step = history.begin(description)
            history.record(
                run.step, [FileChange(relative(root, record.caption_path), raw, text.encode("utf-8"))]
            )
        write_caption(record.caption_path, text)
    except CaptionError as exc:
        return CaptionOutcome(record.rel_path, record.caption_path, FAILED, error=str(exc))
    return CaptionOutcome(record.rel_path, record.caption_path, WRITTEN, text=text)


class IdleCaptioner:
    """Stands in for a captioner when no image needs a caption, so no model is loaded.

    The runner never asks it for a caption: every image is skipped before that.
    """

    batch_size = 1

    def __init__(self, style: str) -> None:
        self.style = style

    def caption_batch(self, images: Sequence[Image.Image]) -> list[str]:  # pragma: no cover - never called
        raise AssertionError("no image needed a caption")

    def close(self) -> None:
        """Nothing to release."""


def any_needs_caption(records: Iterable[ImageRecord], mode: str) -> bool:
    """Whether any of ``records`` gets a caption in ``mode`` (else no model need be loaded)."""
    return any(needs_caption(read_caption(record.caption_path).text, mode) for record in records)


def load_captioner(style: str, folder: Path, settings: object | None = None) -> Captioner:
    """Load the captioner of ``style`` from ``folder``; imports its heavy libraries only now.

    Args:
        style: ``blip`` or ``wd14``.
        folder: The local model folder.
        settings: ``BlipSettings`` or ``Wd14Settings`` (defaults when None).

    Raises:
        UsageError: Unknown style.
        ModelError: The folder is missing files or holds something else.
    """
    if style == "wd14":
        from kiln.engine.caption.wd14 import Wd14Tagger

        return Wd14Tagger(folder, settings)  # type: ignore[arg-type]
    if style == "blip":
        from kiln.engine.caption.blip import BlipCaptioner

        return BlipCaptioner(folder, settings)  # type: ignore[arg-type]
    raise UsageError(f"style {style!r}: use blip or wd14")
