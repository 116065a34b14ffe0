"""Load a base model from a local path, offline: a diffusers folder or a single file.

Single-file checkpoints (what AUTO1111/ComfyUI users have) carry weights only; the component
configs and tokenizers come from ``engine/models/configs/<family>/``, shipped with Kiln, so
nothing is ever fetched from a hub. Pickled checkpoints (``.ckpt``, ``.pt``...) can run code when loaded and
are refused unless the user says they trust the file.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kiln.engine.errors import ModelError

SD15_CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "sd15"
SDXL_CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "sdxl"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SINGLE_FILE_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
# Present in every SD 1.x/2.x single file; its width tells SD 1.5 (768) from SD 2 (1024).
_CROSS_ATTENTION_KEY = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
SDXL_MARKER = "conditioner.embedders.1.model.ln_final.weight"

ModelKind = Literal["folder", "single-file"]


@dataclass(frozen=True)
class ModelSource:
    """Where a base model lives and how to read it.

    Attributes:
        path: The resolved folder or file.
        kind: ``folder`` (diffusers layout) or ``single-file``.
        pickle: Whether reading it unpickles (a ``.ckpt``/``.pt`` file or a folder of ``.bin``).
    """

    path: Path
    kind: ModelKind
    pickle: bool

    @property
    def name(self) -> str:
        """The model's name as Kohya's ``ss_sd_model_name`` holds it (file or folder name)."""
        return self.path.name


def model_source(base: Path | str, allow_pickle: bool = False) -> ModelSource:
    """Check ``base`` and say how to load it, before any heavy import.

    Raises:
        ModelError: The path is missing, is not a model, or is a pickle without ``allow_pickle``.
    """
    path = Path(base).expanduser()
    if not path.exists():
        raise ModelError(
            f"{path}: no such file or folder; set model.base to a diffusers folder or a .safetensors file"
        )
    path = path.resolve()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelError(
                f"{path}: not a diffusers model folder (no model_index.json); pass the folder that "
                "holds unet/, vae/, text_encoder/, or a single .safetensors checkpoint"
            )
        has_safetensors = any(path.glob("*/*.safetensors"))
        pickled = not has_safetensors and any(path.glob("*/*.bin"))
        if pickled and not allow_pickle:
            raise ModelError(_pickle_message(path, "its weights are .bin files"))
        return ModelSource(path, "folder", pickled)
    suffix = path.suffix.lower()
    if suffix not in SINGLE_FILE_SUFFIXES:
        raise ModelError(f"{path}: unknown model file type {suffix!r}; use a .safetensors checkpoint")
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelError(_pickle_message(path, f"{suffix} files are Python pickles"))
        return ModelSource(path, "single-file", True)
    return ModelSource(path, "single-file", False)


def _pickle_message(path: Path, what: str) -> str:
    return (
        f"{path}: refused: {what}, which can run arbitrary code when loaded; convert it to "
        ".safetensors, or pass --allow-pickle (model.allow_pickle = true) if you trust its source"
    )


ConfigDirFor = Callable[["ModelSource", Path], Path]


def load_pipeline(
    base: Path | str,
    allow_pickle: bool = False,
    pipeline: str = "StableDiffusionPipeline",
    config_dir_for: ConfigDirFor | None = None,
) -> Any:
    """Load the base model's full pipeline on the CPU in float32, offline.

    Args:
        base: A diffusers folder or a single-file checkpoint.
        allow_pickle: Accept ``.ckpt``/``.pt`` files and ``.bin`` folders.
        pipeline: The diffusers pipeline class (the family's).
        config_dir_for: ``(source, scratch) -> folder``: the diffusers config folder describing
            a single file, checked against it (default: SD 1.5's, :func:`single_file_config_dir`).

    Returns:
        The pipeline (typed ``Any``: diffusers registers its parts at run time).

    Raises:
        ModelError: The model cannot be read, or is not of the family's shape.
    """
    source = model_source(base, allow_pickle)
    import diffusers
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    cls = getattr(diffusers, pipeline)
    # SD 1.5 pipelines carry a safety checker that training and samples never want.
    extra: dict[str, Any] = (
        {"safety_checker": None, "requires_safety_checker": False}
        if pipeline == "StableDiffusionPipeline"
        else {}
    )
    try:
        if source.kind == "folder":
            pipe = cls.from_pretrained(
                source.path, local_files_only=True, use_safetensors=not source.pickle, **extra
            )
        else:
            with tempfile.TemporaryDirectory(prefix="kiln-configs-") as tmp:
                config_dir = (config_dir_for or single_file_config_dir)(source, Path(tmp))
                pipe = cls.from_single_file(
                    str(source.path), config=str(config_dir), local_files_only=True, **extra
                )
    except ModelError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{source.path}: cannot load the model ({first})") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_configs(source: ModelSource, scratch: Path, pipeline: str) -> Path | None:
    """The configs a file written by ``kiln tiny-model --single-file`` carries in its metadata
    (its shapes are no real family's), laid out in ``scratch``; None for any other file.

    Raises:
        ModelError: The tiny model is another family's (its pipeline is not ``pipeline``).
    """
    if source.pickle:
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(source.path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise ModelError(f"{source.path}: not a readable .safetensors file ({exc})") from exc
    if "kiln.configs" not in metadata:
        return None
    from kiln.engine.models.tiny import write_tiny_configs

    write_tiny_configs(scratch, json.loads(metadata["kiln.configs"]))
    found = json.loads((scratch / "model_index.json").read_text(encoding="utf-8")).get("_class_name")
    if found != pipeline:
        raise ModelError(
            f'{source.path}: a tiny {found} model, not a {pipeline} one; set model.family = "auto"'
        )
    return scratch


def sdxl_config_dir(scratch: Path) -> Path:
    """SDXL's shipped configs laid out in ``scratch`` with both tokenizers (SD 1.5's BPE files;
    the second pads with OpenCLIP's ``"!"``), so nothing is stored twice in the package."""
    import shutil

    shutil.copytree(SDXL_CONFIG_DIR, scratch, dirs_exist_ok=True)
    for name, pad in (("tokenizer", None), ("tokenizer_2", "!")):
        folder = scratch / name
        shutil.copytree(SD15_CONFIG_DIR / "tokenizer", folder, dirs_exist_ok=True)
        if pad is not None:
            for file_name in ("special_tokens_map.json", "tokenizer_config.json"):
                data = json.loads((folder / file_name).read_text(encoding="utf-8"))
                data["pad_token"] = pad
                (folder / file_name).write_text(json.dumps(data), encoding="utf-8")
    return scratch


def single_file_config_dir(source: ModelSource, scratch: Path) -> Path:
    """The diffusers config folder describing an SD 1.5 single file: Kiln's SD 1.5 one, checked
    (or a tiny model's own, :func:`tiny_configs`)."""
    if source.pickle:
        return SD15_CONFIG_DIR
    tiny = tiny_configs(source, scratch, "StableDiffusionPipeline")
    if tiny is not None:
        return tiny
    from safetensors import safe_open

    try:
        with safe_open(str(source.path), framework="pt") as handle:
            keys = set(handle.keys())
            if SDXL_MARKER in keys:
                raise ModelError(
                    f'{source.path}: an SDXL checkpoint loaded as SD 1.5; set model.family = "sdxl" or "auto"'
                )
            if _CROSS_ATTENTION_KEY not in keys:
                raise ModelError(
                    f"{source.path}: not an SD 1.5 checkpoint (no model.diffusion_model.* U-Net keys)"
                )
            width = handle.get_slice(_CROSS_ATTENTION_KEY).get_shape()[-1]
    except ModelError:
        raise
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise ModelError(f"{source.path}: not a readable .safetensors file ({exc})") from exc
    if width != 768:
        raise ModelError(
            f"{source.path}: cross-attention width {width}, SD 1.5 has 768 (an SD 2.x model?); "
            "Kiln trains SD 1.5 and SDXL models"
        )
    return SD15_CONFIG_DIR


def model_fingerprint(source: ModelSource) -> str:
    """A short hash that changes when the model's weight files change (keys the latent cache).

    Only the VAE's weights shape latents, but a single file holds everything; sizes and
    modification times stand in for content so a multi-GB file is not read.
    """
    if source.kind == "folder":
        files = sorted(p for p in (source.path / "vae").glob("*") if p.is_file())
    else:
        files = [source.path]
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
