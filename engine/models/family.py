"""The model-family seam: everything that differs between model families, in one object.

Training, TEC, planning and the CLI ask the family for what depends on the architecture (how
to recognise and load a model, its text encoders and how captions become conditioning, which
layers a Kohya LoRA adapts and their key prefixes, its defaults and metadata names, its tiny
test model) instead of branching on the family's name. SD 1.5 (:mod:`kiln.engine.models.sd15`)
and SDXL (:mod:`kiln.engine.models.sdxl`) are the two rows of :data:`FAMILIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.engine.errors import ModelError
from kiln.engine.models import sd15, sdxl
from kiln.engine.models.lora_keys import TEXT_ENCODER_1_PREFIX, TEXT_ENCODER_2_PREFIX, TEXT_ENCODER_PREFIX

FAMILY_CHOICES = ("auto", "sd15", "sdxl")


@dataclass(frozen=True)
class TextEncoderSlot:
    """One text encoder of a family's pipeline.

    Attributes:
        attr: The pipeline's attribute (``text_encoder``, ``text_encoder_2``).
        tokenizer: Its tokenizer's attribute.
        prefix: Its Kohya LoRA key prefix (``lora_te``, ``lora_te1``, ``lora_te2``).
        resume_key: Its adapters' key in the resume state (``te_lora`` for the first, as before
            SDXL, so older states still resume).
        label: How logs and TEC reports name it.
    """

    attr: str
    tokenizer: str
    prefix: str
    resume_key: str
    label: str


@dataclass(frozen=True)
class ModelFamily:
    """One model family.

    Attributes:
        name: Short name (``sd15``, ``sdxl``).
        title: How a person calls it (``SD 1.5``).
        detect: Whether a path (diffusers folder or single file) holds this family's model;
            reads only ``model_index.json`` or a safetensors header.
        load: ``load(path, allow_pickle)``: the full pipeline on the CPU, offline.
        config_dir: The diffusers config folder Kiln ships for the family's single files.
        text_encoders: The pipeline's text encoders, in order.
        lora_text_encoder_prefixes: Key prefixes (with ``_``) of a LoRA's text-encoder weights.
        unet_targets: ``unet_targets(unet, rank, alpha, conv_rank, conv_alpha)``: the U-Net
            layers Kohya adapts, with their Kohya names.
        text_encoder_targets: ``text_encoder_targets(model, rank, alpha, prefix)``: a text
            encoder's layers Kohya adapts.
        encode_text: ``encode_text(encoders, plain, ids, clip_skip)``: the conditioning of
            tokenised captions (``encoders`` as training wraps them, ``plain`` unwrapped).
        time_ids: ``time_ids(sizes, buckets)``: per-image size conditioning, or None for a
            family without it.
        resolution: The training resolution a plan starts from.
        bucket_step_multiple: Bucket steps must be a multiple of this.
        max_clip_skip: The largest ``train.clip_skip`` the family accepts.
        base_model_version: Kohya's ``ss_base_model_version``.
        modelspec_architecture: ``modelspec.architecture`` of a LoRA.
        modelspec_implementation: ``modelspec.implementation`` of a LoRA (as sd-scripts writes).
        build_tiny: ``build_tiny(seed)``: a tiny pipeline of the family's shape for tests.
        write_tiny: ``write_tiny(out, single_file)``: that tiny model written to disk.
        single_file_state: ``single_file_state(unet, vae, text_encoders)``: the weights in the
            family's original single-file layout (a full fine-tune's checkpoint).
        checkpoint_architecture: ``modelspec.architecture`` of a whole checkpoint.
    """

    name: str
    title: str
    detect: Callable[[Path], bool]
    load: Callable[..., Any]
    config_dir: Path
    text_encoders: tuple[TextEncoderSlot, ...]
    lora_text_encoder_prefixes: tuple[str, ...]
    unet_targets: Callable[..., list]
    text_encoder_targets: Callable[..., list]
    encode_text: Callable[..., Any]
    time_ids: Callable[..., Any]
    resolution: int
    bucket_step_multiple: int
    max_clip_skip: int
    base_model_version: str
    modelspec_architecture: str
    modelspec_implementation: str
    build_tiny: Callable[..., Any]
    write_tiny: Callable[..., Path]
    single_file_state: Callable[..., dict]
    checkpoint_architecture: str


def _no_time_ids(sizes: Any, buckets: Any) -> None:
    return None


SD15 = ModelFamily(
    name=sd15.NAME,
    title="SD 1.5",
    detect=sd15.detect,
    load=sd15.load,
    config_dir=sd15.CONFIG_DIR,
    text_encoders=(TextEncoderSlot("text_encoder", "tokenizer", TEXT_ENCODER_PREFIX, "te_lora", "CLIP-L"),),
    lora_text_encoder_prefixes=sd15.LORA_TEXT_ENCODER_PREFIXES,
    unet_targets=sd15.unet_targets,
    text_encoder_targets=sd15.text_encoder_targets,
    encode_text=sd15.encode_text,
    time_ids=_no_time_ids,
    resolution=512,
    bucket_step_multiple=8,
    max_clip_skip=12,
    base_model_version="sd_v1",
    modelspec_architecture="stable-diffusion-v1/lora",
    modelspec_implementation="diffusers",
    build_tiny=sd15.build_tiny,
    write_tiny=sd15.write_tiny,
    single_file_state=sd15.single_file_state,
    checkpoint_architecture="stable-diffusion-v1",
)
SDXL = ModelFamily(
    name=sdxl.NAME,
    title="SDXL",
    detect=sdxl.detect,
    load=sdxl.load,
    config_dir=sdxl.CONFIG_DIR,
    text_encoders=(
        TextEncoderSlot("text_encoder", "tokenizer", TEXT_ENCODER_1_PREFIX, "te_lora", "CLIP-L"),
        TextEncoderSlot("text_encoder_2", "tokenizer_2", TEXT_ENCODER_2_PREFIX, "te2_lora", "OpenCLIP bigG"),
    ),
    lora_text_encoder_prefixes=(TEXT_ENCODER_1_PREFIX + "_", TEXT_ENCODER_2_PREFIX + "_"),
    unet_targets=sdxl.unet_targets,
    text_encoder_targets=sd15.text_encoder_targets,
    encode_text=sdxl.encode_text,
    time_ids=sdxl.time_ids,
    resolution=1024,
    bucket_step_multiple=sdxl.BUCKET_STEP_MULTIPLE,
    max_clip_skip=1,
    base_model_version="sdxl_base_v1-0",
    modelspec_architecture="stable-diffusion-xl-v1-base/lora",
    modelspec_implementation="https://github.com/Stability-AI/generative-models",
    build_tiny=sdxl.build_tiny,
    write_tiny=sdxl.write_tiny,
    single_file_state=sdxl.single_file_state,
    checkpoint_architecture="stable-diffusion-xl-v1-base",
)
# Detection order: SDXL first, since SD 1.5's check accepts whatever is not recognisably SDXL.
FAMILIES: tuple[ModelFamily, ...] = (SDXL, SD15)


def family_named(name: str) -> ModelFamily:
    """The family called ``name`` (``sd15``, ``sdxl``).

    Raises:
        ModelError: No such family.
    """
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ModelError(f"unknown model family {name!r}; use one of {', '.join(FAMILY_CHOICES)}")


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


def resolve_family(path: Path | str, requested: str = "auto") -> ModelFamily:
    """The family to train the model at ``path`` as: detected for ``auto``, else the one asked
    for, refused when the files are recognisably another family's.

    Raises:
        ModelError: The path is no family's, or is another family's than the one asked for.
    """
    if not Path(path).expanduser().exists():
        raise ModelError(
            f"{Path(path).expanduser()}: no such file or folder; set model.base to a diffusers folder "
            "or a .safetensors file"
        )
    if requested == "auto":
        return detect_family(path)
    family = family_named(requested)
    found = detect_family(path)
    if found is not family:
        raise ModelError(
            f"{Path(path).expanduser()}: an {found.title} model, but model.family = {requested!r}; "
            f'set model.family = "{found.name}" or "auto"'
        )
    return family


def family_of_lora_keys(keys: Any) -> ModelFamily | None:
    """The family a LoRA's keys were trained for; None when its keys do not tell.

    The text encoders tell first (``lora_te2_`` is SDXL's second encoder, ``lora_te_`` SD 1.5's
    only one). Then the U-Net's layout: SDXL has a second transformer layer in its deeper
    blocks and no attention in its first level, SD 1.5 the reverse, in either naming (Kohya's
    SGM ``input_blocks`` or diffusers' ``down_blocks``).
    """
    names = [str(key) for key in keys]

    def has(part: str) -> bool:
        return any(part in name for name in names)

    if has(TEXT_ENCODER_2_PREFIX + "_"):
        return SDXL
    if any(name.startswith(TEXT_ENCODER_PREFIX + "_") for name in names):
        return SD15
    if has("_transformer_blocks_1_"):
        return SDXL
    if has("lora_unet_input_blocks_1_1_") or has("lora_unet_down_blocks_0_attentions_"):
        return SD15
    if has("lora_unet_input_blocks_") or has("lora_unet_down_blocks_"):
        return SDXL
    return None
