"""The catalog of the user's base checkpoints: identified, hashed once, TEC measured once.

Everything learnt is kept in one JSON file (``$XDG_DATA_HOME/kiln/bases.json``, else
``~/.local/share/kiln/bases.json``), written atomically:

* ``files``: path -> size, mtime and SHA-256, so an unchanged file is never read again;
* ``bases``: SHA-256 -> what the checkpoint is, the caption style the user noted for it,
  and its TEC against each reference it was measured with (keyed by the reference's hash).

A second look at the same folders therefore reads no tensor and hashes nothing; a file that
changed (size or mtime) is hashed again and, being a new checkpoint, measured again. Only
text encoders are ever loaded (``kiln.engine.tec``), never a U-Net.

The verdict uses the guide's words over TEC's provisional bands: "close to zero",
"drifting", "corrupted" (``kiln.engine.tec.reading``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kiln.engine.bases.identify import Checkpoint, file_hash, find_checkpoints, identify, stamp
from kiln.engine.bases.styles import SENTENCE_WORDS, STYLES, TAG_WORDS, StyleHint, guide_style, style_hint
from kiln.engine.errors import KilnError, ModelError, UsageError
from kiln.engine.fsutil import atomic_write_text
from kiln.engine.tec.reading import CONFUSION_BANDS, READINGS, SCORE_BANDS, tec_reading

CATALOG_VERSION = 1
VERDICTS = dict(zip(READINGS, ("close to zero", "drifting", "corrupted"), strict=True))
VERDICT_NOTE = (
    f"provisional thresholds: close to zero = TEC < {SCORE_BANDS[0]:g} and confusion < "
    f"{CONFUSION_BANDS[0]:.1%}; drifting = TEC < {SCORE_BANDS[1]:g} and confusion < "
    f"{CONFUSION_BANDS[1]:.0%}; corrupted above"
)
TOP_CONFUSED = 5
Progress = Callable[[str], None]


def catalog_path(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the catalog lives: ``$XDG_DATA_HOME/kiln/bases.json`` or ``~/.local/share/...``."""
    data = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "kiln" / "bases.json"


@dataclass(frozen=True)
class Measurement:
    """A base's TEC against one reference, as the catalog keeps it.

    Attributes:
        reference: The reference checkpoint's path when measured.
        score: Mean (1 - cosine) x 100 over the probe words.
        confusion_rate: Share of probe words nearest another word's reference embedding.
        confused: How many words that is, of ``words``.
        top_confused: The most moved confused words, ``(word, taken for)``.
        hint: The caption-style hint (tag against sentence words), when measurable.
    """

    reference: str
    score: float
    confusion_rate: float
    confused: int
    words: int
    top_confused: tuple[tuple[str, str], ...] = ()
    hint: StyleHint | None = None

    @property
    def verdict(self) -> str:
        """``close to zero``, ``drifting`` or ``corrupted`` (provisional bands)."""
        return VERDICTS[tec_reading(self.score, self.confusion_rate)]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["top_confused"] = [list(pair) for pair in self.top_confused]
        data["hint"] = self.hint.to_json() if self.hint else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Measurement:
        hint = data.get("hint")
        return cls(
            reference=str(data["reference"]),
            score=float(data["score"]),
            confusion_rate=float(data["confusion_rate"]),
            confused=int(data["confused"]),
            words=int(data["words"]),
            top_confused=tuple((str(a), str(b)) for a, b in data.get("top_confused", [])),
            hint=StyleHint(float(hint["tag_drift"]), float(hint["sentence_drift"]), str(hint["style"]))
            if isinstance(hint, Mapping)
            else None,
        )


@dataclass
class BaseEntry:
    """One checkpoint in the catalog's table.

    Attributes:
        checkpoint: What it is.
        sha256: Its hash (civitai's AutoV2 is the first ten digits).
        style: The caption style to use (``blip``, ``wd14``, ``either``) or None when unknown.
        style_source: ``yours`` (noted by the user), ``guide`` (one of its five bases) or None.
        style_note: Why, in a few words.
        measurement: Its TEC against its family's reference, or None when not measured.
        error: Why it could not be measured (one line), or None.
    """

    checkpoint: Checkpoint
    sha256: str
    style: str | None = None
    style_source: str | None = None
    style_note: str = ""
    measurement: Measurement | None = None
    error: str | None = None

    @property
    def autov2(self) -> str:
        return self.sha256[:10].upper()

    def to_json(self) -> dict[str, Any]:
        m = self.measurement
        return {
            "path": str(self.checkpoint.path),
            "title": self.checkpoint.title,
            "kind": self.checkpoint.kind,
            "family": self.checkpoint.family,
            "prediction": self.checkpoint.prediction,
            "size": self.checkpoint.size,
            "sha256": self.sha256,
            "autov2": self.autov2,
            "metadata": self.checkpoint.metadata,
            "style": self.style,
            "style_source": self.style_source,
            "style_note": self.style_note,
            "tec": m.to_json() if m else None,
            "verdict": m.verdict if m else None,
            "error": self.error,
        }


@dataclass
class Catalog:
    """The catalog file's contents (see the module docstring); :meth:`save` writes it back."""

    path: Path
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    bases: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The folders and references of the last look, so the workbench opens on them.
    last: dict[str, Any] = field(default_factory=dict)
    # Whether anything was learnt since the last save: a second look writes nothing.
    changed: bool = field(default=False, compare=False)

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        """Read the catalog (an empty one when there is none).

        Raises:
            UsageError: the file exists but is not a Kiln catalog; the message names it.
        """
        path = path or catalog_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"{path}: not a readable catalog ({exc}); move it aside and scan again"
            ) from None
        if not isinstance(data, dict) or data.get("version") != CATALOG_VERSION:
            raise UsageError(f"{path}: not a Kiln catalog of version {CATALOG_VERSION}; move it aside")
        return cls(path, dict(data.get("files", {})), dict(data.get("bases", {})), dict(data.get("last", {})))

    def save(self, only_if_changed: bool = False) -> None:
        if only_if_changed and not self.changed:
            return
        self.changed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": CATALOG_VERSION, "files": self.files, "bases": self.bases, "last": self.last}
        atomic_write_text(self.path, json.dumps(data, indent=1, sort_keys=True))

    def hash_of(self, path: Path) -> str:
        """The checkpoint's SHA-256: remembered while its size and mtime stay the same."""
        key = str(path.resolve())
        current = stamp(path)
        known = self.files.get(key)
        if known and known.get("size") == current.size and known.get("mtime_ns") == current.mtime_ns:
            return str(known["sha256"])
        sha = file_hash(path)
        self.changed = True
        self.files[key] = {"size": current.size, "mtime_ns": current.mtime_ns, "sha256": sha}
        return sha

    def set_style(self, path: Path, style: str) -> str:
        """Note the caption style for the checkpoint at ``path``; returns its hash.

        Raises:
            UsageError: an unknown style.
            ModelError: the path is not a checkpoint.
        """
        if style not in STYLES:
            raise UsageError(f"caption style {style!r}: use one of {', '.join(STYLES)}")
        path = Path(path).expanduser()
        identify(path)
        sha = self.hash_of(path)
        self.bases.setdefault(sha, {})["style"] = style
        self.changed = True
        return sha

    def measurement(self, sha: str, key: str) -> Measurement | None:
        """The measurement of base ``sha`` under ``key`` (reference hash and probe words)."""
        data = self.bases.get(sha, {}).get("tec", {}).get(key)
        return Measurement.from_json(data) if isinstance(data, Mapping) else None


@dataclass(frozen=True)
class StyleProbe:
    """The two word lists the caption-style hint compares (defaults: real caption words)."""

    tags: tuple[str, ...] = TAG_WORDS
    sentences: tuple[str, ...] = SENTENCE_WORDS


def scan_bases(
    folders: Iterable[Path],
    references: Mapping[str, Path],
    catalog: Catalog,
    options: Any = None,
    style_probe: StyleProbe = StyleProbe(),
    progress: Progress | None = None,
) -> tuple[list[BaseEntry], list[str]]:
    """Identify every checkpoint under ``folders``, measure each against the reference of its
    family (``references``: ``sd15``/``sdxl`` -> path) unless the catalog knows it, and return
    the table ranked by TEC within each family, with one line per thing skipped.

    ``options`` are TEC's :class:`~kiln.engine.tec.meter.ProbeOptions` (the built-in words by
    default). The catalog is saved after each measurement, so an interrupted scan keeps its work.
    """
    folders = [Path(folder).expanduser() for folder in folders]
    paths, notes = find_checkpoints(folders)
    last = {
        "folders": [str(folder) for folder in folders],
        "references": {family: str(Path(path).expanduser()) for family, path in references.items()},
    }
    catalog.changed |= last != catalog.last
    catalog.last = last
    measurer = _Measurer(references, catalog, options, style_probe, progress)
    entries: list[BaseEntry] = []
    for path in paths:
        try:
            checkpoint = identify(path)
        except ModelError as exc:
            notes.append(f"{exc}; skipped")
            continue
        if progress is not None:
            progress(f"hashing {path.name}")
        sha = catalog.hash_of(path)
        known = catalog.bases.setdefault(sha, {})
        described = {"title": checkpoint.title, "family": checkpoint.family, "path": str(path)}
        if any(known.get(name) != value for name, value in described.items()):
            known.update(described)
            catalog.changed = True
        entry = BaseEntry(checkpoint, sha)
        _style(entry, known)
        try:
            entry.measurement = measurer.measure(checkpoint, sha)
        except KilnError as exc:
            entry.error = str(exc)
        entries.append(entry)
        catalog.save(only_if_changed=True)  # an interrupted look keeps what it measured
    catalog.save(only_if_changed=True)
    return rank(entries), notes


def rank(entries: Iterable[BaseEntry]) -> list[BaseEntry]:
    """By family, then least TEC first; unmeasured ones last in their family."""

    def key(entry: BaseEntry) -> tuple:
        m = entry.measurement
        return (entry.checkpoint.family, m is None, m.score if m else 0.0, entry.checkpoint.title.lower())

    return sorted(entries, key=key)


def _style(entry: BaseEntry, known: Mapping[str, Any]) -> None:
    noted = known.get("style")
    if noted in STYLES:
        entry.style, entry.style_source, entry.style_note = str(noted), "yours", "your note"
        return
    checkpoint = entry.checkpoint
    guided = guide_style(checkpoint.title) or guide_style(checkpoint.path.name)
    if guided is not None:
        entry.style, entry.style_source, entry.style_note = guided[0], "guide", guided[1]


class _Measurer:
    """Measures checkpoints against their family's reference, loading each reference (and
    probing it) only when a checkpoint of that family is not in the catalog yet."""

    def __init__(
        self,
        references: Mapping[str, Path],
        catalog: Catalog,
        options: Any,
        style_probe: StyleProbe,
        progress: Progress | None,
    ) -> None:
        self.references = {family: Path(path).expanduser() for family, path in references.items()}
        self.catalog = catalog
        self.options = options
        self.style_probe = style_probe
        self.progress = progress
        self._probes: dict[str, tuple[Any, Any]] = {}
        self._reference_sha: dict[str, str] = {}
        words = getattr(options, "words", None)
        probe = f"{getattr(options, 'position', 'word')}:" + ("\n".join(words) if words else "built-in")
        if getattr(options, "full_vocab", False):
            probe += ":full"
        self.probe_key = hashlib.sha256(probe.encode()).hexdigest()[:12]

    def reference_sha(self, family: str) -> str | None:
        path = self.references.get(family)
        if path is None:
            return None
        if family not in self._reference_sha:
            if not path.exists():
                raise ModelError(f"{path}: no such reference checkpoint; give vanilla SD 1.5 / SDXL base")
            self._reference_sha[family] = self.catalog.hash_of(path)
        return self._reference_sha[family]

    def measure(self, checkpoint: Checkpoint, sha: str) -> Measurement | None:
        reference_sha = self.reference_sha(checkpoint.family)
        if reference_sha is None:
            flag = "--reference" if checkpoint.family == "sd15" else "--reference-xl"
            raise UsageError(f"no {checkpoint.family} reference given ({flag}): not measured")
        # Keyed by the reference and the probe words: another word list is another measure.
        key = f"{reference_sha}/{self.probe_key}"
        cached = self.catalog.measurement(sha, key)
        if cached is not None:
            return cached
        main, styles = self._reference_probes(checkpoint.family)
        if self.progress is not None:
            self.progress(f"measuring {checkpoint.path.name}")
        report = main.measure(checkpoint.path)
        hint = None
        try:
            style_report = styles.measure(checkpoint.path)
        except UsageError:
            pass  # a tokenizer that keeps none of the caption words whole: no hint, still a TEC
        else:
            hint = style_hint(
                style_report.words, style_report.distances, self.style_probe.tags, self.style_probe.sentences
            )
        measurement = Measurement(
            reference=str(self.references[checkpoint.family]),
            score=round(report.score, 4),
            confusion_rate=round(report.confusion_rate, 6),
            confused=len(report.confused_indices),
            words=len(report.words),
            top_confused=tuple((c.word, c.nearest) for c in report.confused(TOP_CONFUSED)),
            hint=hint,
        )
        self.catalog.bases.setdefault(sha, {}).setdefault("tec", {})[key] = measurement.to_json()
        self.catalog.changed = True
        return measurement

    def _reference_probes(self, family: str) -> tuple[Any, Any]:
        if family not in self._probes:
            from kiln.engine.tec.meter import ProbeOptions, ReferenceProbe

            options = self.options or ProbeOptions()
            words = self.style_probe.tags + self.style_probe.sentences
            style_options = ProbeOptions(
                words=words, words_source="caption-style words", device=options.device
            )
            reference = self.references[family]
            if self.progress is not None:
                self.progress(f"probing the reference {reference.name}")
            self._probes[family] = (
                ReferenceProbe(reference, options),
                ReferenceProbe(reference, style_options),
            )
        return self._probes[family]
