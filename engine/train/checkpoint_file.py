"""A full fine-tune's epoch as one checkpoint file, in the layout A1111 and ComfyUI load.

The trained U-Net, the (trained or base) text encoders and the base's VAE are written in the
family's original single-file layout (LDM for SD 1.5, SGM for SDXL: the same converters the
tiny models use) at the save precision, with Stability's ``modelspec`` metadata, atomically.
diffusers' ``from_single_file`` reads it back (tested); so does Kiln as a base for the next run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from kiln.engine.fsutil import atomic_write_bytes
from kiln.engine.models.family import ModelFamily
from kiln.engine.train.config import TrainConfig


def checkpoint_metadata(
    config: TrainConfig, family: ModelFamily, epoch: int, step: int, prediction_type: str
) -> dict[str, str]:
    """``modelspec.*`` for a whole checkpoint, and the run's step and epoch."""
    from kiln.engine.train.lora_io import MODELSPEC_VERSION

    resolution = config.dataset.resolution
    return {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": family.checkpoint_architecture,
        "modelspec.implementation": family.modelspec_implementation,
        "modelspec.title": config.output.name,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "modelspec.prediction_type": "v" if prediction_type == "v_prediction" else "epsilon",
        "ss_epoch": str(epoch),
        "ss_steps": str(step),
        "ss_training_comment": config.output.comment,
    }


def write_checkpoint_file(
    path: Path,
    family: ModelFamily,
    unet: Any,
    vae: Any,
    text_encoders: list[Any],
    dtype: torch.dtype,
    metadata: dict[str, str],
) -> Path:
    """Write the models as one ``.safetensors`` checkpoint at ``dtype`` (the VAE in float32
    when saving fp16: SDXL's VAE overflows in fp16, and A1111 upcasts it anyway)."""
    from safetensors.torch import save

    state = family.single_file_state(unet, vae, text_encoders)
    vae_keys = {key for key in state if key.startswith("first_stage_model.")}
    tensors = {
        key: value.detach()
        .to("cpu", torch.float32 if key in vae_keys and dtype == torch.float16 else dtype)
        .contiguous()
        for key, value in state.items()
        if value.is_floating_point()
    }
    tensors.update(
        {
            key: value.detach().cpu().contiguous()
            for key, value in state.items()
            if not value.is_floating_point()
        }
    )
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def save_full_checkpoint(
    path: Path, models: Any, unwrap: Any, config: TrainConfig, epoch: int, step: int, dtype: torch.dtype
) -> Path:
    """Write a full fine-tune's models (``models``: the trainer's TrainModels; ``unwrap``:
    accelerate's ``unwrap_model``) as the epoch's checkpoint file. A fine-tune of one of Kiln's
    tiny models carries their configs, as the tiny single files do."""
    from kiln.engine.models.tiny import carried_configs

    encoders = [unwrap(part.train_model) if part.trains else part.model for part in models.text_encoders]
    metadata = checkpoint_metadata(config, models.family, epoch, step, models.prediction_type)
    carried = carried_configs(Path(config.model.base))
    if carried:
        metadata["kiln.configs"] = carried
    if config.save.diffusers_folder:
        save_diffusers_folder(path.with_suffix(""), models.pipe, len(encoders))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_checkpoint_file(
        path, models.family, unwrap(models.unet_train), models.vae, encoders, dtype, metadata
    )


def save_diffusers_folder(folder: Path, pipe: Any, text_encoders: int) -> Path:
    """The pipeline as it stands (trained weights, or the average while it is applied) as a
    diffusers folder, written beside and swapped in whole (a crash leaves the previous one)."""
    import shutil

    from kiln.engine.models.tiny import standard_text_encoder_keys

    staging = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    pipe.save_pretrained(staging, safe_serialization=True)
    # transformers >= 5.6 saves CLIP without its text_model level; every other reader wants it.
    standard_text_encoder_keys(staging / "text_encoder")
    if text_encoders > 1:
        standard_text_encoder_keys(staging / "text_encoder_2", keep=("text_projection.",))
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder
