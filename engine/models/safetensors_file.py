"""Plain ``.safetensors`` reading: the header alone (names, metadata; torch-free) or every tensor.

A safetensors file starts with an 8-byte little-endian header length and a JSON header naming
every tensor, so its keys (and metadata) are known without reading a single weight. Nothing
here unpickles.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.engine.errors import ModelError

if TYPE_CHECKING:
    import torch

_METADATA = "__metadata__"
# Real headers are a few hundred KB even for SDXL; anything far larger is not a safetensors file.
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class SafetensorsHeader:
    """The tensor names and metadata of a ``.safetensors`` file.

    Attributes:
        keys: The tensor names, in file order.
        metadata: The ``__metadata__`` strings (``ss_epoch``...), empty when there are none.
    """

    keys: tuple[str, ...]
    metadata: dict[str, str] = field(default_factory=dict)


def safetensors_header(path: Path | str) -> SafetensorsHeader:
    """Read a ``.safetensors`` file's header (names and metadata only, no tensor data).

    Raises:
        ModelError: The file is missing, unreadable or not a safetensors file.
    """
    path = Path(path).expanduser()
    try:
        with path.open("rb") as handle:
            start = handle.read(8)
            if len(start) < 8:
                raise ModelError(f"{path}: too short to be a .safetensors file")
            (length,) = struct.unpack("<Q", start)
            if length > _MAX_HEADER:
                raise ModelError(f"{path}: not a .safetensors file (its header length makes no sense)")
            raw = handle.read(length)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelError(f"{path}: a folder, not a .safetensors file") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the file ({exc})") from None
    if len(raw) < length:
        raise ModelError(f"{path}: the file ends inside its header; it is truncated (copy it again)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ModelError(f"{path}: not a .safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path}: not a .safetensors file (its header is not a JSON object)")
    metadata = header.get(_METADATA) or {}
    keys = tuple(key for key in header if key != _METADATA)
    return SafetensorsHeader(keys, {str(k): str(v) for k, v in metadata.items()})


def read_safetensors(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A ``.safetensors`` file's tensors (on the CPU) and metadata."""
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
            tensors[key] = handle.get_tensor(key)
    return tensors, metadata
