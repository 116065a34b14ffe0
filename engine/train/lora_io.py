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
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from kiln.engine.fsutil import atomic_write_bytes
from kiln.engine.train.network import LoraTarget, lora_weights
from torch import nn

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


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
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
        for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
            tensors[key] = handle.get_tensor(key)
    return tensors, metadata


def modelspec_metadata(
    title: str, resolution: int, date: str, prediction_type: str = "epsilon"
) -> dict[str, str]:
    """Stability's ``modelspec.*`` keys for an SD 1.5 LoRA (what Kohya writes and civitai shows)."""
    return {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": "diffusers",
        "modelspec.title": title,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.date": date,
        "modelspec.prediction_type": prediction_type,
    }


def json_metadata(value: object) -> str:
    """Kohya stores nested metadata (dataset dirs, tag frequency, buckets) as JSON strings."""
    return json.dumps(value, ensure_ascii=False, sort_keys=False)
