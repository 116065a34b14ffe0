"""LoRA files as Kohya writes them: key names, alphas, ``ss_*``/``modelspec.*`` metadata, hashes.

AUTO1111, ComfyUI, civitai and diffusers' ``load_lora_weights`` all read this layout:
``lora_unet_<path>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` (a 0-d tensor holding
the configured alpha; the effective scale is alpha / rank). diffusers' own
``convert_state_dict_to_kohya`` writes alpha = rank and ``lora_te1_`` keys, which is why
Kiln writes the file itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from kiln.engine import __version__
from kiln.engine.fsutil import atomic_write_bytes
from kiln.engine.models.family import SD15, ModelFamily
from kiln.engine.models.lora_keys import LoraTarget
from kiln.engine.models.safetensors_file import read_safetensors
from kiln.engine.train.config import MIXED_PRECISION, TrainConfig
from kiln.engine.train.network import lora_weights
from torch import nn

if TYPE_CHECKING:
    from kiln.engine.plan.steps import StepPlan
    from kiln.engine.train.data import TrainingSet

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
MODELSPEC_VERSION = "1.0.1"

# The ss_* keys sd-scripts' train_network.py writes that Kiln leaves out, and why (a test keeps
# this list and the written keys together; docs/training.md shows it).
LEFT_OUT_SS_KEYS: dict[str, str] = {
    "ss_color_aug": "Kiln has no colour augmentation",
    "ss_flip_aug": "Kiln has no flip augmentation",
    "ss_random_crop": "Kiln always centre-crops, as Kohya does without random_crop",
    "ss_face_crop_aug_range": "Kiln has no face-crop augmentation",
    "ss_multires_noise_iterations": "Kiln has no multires noise",
    "ss_multires_noise_discount": "Kiln has no multires noise",
    "ss_adaptive_noise_scale": "Kiln has no adaptive noise scale",
    "ss_scale_weight_norms": "Kiln has no max-norm regularisation",
    "ss_ip_noise_gamma": "Kiln has no input-perturbation noise",
    "ss_debiased_estimation": "Kiln has no debiased estimation loss",
    "ss_huber_c": "Kiln trains with the L2 loss only",
    "ss_loss_type": "Kiln trains with the L2 loss only",
    "ss_vae_name": "Kiln uses the base model's own VAE",
    "ss_vae_hash": "Kiln uses the base model's own VAE",
    "ss_new_vae_hash": "Kiln uses the base model's own VAE",
    "ss_caption_tag_dropout_rate": "Kiln has no per-tag caption dropout",
    "ss_caption_dropout_every_n_epochs": "Kiln drops captions per step only (ss_caption_dropout_rate)",
    "ss_max_token_length": "Kiln uses the 75-token CLIP window only",
    "ss_lowram": "no such mode in Kiln",
    "ss_datasets": "written by sd-scripts only for --dataset_config TOML files; Kiln writes ss_dataset_dirs",
    "ss_network_dropout": "Kiln has no network dropout",
}


def kohya_state_dict(
    model: nn.Module, targets: list[LoraTarget], dtype: torch.dtype = torch.float16
) -> dict[str, torch.Tensor]:
    """The adapters of ``model`` under Kohya key names, cast to ``dtype`` on the CPU."""
    state: dict[str, torch.Tensor] = {}
    for target in targets:
        down, up = lora_weights(model, target)
        state[f"{target.kohya}.lora_down.weight"] = down.detach().to("cpu", dtype).contiguous()
        state[f"{target.kohya}.lora_up.weight"] = up.detach().to("cpu", dtype).contiguous()
        state[f"{target.kohya}.alpha"] = torch.tensor(float(target.alpha), dtype=dtype)
    return state


def safetensors_hashes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> tuple[str, str]:
    """``(sshs_model_hash, sshs_legacy_hash)`` as Kohya precomputes them for A1111's extra-networks.

    The model hash is the SHA-256 of the file's data section (after the header) when written
    with only the ``ss_*`` metadata; the legacy hash is the first 8 hex digits of the SHA-256
    of the 64 KiB at offset 1 MiB of that same file.
    """
    from safetensors.torch import save

    data = save(dict(tensors), metadata={k: v for k, v in metadata.items() if k.startswith("ss_")})
    header = struct.unpack("<Q", data[:8])[0]
    model_hash = hashlib.sha256(data[8 + header :]).hexdigest()
    legacy = hashlib.sha256(io.BytesIO(data).getbuffer()[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    return model_hash, legacy


def write_lora(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> Path:
    """Write a LoRA file atomically (a crash leaves the previous file or none, never half)."""
    from safetensors.torch import save

    meta = {key: str(value) for key, value in metadata.items()}
    meta["sshs_model_hash"], meta["sshs_legacy_hash"] = safetensors_hashes(tensors, meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(dict(tensors), metadata=meta))
    return path


def read_lora(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A LoRA file's tensors and metadata (safetensors only: nothing is unpickled)."""
    return read_safetensors(path)


def modelspec_metadata(
    title: str,
    resolution: int,
    date: str,
    prediction_type: str = "epsilon",
    family: ModelFamily = SD15,
    clip_skip: int = 1,
) -> dict[str, str]:
    """Stability's ``modelspec.*`` keys for a LoRA of ``family`` (what Kohya writes and civitai
    shows). The prediction type is modelspec's word: ``epsilon`` or ``v`` (not diffusers'
    ``v_prediction``); ``encoder_layer`` is written only with a clip skip, as sd-scripts does."""
    spec = {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": family.modelspec_architecture,
        "modelspec.implementation": family.modelspec_implementation,
        "modelspec.title": title,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.date": date,
        "modelspec.prediction_type": "v" if prediction_type in ("v", "v_prediction") else "epsilon",
    }
    if clip_skip > 1:
        spec["modelspec.encoder_layer"] = str(clip_skip)
    return spec


def optimizer_description(optimizer: torch.optim.Optimizer, weight_decay: float) -> str:
    """``torch.optim.adamw.AdamW(weight_decay=0.01)``: the optimizer's own class (not accelerate's
    ``AcceleratedOptimizer`` around it) and the arguments Kiln gives it, as sd-scripts writes them."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return f"{type(inner).__module__}.{type(inner).__name__}(weight_decay={weight_decay})"


def mean_ar_error(data: TrainingSet) -> float:
    """sd-scripts' ``mean_img_ar_error``: the mean over images of |bucket aspect - image aspect|."""
    errors = [
        abs(image.bucket[0] / image.bucket[1] - image.size[0] / image.size[1])
        for image in data.images
        if image.size[1] and image.bucket[1]
    ]
    return round(sum(errors) / len(errors), 6) if errors else 0.0


def base_model_hashes(path: Path) -> tuple[str, str] | None:
    """A1111's hashes of a single-file base model as sd-scripts records them: the legacy hash
    (the first 8 hex digits of the SHA-256 of 64 KiB at offset 1 MiB) and the SHA-256 of the
    whole file; None for a diffusers folder (sd-scripts hashes files only)."""
    path = Path(path)
    if not path.is_file():
        return None
    whole = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(0x100000)
        legacy = hashlib.sha256(handle.read(0x10000)).hexdigest()[:8]
        handle.seek(0)
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            whole.update(chunk)
    return legacy, whole.hexdigest()


def json_metadata(value: object) -> str:
    """Kohya stores nested metadata (dataset dirs, tag frequency, buckets) as JSON strings."""
    return json.dumps(value, ensure_ascii=False, sort_keys=False)


def lora_metadata(
    config: TrainConfig,
    *,
    epoch: int,
    step: int,
    total_steps: int,
    plan: StepPlan,
    processes: int,
    data: TrainingSet,
    started_at: float,
    model_name: str,
    optimizer: torch.optim.Optimizer,
    prediction_type: str,
    family: ModelFamily = SD15,
    model_hashes: tuple[str, str] | None = None,
) -> dict[str, str]:
    """Kohya's ``ss_*`` keys and Stability's ``modelspec.*`` keys for a LoRA file saved at ``epoch``.

    Args:
        config: The run's config.
        epoch: The epoch the file is saved at; ``step`` and ``total_steps``: optimizer steps done
            and planned.
        plan: The run's step plan (buckets, items and batches per epoch).
        processes: Training processes (the total batch size counts them).
        data: The training set (its folders and tag frequency).
        started_at: When the run first started (the session id derives from it).
        model_name: The base model's file or folder name.
        optimizer: The optimizer (its class is recorded; accelerate's wrapper is looked through).
        prediction_type: ``epsilon`` or ``v_prediction``.
        family: The base model's family (base model version, modelspec architecture).
        model_hashes: ``(legacy, sha256)`` of a single-file base model (:func:`base_model_hashes`).
    """
    train, network, dataset = config.train, config.network, config.dataset
    now = time.time()
    lycoris = network.type in ("loha", "lokr", "dora")
    conv_rank = network.effective_conv_rank
    if lycoris:
        from kiln.engine.train.lycoris_network import network_args

        conv_args: dict[str, str] | None = network_args(
            network.type, conv_rank, network.conv_alpha, network.factor
        )
    else:
        conv_args = {"conv_dim": str(conv_rank), "conv_alpha": str(network.conv_alpha)} if conv_rank else None
    buckets = {
        str(i): {"resolution": list(bucket.resolution or ()), "count": bucket.items}
        for i, bucket in enumerate(plan.buckets)
    }
    meta: dict[str, Any] = {
        "ss_session_id": str(random.Random(started_at).randrange(2**31)),
        "ss_training_started_at": started_at,
        "ss_training_finished_at": now,
        "ss_output_name": config.output.name,
        "ss_training_comment": config.output.comment,
        "ss_sd_model_name": model_name,
        "ss_sd_model_hash": model_hashes[0] if model_hashes else None,
        "ss_new_sd_model_hash": model_hashes[1] if model_hashes else None,
        "ss_base_model_version": family.base_model_version,
        "ss_v2": False,
        # LyCORIS's Kohya network module, as sd-scripts records --network_module lycoris.kohya.
        "ss_network_module": "lycoris.kohya" if lycoris else "networks.lora",
        "ss_network_dim": network.rank,
        "ss_network_alpha": network.alpha,
        "ss_network_args": json_metadata(conv_args) if conv_args else None,
        "ss_network_train_unet_only": not network.train_text_encoder,
        # Training samples per epoch (repeats in), reg samples not counted, as in sd-scripts.
        "ss_num_train_images": sum(image.repeats for image in data.trained),
        "ss_num_reg_images": data.reg_items,
        "ss_prior_loss_weight": train.prior_loss_weight,
        "ss_num_batches_per_epoch": plan.batches_per_epoch,
        "ss_num_epochs": train.epochs,
        "ss_epoch": epoch,
        "ss_steps": step,
        "ss_max_train_steps": total_steps,
        "ss_batch_size_per_device": train.batch_size,
        "ss_total_batch_size": train.batch_size * train.grad_accumulation * processes,
        "ss_gradient_accumulation_steps": train.grad_accumulation,
        "ss_learning_rate": train.unet_lr,
        "ss_unet_lr": train.unet_lr,
        "ss_text_encoder_lr": config.text_encoder_lr if network.train_text_encoder else 0.0,
        # sd-scripts' networks.lora has one text-encoder LR; SDXL's second one is Kiln's own key.
        "kiln_text_encoder_2_lr": (
            (config.text_encoder_2_lr if network.train_text_encoder else 0.0)
            if len(family.text_encoders) > 1
            else None
        ),
        "ss_lr_scheduler": train.scheduler,
        "ss_lr_warmup_steps": train.lr_warmup_steps,
        "ss_optimizer": optimizer_description(optimizer, train.weight_decay),
        "ss_max_grad_norm": train.max_grad_norm,
        "ss_mixed_precision": MIXED_PRECISION[train.precision],
        "ss_full_fp16": False,
        "ss_save_precision": config.save.precision,
        "ss_seed": train.seed,
        "ss_zero_terminal_snr": train.zero_terminal_snr,
        # sd-scripts writes its argument as given: None when the option is off.
        "ss_min_snr_gamma": train.min_snr_gamma or "None",
        "ss_noise_offset": train.noise_offset or "None",
        # Kiln's clip_skip 1 is sd-scripts' default (no --clip_skip): "None".
        "ss_clip_skip": train.clip_skip if train.clip_skip > 1 else "None",
        "ss_gradient_checkpointing": train.gradient_checkpointing,
        "ss_cache_latents": train.cache_latents,
        "ss_resolution": f"({dataset.resolution}, {dataset.resolution})",
        "ss_enable_bucket": True,
        "ss_min_bucket_reso": dataset.min_bucket_reso,
        "ss_max_bucket_reso": dataset.max_bucket_reso,
        "ss_bucket_no_upscale": dataset.bucket_no_upscale,
        "ss_bucket_info": json_metadata({"buckets": buckets, "mean_img_ar_error": mean_ar_error(data)}),
        "ss_shuffle_caption": dataset.shuffle_caption,
        "ss_keep_tokens": dataset.keep_tokens,
        "ss_caption_dropout_rate": dataset.caption_dropout_rate,
        "ss_dataset_dirs": json_metadata(data.dataset_dirs()),
        "ss_reg_dataset_dirs": json_metadata(data.reg_dirs),
        "ss_tag_frequency": json_metadata(data.tag_frequency()),
        "kiln_version": __version__,
    }
    out = {key: str(value) for key, value in meta.items() if value is not None}
    date = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
    out.update(
        modelspec_metadata(
            config.output.name, dataset.resolution, date, prediction_type, family, train.clip_skip
        )
    )
    return out
