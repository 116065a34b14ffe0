"""Find the checkpoints in the user's model folders and say what each one is, cheaply.

Identification reads headers and small config files only: the family (SD 1.x or SDXL, from
the tensor names), the prediction type (``modelspec.prediction_type``, Kohya's
``ss_v_parameterization``, or a diffusers scheduler config), the title (``modelspec.title``,
else the file name) and the size. The one full read is the hash: SHA-256 of the whole file,
as A1111 and civitai compute it (civitai's "AutoV2" is its first ten hex digits), done once
per file version and remembered by the catalog under (path, size, mtime). A diffusers folder
has no such hash; Kiln hashes its text-encoder weight files (what TEC depends on).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kiln.engine.errors import ModelError
from kiln.engine.models.family import detect_family
from kiln.engine.models.safetensors_file import safetensors_header

HASH_CHUNK = 1 << 20
_LORA_PREFIXES = ("lora_", "lycoris_", "hada_", "lokr_")
# Metadata worth keeping in the catalog (the rest of ss_* describes a training run).
_KEPT_METADATA = (
    "modelspec.title",
    "modelspec.architecture",
    "modelspec.prediction_type",
    "modelspec.author",
    "modelspec.description",
    "ss_sd_model_name",
    "ss_output_name",
    "ss_v_parameterization",
    "ss_base_model_version",
)


@dataclass(frozen=True)
class FileStamp:
    """What tells one version of a file from another without reading it."""

    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as identified (no weights read).

    Attributes:
        path: The ``.safetensors`` file or diffusers folder.
        kind: ``single-file`` or ``folder``.
        family: ``sd15`` or ``sdxl``.
        prediction: ``epsilon``, ``v`` or ``unknown`` (no file says; SD 1.x bases are epsilon).
        title: ``modelspec.title``, else the file or folder name.
        size: Bytes on disk (a folder: its text-encoder weights).
        metadata: The ``modelspec.*`` and base-describing ``ss_*`` values the file carries.
    """

    path: Path
    kind: str
    family: str
    prediction: str
    title: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)


def find_checkpoints(folders: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """Every checkpoint under ``folders`` (recursively): ``.safetensors`` files that hold a
    text encoder, and diffusers folders (``model_index.json``); and a line for each file
    skipped that a user might have expected (LoRAs and VAEs are skipped silently).

    Raises:
        ModelError: a folder given does not exist.
    """
    found: list[Path] = []
    notes: list[str] = []
    for folder in folders:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise ModelError(f"{folder}: no such folder; give the folders that hold your checkpoints")
        diffusers = sorted(index.parent for index in folder.rglob("model_index.json"))
        found.extend(diffusers)
        for path in sorted(folder.rglob("*.safetensors")):
            if any(parent in path.parents for parent in diffusers):
                continue
            try:
                keys = safetensors_header(path).keys
            except ModelError as exc:
                notes.append(f"{exc}; skipped")
                continue
            if any(key.startswith(_LORA_PREFIXES) for key in keys[:50]):
                continue
            if _has_text_encoder(keys):
                found.append(path)
        for path in sorted(folder.rglob("*.ckpt")):
            notes.append(f"{path}: a pickle checkpoint; convert it to .safetensors to catalogue it")
    unique = sorted({path.resolve(): path for path in found}.values())
    return unique, notes


def _has_text_encoder(keys: Iterable[str]) -> bool:
    return any(key.startswith(("cond_stage_model.", "conditioner.embedders.")) for key in keys)


def stamp(path: Path) -> FileStamp:
    """The size and modification time of a file, or of a folder's text-encoder weights."""
    files = weight_files(path)
    return FileStamp(sum(f.stat().st_size for f in files), max(f.stat().st_mtime_ns for f in files))


def weight_files(path: Path) -> list[Path]:
    """The files whose bytes identify the checkpoint: the file itself, or a folder's
    text-encoder weights and its ``model_index.json``."""
    if path.is_file():
        return [path]
    files = sorted(
        file
        for part in ("text_encoder", "text_encoder_2")
        for file in (path / part).glob("*")
        if file.suffix in (".safetensors", ".bin", ".json")
    )
    return [path / "model_index.json", *files]


def file_hash(path: Path) -> str:
    """SHA-256 of the file (A1111's and civitai's model hash), or of a folder's weight files
    in order; lowercase hex."""
    digest = hashlib.sha256()
    for file in weight_files(path):
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def identify(path: Path) -> Checkpoint:
    """What the checkpoint at ``path`` is, from its header or config files.

    Raises:
        ModelError: it is not a checkpoint of a family Kiln knows.
    """
    family = detect_family(path).name
    if path.is_dir():
        metadata: dict[str, str] = {}
        prediction = _folder_prediction(path)
        title = path.name
    else:
        header = safetensors_header(path)
        metadata = {key: header.metadata[key] for key in _KEPT_METADATA if key in header.metadata}
        prediction = _file_prediction(metadata)
        title = metadata.get("modelspec.title") or path.stem
    return Checkpoint(
        path=path,
        kind="folder" if path.is_dir() else "single-file",
        family=family,
        prediction=prediction,
        title=title,
        size=stamp(path).size,
        metadata=metadata,
    )


def _file_prediction(metadata: dict[str, str]) -> str:
    stated = metadata.get("modelspec.prediction_type", "").lower()
    if stated:
        return "v" if stated.startswith("v") else "epsilon"
    if metadata.get("ss_v_parameterization", "").lower() == "true":
        return "v"
    return "unknown"


def _folder_prediction(path: Path) -> str:
    try:
        config = json.loads((path / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unknown"
    stated = str(config.get("prediction_type", "")) if isinstance(config, dict) else ""
    return {"epsilon": "epsilon", "v_prediction": "v"}.get(stated, "unknown")
