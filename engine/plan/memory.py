"""A run's peak memory worked out before any model is loaded: the plan's and the pre-run check's.

The trainer measures a run's activations on its own model once it is loaded
(:mod:`kiln.engine.train.memory_estimate`); before that, the plan advisor ("will this fit my
GPU?") and the pre-run check (``kiln train`` refuses what cannot fit) need the same sum from
counts alone:

    weights on the device (frozen, at the training precision; the VAE in float32; frozen text
        encoders leave the GPU once their outputs are cached)
    + trained parameters and their gradients (float32 masters)
    + optimizer state (AdamW: two float32 moments; 8-bit AdamW: two bytes; Adafactor: little)
    + activations: batch x latent pixels x the family's bytes per latent pixel

The bytes per latent pixel (:data:`ACTIVATIONS`) were measured on each family's full-size
U-Net (random weights, LoRA rank 32 on Kohya's modules) with the trainer's own probe:
``python scripts/measure_activations.py --family sd15 --precision bf16 fp32`` and
``--family sdxl --precision bf16``, on a CPU (the figures and the command are in
bench/RESULTS.md). A GPU's attention kernels keep less than a CPU's, so on a GPU these err
on the generous side.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3

# (family, gradient checkpointing) -> activation bytes per latent pixel per sample at 16-bit
# autocast (fp16 or bf16); fp32 keeps FP32_ACTIVATION_FACTOR times as much.
ACTIVATIONS: dict[tuple[str, bool], float] = {
    ("sd15", False): 382_069,
    ("sd15", True): 217_787,
    ("sdxl", False): 670_533,
    ("sdxl", True): 149_664,
}
# SD 1.5 measured in both: 692,805 / 382,069 without checkpointing, 458,149 / 217,787 with.
FP32_ACTIVATION_FACTOR = {False: 1.81, True: 2.10}
# What a training process holds besides tensors it can count (CUDA context, kernels, caches).
RUNTIME_OVERHEAD = 0.5 * GIB


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from a base model: parameter counts and LoRA parameters per rank.

    Attributes:
        params: Every weight (U-Net, text encoders, VAE).
        unet_params: The U-Net's.
        unet_per_rank: LoRA parameters per unit of rank on Kohya's U-Net modules.
        te_per_rank: The same on the text encoders' modules (all of them).
        conv_per_rank: The same on the 3x3 convolutions a conv rank (LoCon) adds.
        vae_params: The VAE's (None: not known; then counted with the rest).
        te_params: The text encoders' (None: not known).
    """

    params: int
    unet_params: int
    unet_per_rank: int
    te_per_rank: int
    conv_per_rank: int
    vae_params: int | None = None
    te_params: int | None = None


def full_size(
    unet: int, text_encoders: tuple[int, ...], vae: int, unet_per_rank: int, te_per_rank: int
) -> ModelShape:
    """A pipeline's shape from its parts' parameter counts."""
    te = sum(text_encoders)
    return ModelShape(unet + te + vae, unet, unet_per_rank, te_per_rank, 0, vae, te)


# The full-size families as Kiln's shipped configs build them (counted on the meta device;
# per rank: sum over Kohya's modules of in + out features).
FULL_SIZE: dict[str, ModelShape] = {
    "sd15": full_size(859_520_964, (123_060_480,), 83_653_863, 423_936, 165_888),
    "sdxl": full_size(2_567_463_684, (123_060_480, 694_659_840), 83_653_863, 2_659_840, 165_888 + 737_280),
}
# Optimizer state per trained parameter: AdamW's two float32 moments, bitsandbytes' two 8-bit
# ones, Adafactor's factored second moment (a row and a column per matrix: next to nothing).
OPTIMIZER_BYTES = {"adamw": 8, "adamw8bit": 2, "adafactor": 0}


@dataclass(frozen=True)
class RunShape:
    """The settings the estimate depends on.

    Attributes:
        family: ``sd15`` or ``sdxl`` (picks the activation figure).
        batch: Samples per step.
        pixels: Image pixels of the largest bucket (width x height).
        precision: ``fp32``, ``fp16`` or ``bf16``.
        checkpointing: Gradient checkpointing.
        rank: The LoRA rank (ignored by a full fine-tune).
        conv_rank: The conv rank (LoCon); 0 without.
        train_text_encoder: The text encoders train (and stay on the device).
        text_encoders_offloaded: Frozen text encoders leave the device once their outputs are
            cached (fixed captions on a GPU).
        full: A full fine-tune (every U-Net weight trains, in float32).
        optimizer: ``adamw``, ``adamw8bit`` or ``adafactor``.
    """

    family: str
    batch: int
    pixels: int
    precision: str = "bf16"
    checkpointing: bool = False
    rank: int = 32
    conv_rank: int = 0
    train_text_encoder: bool = True
    text_encoders_offloaded: bool = True
    full: bool = False
    optimizer: str = "adamw"


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimate in bytes, and its parts for the message."""

    total: float
    weights: float
    lora: float
    activations: float

    def describe(self) -> str:
        return (
            f"about {self.total / GIB:.1f} GiB (weights {self.weights / GIB:.1f}, LoRA and optimizer "
            f"{self.lora / GIB:.1f}, activations {self.activations / GIB:.1f})"
        )


def estimate_memory(shape: ModelShape, run: RunShape) -> MemoryEstimate:
    """Bytes a run needs at its peak, from counts alone (see the module's docstring)."""
    weight_bytes = 4 if run.precision == "fp32" else 2
    vae = shape.vae_params or 0
    te = shape.te_params or 0
    frozen = shape.params - vae
    trained = run.rank * shape.unet_per_rank + run.conv_rank * shape.conv_per_rank
    if run.train_text_encoder:
        trained += run.rank * shape.te_per_rank
    elif run.text_encoders_offloaded:
        frozen -= te
    if run.full:
        trained = shape.unet_params + (te if run.train_text_encoder else 0)
        frozen -= trained
    weights = frozen * weight_bytes + vae * 4
    # A float32 weight and its gradient, and the optimizer's moments.
    per_param = 8 + OPTIMIZER_BYTES.get(run.optimizer, OPTIMIZER_BYTES["adamw"])
    lora = trained * per_param
    per_pixel = ACTIVATIONS.get((run.family, run.checkpointing), ACTIVATIONS[("sd15", run.checkpointing)])
    if run.precision == "fp32":
        per_pixel *= FP32_ACTIVATION_FACTOR[run.checkpointing]
    activations = run.batch * (run.pixels / 64) * per_pixel
    return MemoryEstimate(weights + lora + activations + RUNTIME_OVERHEAD, weights, lora, activations)
