"""A tiny SDXL-shaped pipeline with seeded random weights (tests, the SDXL demo, benchmarks).

SDXL's shape at a few MB: three U-Net levels (a plain one, then two with cross-attention, as
SDXL), ``layers_per_block = 2`` and two transformer layers in the deeper levels, so Kohya's
SGM key numbering (``input_blocks.4.1.transformer_blocks.1...``) and upsampler slots are the
real ones; ``addition_embed_type = "text_time"`` with the six size/crop ids; two text encoders
(a CLIP-L-shaped ``CLIPTextModel`` and a projected OpenCLIP-shaped
``CLIPTextModelWithProjection``) whose hidden states are concatenated for cross-attention.

The two encoders' widths differ on purpose: diffusers' single-file loader tells SDXL's
encoders apart by width, and with equal widths it would load the second from the first's keys.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kiln.engine.fsutil import atomic_write_bytes
from kiln.engine.models.tiny import (
    BOS,
    EOS,
    TINY_RESOLUTION,
    TINY_SEED,
    VAE_CONFIG,
    byte_vocab,
    pipeline_configs,
    quiet_library_progress,
    standard_text_encoder_keys,
    write_tokenizer,
)

LAYERS_PER_BLOCK = 2
TIME_EMBED_DIM = 8  # per size/crop id (SDXL: 256); even, as the sinusoidal embedding needs
TEXT_CONFIG: dict = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "projection_dim": 32,
    "hidden_act": "quick_gelu",
}
TEXT_CONFIG_2: dict = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "projection_dim": 64,
    "hidden_act": "gelu",
}
UNET_CONFIG: dict = {
    "sample_size": TINY_RESOLUTION // 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [8, 16, 32],
    "layers_per_block": LAYERS_PER_BLOCK,
    "transformer_layers_per_block": [1, 2, 2],
    "attention_head_dim": [1, 2, 4],
    "cross_attention_dim": TEXT_CONFIG["hidden_size"] + TEXT_CONFIG_2["hidden_size"],
    "norm_num_groups": 8,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": TIME_EMBED_DIM,
    # Six size/crop ids, then the second encoder's pooled projection (SDXL: 6 * 256 + 1280).
    "projection_class_embeddings_input_dim": 6 * TIME_EMBED_DIM + TEXT_CONFIG_2["projection_dim"],
}
SDXL_VAE_CONFIG: dict = {**VAE_CONFIG, "scaling_factor": 0.13025, "force_upcast": True}
# SDXL base's scheduler (Euler, scaled-linear betas, epsilon prediction).
SCHEDULER_CONFIG: dict = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
}
# OpenCLIP's tokenizer pads with "!" (id 0), CLIP-L's with the end token.
PAD_2 = "!"


def build_tiny_sdxl_pipeline(seed: int = TINY_SEED) -> Any:
    """The tiny SDXL pipeline in memory, with weights drawn from ``seed`` (same seed, same weights).

    Typed ``Any``: diffusers registers a pipeline's parts at run time (no checker sees them).
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp) / "1")
        write_tokenizer(Path(tmp) / "2", pad=PAD_2)
        tokenizer = CLIPTokenizer.from_pretrained(Path(tmp) / "1")
        tokenizer_2 = CLIPTokenizer.from_pretrained(Path(tmp) / "2")
    vocab = byte_vocab()
    ids: dict[str, Any] = {"vocab_size": len(vocab), "bos_token_id": vocab[BOS], "eos_token_id": vocab[EOS]}
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    vae = AutoencoderKL(**SDXL_VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**ids, pad_token_id=vocab[EOS], **TEXT_CONFIG))
    text_encoder_2 = CLIPTextModelWithProjection(
        CLIPTextConfig(**ids, pad_token_id=vocab[PAD_2], **TEXT_CONFIG_2)
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**SCHEDULER_CONFIG),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def write_tiny_sdxl_model(out: Path, single_file: bool = False, seed: int = TINY_SEED) -> Path:
    """Write the tiny SDXL pipeline to ``out``: a diffusers folder, or with ``single_file`` one
    ``.safetensors`` file in the original SGM key layout (configs in its ``kiln.configs`` metadata,
    as :func:`kiln.engine.models.tiny.write_tiny_model` does for SD 1.5)."""
    quiet_library_progress()
    out = Path(out)
    pipe = build_tiny_sdxl_pipeline(seed)
    if not single_file:
        staging = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        pipe.save_pretrained(staging, safe_serialization=True)
        standard_text_encoder_keys(staging / "text_encoder")
        standard_text_encoder_keys(staging / "text_encoder_2", keep=("text_projection.",))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
        return out
    from kiln.engine.models.sdxl import single_file_state
    from safetensors.torch import save

    state = single_file_state(pipe.unet, pipe.vae, [pipe.text_encoder, pipe.text_encoder_2])
    state = {key: value.contiguous() for key, value in state.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, save(state, metadata={"kiln.configs": json.dumps(pipeline_configs(pipe))}))
    return out
