"""A tiny SD 1.5-shaped pipeline built from configs with seeded random weights (tests, demo).

Same block types, module names and layer counts as SD 1.5 (so LoRA targets and key names are
the real ones: 192 U-Net modules), at widths that make the whole pipeline a few MB and a
training step a few milliseconds on a CPU. The tokenizer is written here, offline: a
byte-level vocabulary with no merges, which tokenises any text.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kiln.engine.fsutil import atomic_write_text

TINY_SEED = 20241126
TINY_RESOLUTION = 64
LAYERS_PER_BLOCK = 2
TEXT_MODEL_PREFIX = "text_model."
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

UNET_CONFIG: dict = {
    "sample_size": TINY_RESOLUTION // 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [16, 16, 32, 32],
    "layers_per_block": LAYERS_PER_BLOCK,
    "attention_head_dim": 2,
    "cross_attention_dim": 32,
    "norm_num_groups": 8,
}
VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 8, 16, 16],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": TINY_RESOLUTION,
    "scaling_factor": 0.18215,
}
TEXT_CONFIG: dict = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "projection_dim": 32,
    "hidden_act": "quick_gelu",
}
# SD 1.5's scheduler settings (scaled-linear betas, epsilon prediction).
SCHEDULER_CONFIG: dict = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


def byte_vocab() -> dict[str, int]:
    """CLIP's byte-to-unicode alphabet, each symbol alone and word-final, then BOS and EOS.

    With an empty merges file, CLIP's BPE splits every word into these symbols, so any text
    tokenises without the real 49k vocabulary.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            chars.append(256 + extra)
            extra += 1
    symbols = [chr(code) for code in chars]
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + [BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}


def write_tokenizer(folder: Path, pad: str = EOS) -> None:
    """Write a CLIP tokenizer (vocab.json, merges.txt, configs) that works offline.

    ``pad``: the padding token; SDXL's second (OpenCLIP) tokenizer pads with ``"!"``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(byte_vocab(), ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "pad_token": pad, "unk_token": EOS}), encoding="utf-8"
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 77,
                "bos_token": BOS,
                "eos_token": EOS,
                "pad_token": pad,
                "unk_token": EOS,
                "do_lower_case": True,
            }
        ),
        encoding="utf-8",
    )


def build_tiny_pipeline(seed: int = TINY_SEED) -> Any:
    """The tiny pipeline in memory, with weights drawn from ``seed`` (same seed, same weights).

    Typed ``Any``: diffusers registers a pipeline's parts at run time (no checker sees them).
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    vocab = byte_vocab()
    text_config = CLIPTextConfig(
        vocab_size=len(vocab),
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[EOS],
        **TEXT_CONFIG,
    )
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(text_config)
    scheduler = PNDMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k != "clip_sample"})
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def quiet_library_progress() -> None:
    """No progress bars from diffusers, transformers or huggingface_hub on stderr.

    ``save_pretrained`` draws "Writing model shards" (transformers) and loading bars
    (diffusers) meant for a notebook; in ``kiln tiny-model``, the demo and the TUI they only
    scramble the output. Kiln reports its own progress.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:  # an old huggingface_hub: nothing of it draws here
        return
    disable_progress_bars()


def _without_versions(config: dict[str, Any]) -> dict[str, Any]:
    """A config without the writing library's version stamps, so the same seed gives the same
    file (and the same AutoV2 hash) whichever diffusers or transformers wrote it."""
    stamps = ("_diffusers_version", "transformers_version")
    return {key: value for key, value in config.items() if key not in stamps}


def write_tiny_model(out: Path, single_file: bool = False, seed: int = TINY_SEED) -> Path:
    """Write the tiny pipeline to ``out``.

    Args:
        out: A folder (diffusers layout) or, with ``single_file``, a ``.safetensors`` path.
        single_file: Write one checkpoint in the original LDM key layout instead, as
            AUTO1111/ComfyUI models come. Its component configs travel in the file's
            metadata (``kiln.configs``), because the SD 1.5 configs Kiln ships describe the
            full-size model.
        seed: Weight seed.

    Returns:
        The path written.
    """
    quiet_library_progress()
    out = Path(out)
    pipe = build_tiny_pipeline(seed)
    if not single_file:
        staging = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        pipe.save_pretrained(staging, safe_serialization=True)
        standard_text_encoder_keys(staging / "text_encoder")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
        return out
    from kiln.engine.fsutil import atomic_write_bytes
    from kiln.engine.models.sd15 import single_file_state
    from safetensors.torch import save

    state = single_file_state(pipe.unet, pipe.vae, [pipe.text_encoder])
    state = {key: value.contiguous() for key, value in state.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, save(state, metadata={"kiln.configs": json.dumps(pipeline_configs(pipe))}))
    return out


def pipeline_configs(pipe: Any) -> dict[str, Any]:
    """Every part's config as ``save_pretrained`` writes it (tokenizers left out), keyed by its
    path in the folder: what a tiny single file carries so that it loads without the configs
    Kiln ships for the full-size models."""
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        return {
            path.relative_to(tmp).as_posix(): _without_versions(json.loads(path.read_text(encoding="utf-8")))
            for path in sorted(Path(tmp).rglob("*.json"))
            if not path.parent.name.startswith("tokenizer")
        }


def standard_text_encoder_keys(folder: Path, keep: tuple[str, ...] = ()) -> None:
    """Give the text encoder's saved weights their standard ``text_model.``-prefixed names.

    transformers >= 5.6 saves ``CLIPTextModel`` without that level; transformers 4.x (which
    Kohya's sd-scripts pins) finds none of its keys in such a file and silently starts from
    random weights. Both read the prefixed names. Keys starting with one of ``keep`` sit
    outside ``text_model`` (``text_projection.`` of SDXL's second encoder) and stay as they are.
    """
    from safetensors.torch import load_file, save_file

    for path in sorted(Path(folder).glob("*.safetensors")):
        tensors = load_file(str(path))
        standard = (TEXT_MODEL_PREFIX, *keep)
        if all(key.startswith(standard) for key in tensors):
            continue
        named = {
            key if key.startswith(standard) else TEXT_MODEL_PREFIX + key: t for key, t in tensors.items()
        }
        save_file(named, str(path), metadata={"format": "pt"})


def write_tiny_configs(folder: Path, configs: dict[str, dict]) -> None:
    """Lay out the configs held in a tiny single file as a diffusers config folder."""
    for rel_path, data in configs.items():
        path = folder / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=2))
    write_tokenizer(folder / "tokenizer")
    if "text_encoder_2/config.json" in configs:
        write_tokenizer(folder / "tokenizer_2", pad="!")


def carried_configs(base: Path) -> str | None:
    """The ``kiln.configs`` metadata a checkpoint derived from ``base`` should carry: the base's
    own when it is one of Kiln's tiny models (a folder whose text encoder has the tiny byte
    vocabulary, or a tiny single file), so Kiln and tests can read the derived file; None for
    any real model (its shapes are the ones Kiln ships configs for)."""
    base = Path(base)
    if base.is_file():
        from kiln.engine.models.safetensors_file import safetensors_header

        return safetensors_header(base).metadata.get("kiln.configs")
    encoder = base / "text_encoder" / "config.json"
    try:
        vocab_size = json.loads(encoder.read_text(encoding="utf-8")).get("vocab_size")
    except (OSError, ValueError):
        return None
    if vocab_size != len(byte_vocab()):
        return None
    configs = {
        path.relative_to(base).as_posix(): json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(base.rglob("*.json"))
        if not path.parent.name.startswith("tokenizer") and not path.name.endswith(".index.json")
    }
    return json.dumps(configs)
