"""A training config for a dataset: sensible defaults, the plan's settings, sample prompts from captions.

The runs section starts a run from what the workbench already knows: the dataset, the
settings typed into the plan section, and the base model of the dataset's latest run. The
config is written to ``<dataset>/.kiln/configs/<name>.toml`` so the same run can be started
again with ``kiln train``.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kiln.engine.errors import ConfigError
from kiln.engine.fsutil import atomic_write_text
from kiln.engine.train.config import PRECISIONS, TrainConfig, config_from_mapping, resolved_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIGS_FOLDER = "configs"
# A test run in the guide's range when the plan says "test" and no cap is given.
TEST_RUN_MAX_STEPS = 800
MAX_PROMPTS = 4
_RATIO = re.compile(r"^1\s*/\s*([0-9]+(?:\.[0-9]*)?)$")
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def plan_overrides(
    texts: Mapping[str, str],
    precision: str | None = None,
    no_upscale: bool | None = None,
    run: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Config keys from the plan section's fields, and a note per field that was not usable.

    The plan's form holds text as typed (``batch``, ``epochs``, ``grad_accumulation``,
    ``resolution``, ``unet_lr``, ``te_lr`` as a number or ``1/5``); fields that do not
    read as a valid value are left to the defaults and named in the notes.
    """
    out: dict[str, Any] = {}
    notes: list[str] = []

    def whole(field: str, key: str) -> None:
        text = str(texts.get(field, "")).strip()
        if not text:
            return
        try:
            value = int(text)
        except ValueError:
            notes.append(f"plan {field} {text!r} is not a whole number; using the default")
            return
        if value >= 1:
            out[key] = value

    whole("batch", "train.batch_size")
    whole("epochs", "train.epochs")
    whole("grad_accumulation", "train.grad_accumulation")
    resolution = str(texts.get("resolution", "")).strip()
    if resolution:
        try:
            out["dataset.resolution"] = int(resolution)
        except ValueError:
            notes.append(f"plan resolution {resolution!r} is not one number; using the default")
    unet = str(texts.get("unet_lr", "")).strip()
    if unet:
        try:
            out["train.unet_lr"] = float(unet)
        except ValueError:
            notes.append(f"plan U-Net LR {unet!r} is not a number; using the default")
    te = str(texts.get("te_lr", "")).strip()
    if te:
        ratio = _RATIO.match(te)
        try:
            if ratio:
                out["train.text_encoder_lr_ratio"] = round(1 / float(ratio.group(1)), 6)
            else:
                out["train.text_encoder_lr"] = float(te)
        except (ValueError, ZeroDivisionError):
            notes.append(f"plan text-encoder LR {te!r} is not a number or 1/N; using the default")
    if precision in PRECISIONS:
        out["train.precision"] = precision
    if no_upscale is not None:
        out["dataset.bucket_no_upscale"] = bool(no_upscale)
    if run == "test":
        out["train.max_steps"] = TEST_RUN_MAX_STEPS
    return out, notes


def caption_prompts(root: Path, caption_extension: str = ".txt", limit: int = MAX_PROMPTS) -> list[str]:
    """Sample prompts: the first included image's caption of each trained concept folder.

    Samples rendered from the dataset's own captions show what the LoRA learnt; the seed
    is fixed per prompt (``--d``), so every epoch compares with the epoch-0 baseline.
    """
    from kiln.engine.dataset.captions import read_caption
    from kiln.engine.dataset.scan import scan_dataset
    from kiln.engine.dataset.selection import included_records
    from kiln.engine.dataset.store import Store

    dataset = scan_dataset(Path(root), caption_extension)
    with Store(dataset.root) as store:
        records = included_records(dataset.images, store)
    prompts: list[str] = []
    seen_folders: set[str] = set()
    for record in sorted(records, key=lambda r: r.rel_path):
        if not record.trained or record.folder in seen_folders:
            continue
        text = read_caption(record.caption_path).text.strip().replace("\n", " ")
        if not text:
            continue
        seen_folders.add(record.folder)
        prompts.append(f"{text} --d {1000 + len(prompts)}")
        if len(prompts) >= limit:
            break
    return prompts


def latest_base_model(run_dirs: Iterable[Path]) -> str | None:
    """The ``model.base`` of the first run folder whose ``config.toml`` names one."""
    for run_dir in run_dirs:
        try:
            data = tomllib.loads((Path(run_dir) / "config.toml").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        model = data.get("model")
        base = model.get("base") if isinstance(model, dict) else None
        if isinstance(base, str) and base:
            return base
    return None


def dataset_run_config(
    root: Path,
    base_model: str,
    name: str,
    overrides: Mapping[str, Any] | None = None,
    caption_extension: str = ".txt",
) -> TrainConfig:
    """The config of a new run on a dataset: defaults, sample prompts, then ``overrides``.

    Raises:
        ConfigError: No base model, a bad name, or an override the config refuses (named).
    """
    if not base_model.strip():
        raise ConfigError(
            "model.base is required: the base checkpoint (diffusers folder or SD 1.5 .safetensors)"
        )
    clean = run_name(name)
    data: dict[str, dict[str, Any]] = {
        "model": {"base": str(Path(base_model.strip()).expanduser())},
        "dataset": {"path": str(Path(root).resolve()), "caption_extension": caption_extension},
        "train": {"cache_latents_to_disk": True},
        "sample": {"prompts": caption_prompts(root, caption_extension)},
        "output": {"name": clean},
    }
    return config_from_mapping(data, source="new run", overrides=dict(overrides or {}))


def run_name(text: str) -> str:
    """A name fit for a folder and a LoRA file: letters, digits, ``_``, ``-``, ``.``."""
    name = _NAME.sub("-", text.strip()).strip("-.")
    if not name:
        raise ConfigError(f"run name {text!r}: use letters, digits, - or _")
    return name


def write_run_config(root: Path, config: TrainConfig, now: float | None = None) -> Path:
    """Write the config to ``<dataset>/.kiln/configs/<time>-<name>.toml``; its path."""
    from kiln.engine.dataset.store import STATE_FOLDER

    folder = Path(root) / STATE_FOLDER / CONFIGS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    path = folder / f"{stamp}-{config.output.name}.toml"
    atomic_write_text(path, resolved_toml(config))
    return path
