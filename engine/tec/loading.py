"""Load only a checkpoint's CLIP text encoder and its tokenizer, offline, never the U-Net.

A diffusers folder gives ``text_encoder/`` and ``tokenizer/``. A single ``.safetensors`` file is
opened lazily (``safe_open``) and only its CLIP tensors are read, under either SD 1.x layout
(``cond_stage_model.transformer.text_model.*`` or the older ``cond_stage_model.transformer.*``);
its config and tokenizer are the SD 1.5 ones Kiln ships (or, for ``kiln tiny-model`` files, the
configs in the file's metadata). The model is built on the meta device and takes the file's
tensors as they are, so no time goes into a random initialisation that would be overwritten.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from kiln.engine.errors import ModelError
from kiln.engine.models.ldm_keys import clip_key_from_ldm
from kiln.engine.models.loading import SD15_CONFIG_DIR, ModelSource, model_source
from kiln.engine.tec.checks import no_clip_message
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

POSITION_IDS = "embeddings.position_ids"
_TEXT_MODEL = "text_model."
# Maps a stored key to a bare CLIPTextModel name, or None for keys to leave unread.
Rename = Callable[[str], "str | None"]


@dataclass(frozen=True)
class PositionIds:
    """A ``position_ids`` tensor stored in a checkpoint, checked against ``0, 1, ..., n-1``.

    Merged SD 1.5 checkpoints often carry it as floats (``75.99998``) that loaders which still
    read it truncate to the integer below, so a token reads its neighbour's position
    embedding. transformers >= 4.31 no longer reads the tensor; AUTO1111-era tools do.

    Attributes:
        dtype: The stored dtype (``int64``, ``float32``...).
        length: How many positions it holds.
        wrong: Positions whose id, truncated to an integer as loaders do, is not the position.
        max_deviation: The largest ``|stored - position|``.
    """

    dtype: str
    length: int
    wrong: tuple[int, ...]
    max_deviation: float

    @property
    def broken(self) -> bool:
        """Whether any token would read the wrong position embedding."""
        return bool(self.wrong)

    def describe(self) -> str:
        """One line for the report."""
        if self.broken:
            shown = ", ".join(str(p) for p in self.wrong[:8]) + (" ..." if len(self.wrong) > 8 else "")
            return (
                f"position_ids BROKEN ({self.dtype}): {len(self.wrong)} of {self.length} positions truncate "
                f"to the wrong id ({shown}); max deviation {self.max_deviation:.2g}. Tools that read this "
                "tensor shift those tokens; re-save the checkpoint with position_ids = arange(77)"
            )
        if self.max_deviation > 0:
            return (
                f"position_ids stored as {self.dtype}, off by at most {self.max_deviation:.2g} but every "
                "position still truncates to its own id"
            )
        return f"position_ids intact ({self.dtype}, {self.length} positions)"

    def to_json(self) -> dict:
        """JSON form for ``kiln tec --json``."""
        return {
            "broken": self.broken,
            "dtype": self.dtype,
            "length": self.length,
            "wrong": list(self.wrong),
            "max_deviation": self.max_deviation,
        }


@dataclass(frozen=True)
class TextEncoder:
    """A checkpoint's text encoder, ready to probe.

    Attributes:
        path: The checkpoint (folder or file) it came from.
        model: The ``CLIPTextModel``, float32, in eval mode, on the CPU.
        tokenizer: The tokenizer the checkpoint is used with.
        tokenizer_origin: Where that tokenizer came from, for messages.
        position_ids: The stored ``position_ids`` check, when the checkpoint holds that tensor.
    """

    path: Path
    model: CLIPTextModel
    tokenizer: CLIPTokenizer
    tokenizer_origin: str
    position_ids: PositionIds | None


def position_ids_check(stored: torch.Tensor) -> PositionIds:
    """Compare a stored ``position_ids`` tensor with ``arange``, as a loader would use it."""
    values = stored.detach().reshape(-1).to(torch.float64)
    expected = torch.arange(values.numel(), dtype=torch.float64)
    # Loaders cast with .long(), which truncates toward zero: 75.99998 becomes 75.
    wrong = torch.nonzero(values.trunc() != expected).reshape(-1).tolist()
    deviation = float((values - expected).abs().max()) if values.numel() else 0.0
    return PositionIds(str(stored.dtype).removeprefix("torch."), values.numel(), tuple(wrong), deviation)


def load_text_encoder(path: Path | str, allow_pickle: bool = False) -> TextEncoder:
    """Load the text encoder and tokenizer of a checkpoint, and nothing else.

    Args:
        path: A diffusers folder or a single-file SD 1.5 checkpoint (``.safetensors``; ``.ckpt``
            and ``.pt`` only with ``allow_pickle``).
        allow_pickle: Accept pickled weights, which can run code when loaded.

    Raises:
        ModelError: The path is missing, is a pickle without ``allow_pickle``, or holds no SD 1.x
            CLIP text encoder (the message names the key or file at fault).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(
            f"{path}: no such file or folder; pass a diffusers folder or a .safetensors checkpoint"
        )
    source = model_source(path, allow_pickle)
    if source.kind == "folder":
        return _from_folder(source, allow_pickle)
    return _from_single_file(source)


def load_text_encoders(path: Path | str, allow_pickle: bool = False) -> list[TextEncoder]:
    """Every text encoder of a checkpoint, in its family's order: SD 1.5's one, or SDXL's two
    (CLIP-L, then OpenCLIP bigG read as a ``CLIPTextModel``: its projection plays no part in
    what TEC compares). Only the encoders' tensors are read; a single file lazily.

    Raises:
        ModelError: As :func:`load_text_encoder`.
    """
    from kiln.engine.models.sdxl import detect as is_sdxl

    path = Path(path).expanduser()
    if not path.exists():
        return [load_text_encoder(path, allow_pickle)]  # its message says what is missing
    source = model_source(path, allow_pickle)
    if not is_sdxl(source.path):
        return [load_text_encoder(path, allow_pickle)]
    if source.kind == "folder":
        return [
            _from_folder(source, allow_pickle, "text_encoder", "tokenizer"),
            _from_folder(source, allow_pickle, "text_encoder_2", "tokenizer_2"),
        ]
    return _sdxl_from_single_file(source)


def require_same_tokenizer(candidate: TextEncoder, reference: TextEncoder) -> None:
    """Refuse to compare encoders whose tokenizers differ: the same word must be the same token.

    Raises:
        ModelError: The vocabularies differ; the message names both tokenizers.
    """
    ours, theirs = candidate.tokenizer.get_vocab(), reference.tokenizer.get_vocab()
    if ours == theirs:
        return
    differ = sorted(token for token in ours.keys() | theirs.keys() if ours.get(token) != theirs.get(token))
    raise ModelError(
        f"{candidate.tokenizer_origin} and {reference.tokenizer_origin}: the tokenizers differ "
        f"({len(ours)} vs {len(theirs)} tokens, {len(differ)} differ, e.g. {differ[0]!r}); TEC compares "
        "the same words in both, so pass a reference that shares the candidate's tokenizer"
    )


def _from_folder(
    source: ModelSource, allow_pickle: bool, encoder: str = "text_encoder", tokenizer_name: str = "tokenizer"
) -> TextEncoder:
    folder = source.path / encoder
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{folder}: no config.json; the model folder has no diffusers text_encoder/")
    config = _config(config_file)
    files = _folder_weight_files(folder, allow_pickle)
    bare: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            bare.update(_read_safetensors(file, _strip_text_model))
        else:
            bare.update(_read_pickle(file, _strip_text_model))
    tokenizer_dir = source.path / tokenizer_name
    tokenizer = _tokenizer(tokenizer_dir, f"{tokenizer_dir}")
    return _text_encoder(source.path, config, bare, tokenizer, str(tokenizer_dir))


def _sdxl_from_single_file(source: ModelSource) -> list[TextEncoder]:
    """SDXL's two encoders from an SGM single file: CLIP-L's keys as they are, OpenCLIP's
    converted (fused q/k/v split); configs and tokenizers from a tiny file's metadata, else
    the SDXL ones Kiln ships."""
    from kiln.engine.models.loading import sdxl_config_dir
    from kiln.engine.models.sgm_keys import OPEN_CLIP_PREFIX, clip_l_from_sgm, open_clip_from_sgm

    path = source.path
    metadata = _safetensors_metadata(path)
    first = _read_safetensors(path, clip_l_from_sgm, diagnose=True)
    second = open_clip_from_sgm(
        _read_safetensors(path, lambda key: key if key.startswith(OPEN_CLIP_PREFIX) else None)
    )
    second.pop("text_projection.weight", None)
    with tempfile.TemporaryDirectory(prefix="kiln-tec-") as tmp:
        scratch = Path(tmp)
        if "kiln.configs" in metadata:
            from kiln.engine.models.tiny import write_tiny_configs

            write_tiny_configs(scratch, json.loads(metadata["kiln.configs"]))
            origin = f"{path} (Kiln's tiny tokenizer)"
        else:
            sdxl_config_dir(scratch)
            origin = f"{path} (SDXL's CLIP tokenizers, shipped with Kiln)"
        encoders = []
        for bare, encoder, tokenizer in (
            (first, "text_encoder", "tokenizer"),
            (second, "text_encoder_2", "tokenizer_2"),
        ):
            config = _config(scratch / encoder / "config.json")
            encoders.append(
                _text_encoder(path, config, bare, _tokenizer(scratch / tokenizer, origin), origin)
            )
    return encoders


def _from_single_file(source: ModelSource) -> TextEncoder:
    path = source.path
    if source.pickle:
        bare = _read_pickle(path, clip_key_from_ldm)
        metadata: dict[str, str] = {}
    else:
        metadata = _safetensors_metadata(path)
        bare = _read_safetensors(path, clip_key_from_ldm, diagnose=True)
    if "kiln.configs" in metadata:
        from kiln.engine.models.tiny import write_tiny_configs

        with tempfile.TemporaryDirectory(prefix="kiln-tec-") as tmp:
            scratch = Path(tmp)
            write_tiny_configs(scratch, json.loads(metadata["kiln.configs"]))
            config = _config(scratch / "text_encoder" / "config.json")
            origin = f"{path} (Kiln's tiny tokenizer)"
            tokenizer = _tokenizer(scratch / "tokenizer", origin)
    else:
        config = _config(SD15_CONFIG_DIR / "text_encoder" / "config.json")
        origin = f"{path} (SD 1.5's CLIP tokenizer, shipped with Kiln)"
        tokenizer = _tokenizer(SD15_CONFIG_DIR / "tokenizer", origin)
    return _text_encoder(path, config, bare, tokenizer, origin)


def _config(path: Path) -> CLIPTextConfig:
    try:
        return CLIPTextConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable CLIP text-encoder config ({exc})") from None


def _tokenizer(folder: Path, origin: str) -> CLIPTokenizer:
    if not folder.is_dir():
        raise ModelError(
            f"{folder}: no tokenizer folder; the diffusers model needs tokenizer/ beside text_encoder/"
        )
    try:
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"{origin}: cannot read the tokenizer ({exc})") from None


def _folder_weight_files(folder: Path, allow_pickle: bool) -> list[Path]:
    """The text encoder's weight files: sharded via the index, else the one safetensors file."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        return sorted({folder / name for name in weight_map.values()})
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    found = sorted(folder.glob("*.safetensors"))
    if len(found) == 1:  # a variant only, e.g. model.fp16.safetensors
        return found
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ModelError(f"{folder}: several weight files ({names}) and no model.safetensors; keep one")
    pickles = sorted(folder.glob("*.bin"))
    if not pickles:
        raise ModelError(f"{folder}: no weights (model.safetensors); the text encoder is missing")
    if not allow_pickle:
        raise ModelError(
            f"{pickles[0]}: refused: .bin weights are Python pickles, which can run arbitrary code when "
            "loaded; convert them to .safetensors, or pass --allow-pickle if you trust their source"
        )
    return pickles


def _strip_text_model(key: str) -> str | None:
    """A diffusers-folder key without the ``text_model.`` level older transformers saved."""
    return key.removeprefix(_TEXT_MODEL)


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise ModelError(f"{path}: not a readable .safetensors file ({exc})") from None


def _read_safetensors(path: Path, rename: Rename, diagnose: bool = False) -> dict[str, torch.Tensor]:
    """Read only the tensors ``rename`` maps (to bare CLIP names), lazily, as float32."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
            wanted = {name: key for key in keys if (name := rename(key)) is not None}
            if diagnose and not wanted:
                raise ModelError(no_clip_message(path, keys))
            return {name: _owned(handle.get_tensor(key)) for name, key in wanted.items()}
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: not a readable .safetensors file ({exc})") from None


def _read_pickle(path: Path, rename: Rename) -> dict[str, torch.Tensor]:
    """Unpickle a checkpoint the user said they trust, and keep its CLIP tensors."""
    try:
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
            data = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelError(f"{path}: cannot unpickle the checkpoint ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ModelError(f"{path}: holds a {type(data).__name__}, not a state dict of tensors")
    found = {
        name: _owned(value)
        for key, value in data.items()
        if isinstance(value, torch.Tensor) and (name := rename(key)) is not None
    }
    if not found:
        raise ModelError(no_clip_message(path, [str(key) for key in data]))
    return found


def _owned(tensor: torch.Tensor) -> torch.Tensor:
    """A float32 copy in fresh memory.

    Tensors read from a file can sit at any byte offset, and CPU kernels pick their
    vectorised path by alignment, so the same weights at another offset round differently
    (1e-6). Fresh allocations are aligned: equal weights then give equal embeddings, and an
    encoder compared with itself scores exactly 0.
    """
    return tensor.to(torch.float32, copy=True).contiguous()


def _text_encoder(
    path: Path, config: CLIPTextConfig, bare: dict[str, torch.Tensor], tokenizer: CLIPTokenizer, origin: str
) -> TextEncoder:
    stored = bare.pop(POSITION_IDS, None)
    model = _model(path, config, bare)
    check = position_ids_check(stored) if stored is not None else None
    return TextEncoder(path, model, tokenizer, origin, check)


def _model(path: Path, config: CLIPTextConfig, bare: dict[str, torch.Tensor]) -> CLIPTextModel:
    """Build the model on the meta device and hand it the file's tensors.

    transformers >= 5.6 names ``CLIPTextModel``'s weights without the ``text_model.`` level;
    older versions keep it. The installed version's own state dict says which to use.
    """
    with torch.device("meta"):
        model = CLIPTextModel(config)
    expected = model.state_dict()
    nested = any(key.startswith(_TEXT_MODEL) for key in expected)
    state = {(_TEXT_MODEL + name if nested else name): tensor for name, tensor in bare.items()}
    for key, value in expected.items():
        # Versions that keep position_ids in the state dict get the correct ids, never the file's.
        if key.endswith("position_ids"):
            state[key] = torch.arange(value.shape[-1]).expand(value.shape).clone()
    missing = [key for key in expected if key not in state]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ModelError(
            f"{path}: text-encoder weight {missing[0].removeprefix(_TEXT_MODEL)} missing{more}; "
            "not an SD 1.x CLIP text encoder, or a damaged file"
        )
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ModelError(
                f"{path}: {key.removeprefix(_TEXT_MODEL)} has shape {tuple(state[key].shape)}, the config "
                f"says {tuple(value.shape)}; not an SD 1.5-sized CLIP text encoder"
            )
    model.load_state_dict({key: state[key].contiguous() for key in expected}, strict=True, assign=True)
    for name, buffer in list(model.named_buffers()):
        if not buffer.is_meta:
            continue
        owner_name, _, attr = name.rpartition(".")
        if attr != "position_ids":
            raise ModelError(f"{path}: cannot initialise buffer {name} of the text encoder")
        owner = model.get_submodule(owner_name)
        owner.register_buffer(
            attr, torch.arange(buffer.shape[-1]).expand(buffer.shape).clone(), persistent=False
        )
    return model.eval().requires_grad_(False)
