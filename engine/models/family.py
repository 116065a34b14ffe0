"""The model-family seam: everything that differs between model families, in one object.

Training, TEC and the CLI ask the family for what depends on the architecture (how to
recognise and load a model, its shipped configs, which layers a Kohya LoRA adapts and their
key prefixes, the text encoder TEC measures, its tiny test model) instead of branching on
the family's name. Only SD 1.5 exists (:mod:`kiln.engine.models.sd15`); another family is one
more module and one more row in :data:`FAMILIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.engine.errors import ModelError
from kiln.engine.models import sd15


@dataclass(frozen=True)
class ModelFamily:
    """One model family.

    Attributes:
        name: Short name (``sd15``).
        detect: Whether a path (diffusers folder or single file) holds this family's model;
            reads only ``model_index.json`` or a safetensors header.
        load: ``load(path, allow_pickle)``: the full pipeline on the CPU, offline.
        config_dir: The diffusers config folder Kiln ships for the family's single files.
        lora_text_encoder_prefixes: Key prefixes of a LoRA's text-encoder weights.
        unet_targets: ``unet_targets(unet, rank, alpha, conv_rank, conv_alpha)``: the U-Net
            layers Kohya adapts, with their Kohya names.
        text_encoder_targets: ``text_encoder_targets(text_encoder, rank, alpha)``: the
            text-encoder layers Kohya adapts.
        text_encoder: The pipeline's text encoder (what TEC measures).
        build_tiny: ``build_tiny(seed)``: a tiny pipeline of the family's shape for tests.
    """

    name: str
    detect: Callable[[Path], bool]
    load: Callable[..., Any]
    config_dir: Path
    lora_text_encoder_prefixes: tuple[str, ...]
    unet_targets: Callable[..., list]
    text_encoder_targets: Callable[..., list]
    text_encoder: Callable[[Any], Any]
    build_tiny: Callable[..., Any]


SD15 = ModelFamily(
    name=sd15.NAME,
    detect=sd15.detect,
    load=sd15.load,
    config_dir=sd15.CONFIG_DIR,
    lora_text_encoder_prefixes=sd15.LORA_TEXT_ENCODER_PREFIXES,
    unet_targets=sd15.unet_targets,
    text_encoder_targets=sd15.text_encoder_targets,
    text_encoder=sd15.text_encoder,
    build_tiny=sd15.build_tiny,
)
FAMILIES: tuple[ModelFamily, ...] = (SD15,)


def detect_family(path: Path | str) -> ModelFamily:
    """The family of the model at ``path``.

    Raises:
        ModelError: No family recognises it.
    """
    path = Path(path).expanduser()
    for family in FAMILIES:
        if family.detect(path):
            return family
    raise ModelError(f"{path}: not a model of a family Kiln trains ({', '.join(f.name for f in FAMILIES)})")
