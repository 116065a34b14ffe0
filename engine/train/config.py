"""The training config: a TOML file read into typed, frozen dataclasses, every error one line.

Keys are the names Kohya users know, grouped in tables (``[train] unet_lr``). Unknown keys
and bad values are refused with the key's name and, for Kohya's flat names, the Kiln key to
use instead. ``resolved_toml`` writes the config back (absolute paths, every key), which is
what a run folder keeps as ``config.toml``.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from kiln.engine.errors import ConfigError
from kiln.engine.models.family import FAMILY_CHOICES, ModelFamily

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PRECISIONS = ("fp32", "fp16", "bf16")
OPTIMIZERS = ("adamw", "adamw8bit", "adafactor")
SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "linear")
SAMPLERS = ("ddim", "euler", "euler_a", "dpmsolver++")
SAVE_PRECISIONS = ("fp16", "bf16", "fp32")
BASELINES = ("auto", "on", "off")
PREDICTIONS = ("auto", "epsilon", "v")
NETWORK_TYPES = ("lora", "locon", "loha", "lokr", "dora", "full")
# train.precision -> accelerate's mixed_precision.
MIXED_PRECISION = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}

# Kohya's flat argument names -> the Kiln key that holds the same setting.
KOHYA_NAMES: dict[str, str] = {
    "pretrained_model_name_or_path": "model.base",
    "train_data_dir": "dataset.path",
    "min_bucket_reso": "dataset.min_bucket_reso",
    "max_bucket_reso": "dataset.max_bucket_reso",
    "network_dim": "network.rank",
    "network_alpha": "network.alpha",
    "network_train_unet_only": "network.train_text_encoder",
    "learning_rate": "train.unet_lr",
    "train_batch_size": "train.batch_size",
    "max_train_epochs": "train.epochs",
    "max_train_steps": "train.max_steps",
    "gradient_accumulation_steps": "train.grad_accumulation",
    "mixed_precision": "train.precision",
    "optimizer_type": "train.optimizer",
    "lr_scheduler": "train.scheduler",
    "cache_latents_to_disk": "train.cache_latents_to_disk",
    "cache_text_encoder_outputs": "train.cache_text_encoder_outputs",
    "sample_prompts": "sample.prompts",
    "sample_every_n_epochs": "sample.every_n_epochs",
    "sample_sampler": "sample.sampler",
    "save_every_n_epochs": "save.every_n_epochs",
    "save_precision": "save.precision",
    "output_dir": "output.dir",
    "output_name": "output.name",
    "training_comment": "output.comment",
    "v_parameterization": "model.prediction",
    "reg_data_dir": "dataset.reg_path",
    "network_module": "network.type",
    "prior_loss_weight": "train.prior_loss_weight",
    "zero_terminal_snr": "train.zero_terminal_snr",
}


# [train] keys that change how fast a run goes, not what it trains: a resume may change them.
SPEED_KEYS = frozenset(
    f"train.{key}" for key in ("sync_every_n_steps", "prefetch", "tf32", "channels_last", "compile")
)

# Sane upper bounds: a value past them is a typo or a run that cannot fit any machine
# (`network.rank = 10000` took 23 GB of RAM before it failed).
MAX_RANK = 1024
MAX_RESOLUTION = 2048
MAX_BUCKET = 4096
MAX_BATCH = 64
MAX_EPOCHS = 10_000
MAX_STEPS = 10_000_000
MAX_LR = 0.1


def _help(
    text: str, check: Callable[[Any], str | None] | None = None, most: float | None = None
) -> dict[str, Any]:
    if most is not None and check is not None:
        first = check

        def check(value: Any) -> str | None:
            return first(value) or (None if value <= most else f"must be at most {most:g}")

    return {"help": text, "check": check}


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be above 0"


def _at_least(low: float) -> Callable[[float], str | None]:
    return lambda value: None if value >= low else f"must be at least {low:g}"


def _within(low: float, high: float) -> Callable[[float], str | None]:
    return lambda value: None if low <= value <= high else f"must be between {low:g} and {high:g}"


def _one_of(*choices: str) -> Callable[[str], str | None]:
    return lambda value: None if value in choices else "must be one of " + ", ".join(choices)


def _multiple_of_8(value: int) -> str | None:
    if value < 8:
        return "must be at least 8"
    return None if value % 8 == 0 else "must be a multiple of 8 (the VAE's cell; Kohya uses 64)"


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: the base checkpoint."""

    base: str = field(
        default="", metadata=_help("diffusers folder or SD 1.5 / SDXL .safetensors file (required)")
    )
    allow_pickle: bool = field(default=False, metadata=_help("accept .ckpt/.pt files (they can run code)"))
    family: str = field(
        default="auto",
        metadata=_help("model family: auto (read from the files), sd15, sdxl", _one_of(*FAMILY_CHOICES)),
    )
    prediction: str = field(
        default="auto",
        metadata=_help(
            "what the U-Net predicts: auto (the model's scheduler config), epsilon, v (v-prediction bases)",
            _one_of(*PREDICTIONS),
        ),
    )


@dataclass(frozen=True)
class DatasetConfig:
    """``[dataset]``: the images, their captions and buckets (Kohya's dataset options)."""

    path: str = field(default="", metadata=_help("dataset folder, Kohya layout N_name/ (required)"))
    resolution: int = field(
        default=512, metadata=_help("training resolution (bucket area)", _multiple_of_8, MAX_RESOLUTION)
    )
    caption_extension: str = field(default=".txt", metadata=_help("caption sidecar extension"))
    shuffle_caption: bool = field(default=False, metadata=_help("shuffle comma-separated tags each step"))
    keep_tokens: int = field(
        default=0, metadata=_help("leading tags kept in place when shuffling", _at_least(0))
    )
    caption_dropout_rate: float = field(
        default=0.0, metadata=_help("share of steps trained on an empty caption", _within(0, 1))
    )
    min_bucket_reso: int = field(
        default=256, metadata=_help("smallest bucket side", _multiple_of_8, MAX_BUCKET)
    )
    max_bucket_reso: int = field(
        default=1024, metadata=_help("largest bucket side", _multiple_of_8, MAX_BUCKET)
    )
    bucket_reso_steps: int = field(
        default=64, metadata=_help("bucket side step", _multiple_of_8, MAX_RESOLUTION)
    )
    bucket_no_upscale: bool = field(default=False, metadata=_help("never upscale small images into a bucket"))
    reg_path: str = field(
        default="",
        metadata=_help("regularisation (class) images, Kohya's reg_data_dir: N_class/ folders; empty = none"),
    )


@dataclass(frozen=True)
class NetworkConfig:
    """``[network]``: the LoRA's shape (Kohya's networks.lora)."""

    rank: int = field(default=16, metadata=_help("LoRA rank (Kohya network_dim)", _at_least(1), MAX_RANK))
    alpha: float = field(default=8.0, metadata=_help("LoRA alpha; scale = alpha / rank", _positive, MAX_RANK))
    train_text_encoder: bool = field(default=True, metadata=_help("also train the text encoder"))
    conv_rank: int = field(
        default=0, metadata=_help("LoCon rank for 3x3 convs; 0 = off", _at_least(0), MAX_RANK)
    )
    conv_alpha: float = field(default=1.0, metadata=_help("LoCon alpha", _positive, MAX_RANK))
    type: str = field(
        default="lora",
        metadata=_help(
            "network: lora, locon (lora + 3x3 convs), loha, lokr, dora (LyCORIS library), "
            "full (fine-tune the whole model)",
            _one_of(*NETWORK_TYPES),
        ),
    )
    factor: int = field(
        default=-1, metadata=_help("LoKr factor: split of each weight's dimensions; -1 = automatic")
    )

    @property
    def effective_conv_rank(self) -> int:
        """The rank of the 3x3 conv layers: ``conv_rank``, or for ``locon`` without one the main rank."""
        if self.type == "locon" and self.conv_rank == 0:
            return self.rank
        return self.conv_rank


@dataclass(frozen=True)
class TrainParams:
    """``[train]``: optimisation."""

    unet_lr: float = field(
        default=1e-4, metadata=_help("U-Net learning rate (guide: 1e-4 .. 5e-4)", _positive, MAX_LR)
    )
    text_encoder_lr: float = field(
        default=0.0,
        metadata=_help("text-encoder LR; 0 = unet_lr x text_encoder_lr_ratio", _at_least(0), MAX_LR),
    )
    text_encoder_2_lr: float = field(
        default=0.0,
        metadata=_help(
            "SDXL's second text encoder's LR; 0 = unet_lr x text_encoder_lr_ratio", _at_least(0), MAX_LR
        ),
    )
    text_encoder_lr_ratio: float = field(
        default=0.2,
        metadata=_help("text-encoder LR as a share of unet_lr (guide: 1/4 .. 1/6)", _within(0, 1)),
    )
    batch_size: int = field(
        default=1, metadata=_help("images per batch (guide: at most 4)", _at_least(1), MAX_BATCH)
    )
    epochs: int = field(
        default=10, metadata=_help("passes over the dataset (guide: at least 10)", _at_least(1), MAX_EPOCHS)
    )
    max_steps: int = field(
        default=0, metadata=_help("stop after this many steps; 0 = no cap", _at_least(0), MAX_STEPS)
    )
    grad_accumulation: int = field(
        default=1, metadata=_help("batches per optimizer step", _at_least(1), MAX_BATCH)
    )
    precision: str = field(
        default="fp16", metadata=_help("mixed precision: fp32, fp16, bf16", _one_of(*PRECISIONS))
    )
    optimizer: str = field(
        default="adamw",
        metadata=_help("adamw, adamw8bit (bitsandbytes), adafactor (least memory)", _one_of(*OPTIMIZERS)),
    )
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay", _at_least(0)))
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient clipping; 0 = off", _at_least(0)))
    scheduler: str = field(
        default="constant", metadata=_help("LR schedule: " + ", ".join(SCHEDULERS), _one_of(*SCHEDULERS))
    )
    lr_warmup_steps: int = field(default=0, metadata=_help("linear warmup steps", _at_least(0)))
    min_snr_gamma: float = field(
        default=0.0, metadata=_help("min-SNR weighting gamma (5 is usual); 0 = off", _at_least(0))
    )
    prior_loss_weight: float = field(
        default=1.0,
        metadata=_help("loss weight of regularisation images (Kohya's prior_loss_weight)", _at_least(0)),
    )
    ema_decay: float = field(
        default=0.0,
        metadata=_help(
            "full fine-tune: keep an EMA of the weights (e.g. 0.9999) and save it; 0 = off",
            _within(0, 0.999999),
        ),
    )
    zero_terminal_snr: bool = field(
        default=False,
        metadata=_help(
            "rescale the noise schedule to zero terminal SNR (Kohya --zero_terminal_snr; use with v)"
        ),
    )
    noise_offset: float = field(
        default=0.0, metadata=_help("noise offset (0.05-0.1 darkens/brightens)", _at_least(0))
    )
    clip_skip: int = field(
        default=1, metadata=_help("use the text encoder's Nth-from-last layer", _within(1, 12))
    )
    seed: int = field(default=42, metadata=_help("seed for noise, timesteps, data order", _at_least(0)))
    gradient_checkpointing: bool = field(default=False, metadata=_help("less memory, about 20% slower"))
    fused_backward: bool = field(
        default=False,
        metadata=_help(
            "full fine-tune: step each weight as its gradient arrives (Kohya --fused_backward_pass; "
            "no whole-model gradients in memory)"
        ),
    )
    validation_split: float = field(
        default=0.0,
        metadata=_help(
            "share of images held out for a validation loss at fixed timesteps each epoch; 0 = off",
            _within(0, 0.5),
        ),
    )
    cache_latents: bool = field(default=True, metadata=_help("encode each image once (no per-step VAE)"))
    cache_latents_to_disk: bool = field(
        default=False, metadata=_help("keep cached latents in <dataset>/.kiln/latents (shared by runs)")
    )
    cache_text_encoder_outputs: bool = field(
        default=True,
        metadata=_help(
            "when the text encoders do not train, encode each caption once (and, with fixed captions, "
            "move the encoders off the GPU)"
        ),
    )
    # Speed: none of these changes what is trained (TF32, channels_last and compile change the
    # float rounding only), so a run may resume with them changed (SPEED_KEYS).
    sync_every_n_steps: int = field(
        default=0,
        metadata=_help(
            "read the loss and gradient norm back from the GPU every N steps, in one transfer (step "
            "events arrive N at a time); 0 = auto: 1 on a CPU, 10 on a GPU",
            _at_least(0),
            1000,
        ),
    )
    prefetch: bool = field(
        default=True,
        metadata=_help("prepare the next batch (latents, noise, captions) in a thread during the step"),
    )
    tf32: bool = field(
        default=True,
        metadata=_help(
            "TF32 fp32 matmuls and convolutions on an Ampere or newer GPU; off = PyTorch's defaults"
        ),
    )
    channels_last: bool = field(
        default=False, metadata=_help("U-Net in channels_last memory layout (GPU convolutions)")
    )
    compile: bool = field(
        default=False,
        metadata=_help("torch.compile the U-Net: faster steps after a slow first one per bucket size"),
    )


@dataclass(frozen=True)
class SampleConfig:
    """``[sample]``: images rendered before training (epoch 0) and at chosen epochs."""

    prompts: tuple[str, ...] = field(
        default=(),
        metadata=_help("Kohya prompt lines: text --n negative --w 512 --h 512 --d seed --s steps --l cfg"),
    )
    every_n_epochs: int = field(
        default=1, metadata=_help("render samples every N epochs; 0 = baseline only", _at_least(0))
    )
    sampler: str = field(
        default="ddim", metadata=_help("sampler: " + ", ".join(SAMPLERS), _one_of(*SAMPLERS))
    )
    steps: int = field(
        default=0,
        metadata=_help(
            "sampling steps of a prompt without --s; 0 = by device (30 on a GPU, 8 on a CPU)", _within(0, 200)
        ),
    )
    baseline: str = field(
        default="auto",
        metadata=_help(
            "render the prompts before training (epoch 0): auto (on a GPU only), on, off",
            _one_of(*BASELINES),
        ),
    )


@dataclass(frozen=True)
class SaveConfig:
    """``[save]``: LoRA files written during the run (the last epoch is always saved), and the
    resume state (at every epoch's end, on cancel, and every ``state_every_n_steps``)."""

    every_n_epochs: int = field(default=1, metadata=_help("save a LoRA every N epochs", _at_least(1)))
    state_every_n_steps: int = field(
        default=0,
        metadata=_help(
            "also save the resume state every N steps (a killed run loses less); 0 = epoch ends only",
            _at_least(0),
        ),
    )
    precision: str = field(
        default="fp16", metadata=_help("LoRA file dtype: fp16, bf16, fp32", _one_of(*SAVE_PRECISIONS))
    )
    diffusers_folder: bool = field(
        default=False,
        metadata=_help("full fine-tune: also save each epoch as a diffusers folder (lora/<name>-eNNN/)"),
    )


@dataclass(frozen=True)
class OutputConfig:
    """``[output]``: where the run folder goes and what the LoRA is called."""

    dir: str = field(default="", metadata=_help("folder for run folders; empty = <dataset>/runs"))
    name: str = field(default="lora", metadata=_help("LoRA name: lora/<name>-eNNN.safetensors"))
    comment: str = field(default="", metadata=_help("training comment stored in the LoRA's metadata"))


@dataclass(frozen=True)
class TrainConfig:
    """The whole config, one frozen record per TOML table."""

    model: ModelConfig = ModelConfig()
    dataset: DatasetConfig = DatasetConfig()
    network: NetworkConfig = NetworkConfig()
    train: TrainParams = TrainParams()
    sample: SampleConfig = SampleConfig()
    save: SaveConfig = SaveConfig()
    output: OutputConfig = OutputConfig()

    @property
    def text_encoder_lr(self) -> float:
        """The text encoder's LR: explicit, else the guide's fraction of the U-Net LR."""
        if self.train.text_encoder_lr > 0:
            return self.train.text_encoder_lr
        return self.train.unet_lr * self.train.text_encoder_lr_ratio

    @property
    def text_encoder_2_lr(self) -> float:
        """SDXL's second text encoder's LR: explicit, else the guide's fraction of the U-Net LR
        (the same rule as the first's, so the guide's ratio applies to both by default)."""
        if self.train.text_encoder_2_lr > 0:
            return self.train.text_encoder_2_lr
        return self.train.unet_lr * self.train.text_encoder_lr_ratio

    def text_encoder_lrs(self) -> tuple[float, float]:
        """Both text encoders' LRs, in slot order (SD 1.5 uses the first)."""
        return self.text_encoder_lr, self.text_encoder_2_lr

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Tables of plain values (tuples as lists), as TOML or JSON would hold them."""
        return {
            section.name: {
                item.name: list(value) if isinstance(value, tuple) else value
                for item in fields(getattr(self, section.name))
                for value in [getattr(getattr(self, section.name), item.name)]
            }
            for section in fields(self)
        }


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "dataset": DatasetConfig,
    "network": NetworkConfig,
    "train": TrainParams,
    "sample": SampleConfig,
    "save": SaveConfig,
    "output": OutputConfig,
}
_PATH_KEYS = {("model", "base"), ("dataset", "path"), ("dataset", "reg_path"), ("output", "dir")}
# Keys Kiln turns into file or folder names: no control character (a newline, a tab...) in them.
_FILE_NAME_KEYS = {
    "output.name",
    "output.dir",
    "model.base",
    "dataset.path",
    "dataset.reg_path",
    "dataset.caption_extension",
}


def all_keys() -> list[str]:
    """Every dotted key a config may hold, in file order."""
    return [f"{name}.{item.name}" for name, cls in SECTIONS.items() for item in fields(cls)]


def load_config(
    path: Path | str, overrides: Mapping[str, Any] | None = None, overrides_source: str | None = None
) -> TrainConfig:
    """Read a TOML config and check every key and value.

    Relative paths in the file are taken relative to the file's folder.

    Args:
        path: The TOML file.
        overrides: Dotted keys to set after reading (``{"train.max_steps": 800}``), as
            ``--set`` and sweeps give them.
        overrides_source: Names the overrides' origin in error messages (``"--set"``: an error
            reads ``--set network.rank=10000: ...``, the key as typed); default: the file.

    Raises:
        ConfigError: The file is missing or not TOML, or a key or value is wrong (the message
            names the key and what it must be).
    """
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file; `kiln train --print-config > {path.name}` writes one"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return config_from_mapping(
        data, source=str(path), base_dir=path.parent, overrides=overrides, overrides_source=overrides_source
    )


def config_from_mapping(
    data: Mapping[str, Any],
    source: str = "config",
    base_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    overrides_source: str | None = None,
) -> TrainConfig:
    """Build a checked config from nested tables (as tomllib returns them).

    Args:
        data: ``{"train": {"unet_lr": 1e-4}, ...}``; missing keys take their defaults.
        source: Names the origin in error messages (the file path).
        base_dir: Relative paths are resolved against it (None: the current folder).
        overrides: Dotted keys applied on top, checked the same way.
        overrides_source: Names the overrides' origin in errors about them (``"--set"``).
    """
    merged: dict[str, dict[str, Any]] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown key {section}{_suggest(section)}")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: {section} must be a table ([{section}]), not a value")
        merged[section] = dict(table)
    given = set(overrides or {}) if overrides_source else set()
    for key, value in (overrides or {}).items():
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            where = f"{overrides_source} {key}" if overrides_source else source
            raise ConfigError(f"{where}: unknown key {key}{_suggest(key)}")
        merged.setdefault(section, {})[name] = value
    base = (base_dir or Path.cwd()).expanduser().resolve()
    built = {}
    for section, cls in SECTIONS.items():
        table = merged.get(section, {})
        known = {item.name: item for item in fields(cls)}
        values = {}
        for name, value in table.items():
            key = f"{section}.{name}"
            if name not in known:
                where = f"{overrides_source} {key}" if key in given else source
                raise ConfigError(f"{where}: unknown key {key}{_suggest(key)}")
            value = _checked(source, key, known[name], value, f"{overrides_source}" if key in given else None)
            if (section, name) in _PATH_KEYS and value:
                value = str((base / Path(value).expanduser()).resolve())
            values[name] = value
        built[section] = cls(**values)
    config = TrainConfig(**built)
    _check_relations(source, config)
    return config


def _checked(source: str, key: str, item: Any, value: Any, flag: str | None = None) -> Any:
    """The value converted to the field's type, or a ConfigError naming the key (as ``--set
    KEY=VALUE`` when ``flag`` says it came from the command line)."""
    try:
        return _checked_value(source, key, item, value)
    except ConfigError as exc:
        if flag is None:
            raise
        problem = str(exc).rpartition(": ")[2]
        raise ConfigError(f"{flag} {key}={_show(value)}: {problem}") from None


def _checked_value(source: str, key: str, item: Any, value: Any) -> Any:
    default = item.default if item.default is not MISSING else None
    expected = type(default)
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} = {_show(value)}: must be true or false")
    elif expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} = {_show(value)}: must be a whole number")
    elif expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {key} = {_show(value)}: must be a number")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{source}: {key} = {_show(value)}: must be a finite number")
    elif expected is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} = {_show(value)}: must be a string (in quotes)")
        if key in _FILE_NAME_KEYS and any(ord(char) < 32 or ord(char) == 127 for char in value):
            raise ConfigError(
                f"{source}: {key} = {value!r}: contains a control character (a newline?); "
                "Kiln makes file names from it"
            )
    elif expected is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(entry, str) for entry in value):
            raise ConfigError(f"{source}: {key} = {_show(value)}: must be a list of strings")
        value = tuple(value)
    check = item.metadata.get("check")
    problem = check(value) if check else None
    if problem:
        raise ConfigError(f"{source}: {key} = {_show(value)}: {problem}")
    return value


def _check_relations(source: str, config: TrainConfig) -> None:
    data = config.dataset
    if data.min_bucket_reso > data.max_bucket_reso:
        raise ConfigError(
            f"{source}: dataset.min_bucket_reso = {data.min_bucket_reso} is above "
            f"dataset.max_bucket_reso = {data.max_bucket_reso}"
        )
    if not data.min_bucket_reso <= data.resolution <= data.max_bucket_reso:
        raise ConfigError(
            f"{source}: dataset.resolution = {data.resolution} must lie between dataset.min_bucket_reso "
            f"({data.min_bucket_reso}) and dataset.max_bucket_reso ({data.max_bucket_reso})"
        )
    if config.save.diffusers_folder and config.network.type != "full":
        raise ConfigError(
            f'{source}: save.diffusers_folder saves a full fine-tune\'s model; set network.type = "full" '
            "or save.diffusers_folder = false"
        )
    if config.train.ema_decay and config.network.type != "full":
        raise ConfigError(
            f"{source}: train.ema_decay = {config.train.ema_decay:g} averages a full fine-tune's weights; "
            'set network.type = "full" or train.ema_decay = 0'
        )
    _check_fused_backward(config, source)
    if not config.output.name or "/" in config.output.name or config.output.name.startswith("."):
        raise ConfigError(f"{source}: output.name = {config.output.name!r}: must be a plain file name")
    if config.train.optimizer == "adamw8bit":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError(
                f'{source}: train.optimizer = "adamw8bit" needs bitsandbytes; `pip install bitsandbytes` '
                'or use "adamw"'
            ) from None


def _check_fused_backward(config: TrainConfig, source: str) -> None:
    """What a fused backward pass cannot do: it never holds every gradient at once."""
    train = config.train
    if not train.fused_backward:
        return
    refusals = (
        (config.network.type != "full", 'it saves a full fine-tune\'s gradients; set network.type = "full"'),
        (
            train.grad_accumulation > 1,
            f"each batch's gradient is applied at once, so train.grad_accumulation = "
            f"{train.grad_accumulation} cannot add batches up; set it to 1",
        ),
        (
            bool(train.max_grad_norm),
            f"there is never a whole gradient to clip; set train.max_grad_norm = 0 "
            f"(it is {train.max_grad_norm:g})",
        ),
        (
            train.precision == "fp16",
            'fp16\'s loss scaler needs every gradient before a step; use train.precision = "bf16" or "fp32"',
        ),
    )
    for refused, why in refusals:
        if refused:
            raise ConfigError(f"{source}: train.fused_backward: {why} (or train.fused_backward = false)")


def check_family_settings(config: TrainConfig, family: ModelFamily, source: str = "config") -> None:
    """Refuse settings the model family cannot train with, before anything is written.

    Raises:
        ConfigError: ``train.clip_skip`` past the family's (SDXL reads its encoders'
            penultimate layers already) or a bucket step Kohya refuses for the family.
    """
    train, data = config.train, config.dataset
    if train.clip_skip > family.max_clip_skip:
        raise ConfigError(
            f"{source}: train.clip_skip = {train.clip_skip}: {family.title} already uses its text encoders' "
            f"penultimate layers; set train.clip_skip = 1"
        )
    step = family.bucket_step_multiple
    if data.bucket_reso_steps % step:
        raise ConfigError(
            f"{source}: dataset.bucket_reso_steps = {data.bucket_reso_steps}: {family.title} needs a "
            f"multiple of {step} (Kohya refuses others); use 64"
        )


def require_paths(config: TrainConfig, source: str = "config") -> None:
    """Insist on the two keys a run cannot do without (defaults leave them empty)."""
    if not config.model.base:
        raise ConfigError(
            f"{source}: model.base is required: a diffusers folder or an SD 1.5 / SDXL .safetensors file"
        )
    if not config.dataset.path:
        raise ConfigError(f"{source}: dataset.path is required: the dataset folder (Kohya layout N_name/)")


def apply_overrides(
    config: TrainConfig, overrides: Mapping[str, Any], source: str = "override"
) -> TrainConfig:
    """A copy of ``config`` with dotted keys set, checked like a file (sweeps use this)."""
    return config_from_mapping(config.to_dict(), source=source, overrides=overrides)


def parse_override(text: str) -> tuple[str, Any]:
    """``train.unet_lr=3e-4`` -> ``("train.unet_lr", 3e-4)``; the value is read as TOML, else a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: write KEY=VALUE, e.g. --set train.max_steps=800")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def suggest_key(key: str) -> str:
    """A hint for an unknown key: Kohya's name for it in Kiln, the closest known key, or them all."""
    return _suggest(key)


def _suggest(key: str) -> str:
    flat = key.rpartition(".")[2]
    if flat in KOHYA_NAMES:
        return f" (Kohya's {flat} is {KOHYA_NAMES[flat]} in Kiln)"
    close = difflib.get_close_matches(key, all_keys() + list(SECTIONS), n=1, cutoff=0.6)
    if not close:
        close = [k for k in all_keys() if k.endswith("." + flat)]
    return f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(all_keys())}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        return "[\n" + "".join(f"    {_toml_value(entry)},\n" for entry in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def resolved_toml(config: TrainConfig, comments: bool = False) -> str:
    """The config as TOML with every key; ``comments`` adds each key's help (for --print-config)."""
    lines: list[str] = []
    values = config.to_dict()
    for section, cls in SECTIONS.items():
        if lines:
            lines.append("")
        lines.append(f"[{section}]")
        for item in fields(cls):
            line = f"{item.name} = {_toml_value(values[section][item.name])}"
            if comments:
                lines.append(f"# {item.metadata['help']}")
            lines.append(line)
    return "\n".join(lines) + "\n"
