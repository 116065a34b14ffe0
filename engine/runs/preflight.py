"""Checks a run must pass before its run folder exists: the device, the model, the memory.

Every refusal is one line that names the setting to change. Nothing here imports torch unless
an NVIDIA GPU is visible (then only to ask it how much memory is free). The memory estimate
reads the base model's tensor shapes from its safetensors headers (a few KB, no weights) and
sums them as the plan does (:mod:`kiln.engine.plan.memory`: weights, trained parameters with
gradients and optimizer state, and each family's measured activations per latent pixel).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

from kiln.engine.errors import UsageError
from kiln.engine.models.family import resolve_family
from kiln.engine.plan.memory import GIB, MemoryEstimate, ModelShape, RunShape
from kiln.engine.plan.memory import estimate_memory as estimate_from_counts
from kiln.engine.train.config import TrainConfig, check_family_settings

# Above this share of the free memory the run is allowed, with a warning.
WARN_SHARE = 0.8
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1}
VAE_PREFIXES = ("vae/", "first_stage_model.")


def on_cpu(cpu: bool) -> bool:
    """Whether a run trains on the CPU: asked for, or no CUDA GPU here."""
    if cpu:
        return True
    from kiln.engine.nvidia import nvidia_gpu_visible

    if not nvidia_gpu_visible():
        return True
    import torch

    return not torch.cuda.is_available()


def check_run(
    config: TrainConfig, *, cpu: bool = False, gpus: int = 1, warn: Callable[[str], None] | None = None
) -> None:
    """Refuse a run that cannot work on this machine, before anything is written or loaded.

    Raises:
        UsageError: fp16 on a CPU, a bucket range that excludes the resolution, or a memory
            estimate above what the machine has free (the message gives the figure).
    """
    cpu_run = on_cpu(cpu)
    if config.train.precision == "fp16" and cpu_run:
        raise UsageError(
            'train.precision = "fp16" needs an NVIDIA GPU and this run trains on the CPU: '
            "use --set train.precision=bf16 (or fp32)"
        )
    data = config.dataset
    if data.reg_path and not Path(data.reg_path).is_dir():
        raise UsageError(
            f"dataset.reg_path = {data.reg_path}: no such folder; point it at a folder of N_class/ "
            'folders of class images, or set it to ""'
        )
    if config.model.base:
        family = resolve_family(config.model.base, config.model.family)
        check_family_settings(config, family)
    if data.min_bucket_reso > data.resolution:
        raise UsageError(
            f"dataset.min_bucket_reso = {data.min_bucket_reso} is above dataset.resolution = "
            f"{data.resolution}: lower dataset.min_bucket_reso"
        )
    if skip_memory_check():
        return
    shape = model_shape(Path(config.model.base))
    if shape is None:
        return
    estimate = estimate_memory(config, shape)
    processes = gpus if cpu_run else 1
    needed = estimate.total * processes
    free = available_memory(cpu_run)
    if free is None:
        return
    where = "RAM" if cpu_run else "GPU memory"
    figure = f"this run needs {estimate.describe()}" + (f" x {processes} processes" if processes > 1 else "")
    if needed > free:
        raise UsageError(
            f"{figure}, and this machine has {free / GIB:.1f} GiB of {where} free: lower network.rank, "
            "train.batch_size or dataset.resolution, or set train.gradient_checkpointing = true"
        )
    if needed > WARN_SHARE * free and warn is not None:
        warn(f"{figure} of the {free / GIB:.1f} GiB of {where} free: close to the limit")


def available_memory(cpu_run: bool) -> float | None:
    """Free bytes where the run trains: MemAvailable on a CPU, the GPU's free memory on a GPU."""
    if not cpu_run:
        try:
            import torch

            return float(torch.cuda.mem_get_info()[0])
        except Exception:
            return None
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except ImportError:
        pass
    from kiln.engine.train.memory import proc_kib

    available = proc_kib("/proc/meminfo", "MemAvailable")
    return None if available is None else float(available)


def estimate_memory(config: TrainConfig, shape: ModelShape) -> MemoryEstimate:
    """Bytes a run of ``config`` needs at its peak (:func:`kiln.engine.plan.memory.estimate_memory`)."""
    train, network, data = config.train, config.network, config.dataset
    family = resolve_family(config.model.base, config.model.family).name if config.model.base else "sd15"
    fixed_captions = not data.shuffle_caption and data.caption_dropout_rate == 0
    run = RunShape(
        family=family,
        batch=train.batch_size,
        pixels=data.resolution**2,
        precision=train.precision,
        checkpointing=train.gradient_checkpointing,
        rank=network.rank,
        conv_rank=network.effective_conv_rank,
        train_text_encoder=network.train_text_encoder,
        text_encoders_offloaded=train.cache_text_encoder_outputs and fixed_captions,
        full=network.type == "full",
        optimizer=train.optimizer,
    )
    return estimate_from_counts(shape, run)


def model_shape(base: Path) -> ModelShape | None:
    """Parameter counts of a diffusers folder or a single .safetensors file; None when its
    tensors cannot be read without loading it (.bin, .ckpt)."""
    base = base.expanduser()
    if base.is_dir():
        parts = {
            part: sorted((base / part).glob("*.safetensors"))
            for part in ("unet", "text_encoder", "vae", "text_encoder_2")
        }
        if not parts["unet"]:
            return None
        tensors = {
            f"{part}/{name}": shape for part, files in parts.items() for name, shape in _read_headers(files)
        }
        unet_prefix, te_prefixes = "unet/", ("text_encoder/", "text_encoder_2/")
    elif base.suffix.lower() == ".safetensors" and base.is_file():
        tensors = dict(_read_headers([base]))
        unet_prefix, te_prefixes = "model.diffusion_model.", ("cond_stage_model.", "conditioner.")
    else:
        return None
    params = unet_params = unet_rank = te_rank = conv_rank = vae_params = te_params = 0
    for name, (dims, _size) in tensors.items():
        count = math.prod(dims)
        params += count
        if name.startswith(VAE_PREFIXES):
            vae_params += count
        elif name.startswith(te_prefixes):
            te_params += count
        if name.startswith(unet_prefix):
            unet_params += count
            if name.endswith(".weight") and _targeted(name, UNET_TARGETS) and len(dims) >= 2:
                unet_rank += dims[0] + math.prod(dims[1:])
            elif name.endswith(".weight") and len(dims) == 4 and dims[2] == 3:
                conv_rank += dims[0] + math.prod(dims[1:])
        elif name.startswith(te_prefixes) and name.endswith(".weight") and _targeted(name, TE_TARGETS):
            te_rank += dims[0] + math.prod(dims[1:])
    return ModelShape(params, unet_params, unet_rank, te_rank, conv_rank, vae_params, te_params)


def _targeted(name: str, targets: tuple[str, ...]) -> bool:
    stem = name[: -len(".weight")]
    return any(stem.endswith("." + target) or stem == target for target in targets)


def _read_headers(files: Iterable[Path]) -> Iterable[tuple[str, tuple[tuple[int, ...], int]]]:
    """``(tensor name, (shape, bytes per value))`` from safetensors headers (no weights read)."""
    for path in files:
        try:
            with open(path, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > 100 * 1024 * 1024:
                    continue
                header = json.loads(handle.read(length))
        except (OSError, ValueError, struct.error):
            continue
        for name, entry in header.items():
            if name == "__metadata__" or not isinstance(entry, dict):
                continue
            yield name, (tuple(entry.get("shape", ())), DTYPE_BYTES.get(entry.get("dtype", ""), 4))


def skip_memory_check() -> bool:
    """``KILN_NO_MEMORY_CHECK=1`` turns the estimate off (a machine whose free memory lies)."""
    return os.environ.get("KILN_NO_MEMORY_CHECK", "") not in ("", "0")
