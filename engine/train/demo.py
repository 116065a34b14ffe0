"""``kiln train --demo``: a tiny model (SD 1.5- or SDXL-shaped) trained on the bundled sample
dataset, about a minute on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

from kiln.engine.errors import KilnError
from kiln.engine.train.config import TrainConfig, config_from_mapping

from kiln import engine

DEMO_PROMPTS = ("a kilnpot on a wooden table --s 8 --d 1", "kilnstyle, hill, scenery --s 8 --d 2")


def cache_dir() -> Path:
    """Kiln's cache folder (``$XDG_CACHE_HOME/kiln``, else ``~/.cache/kiln``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kiln"


def sample_data_dir() -> Path:
    """The bundled sample dataset: the repository's ``sample_data/``, installed as ``kiln/sample_data``.

    ``kiln.sample_data`` is a data-only folder (a namespace package), so its location comes
    from the import system's search path, not from ``__file__``; a source checkout without
    an install falls back to the folder beside ``engine/``.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec("kiln.sample_data")
    except ModuleNotFoundError:
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) if locations else Path(engine.__file__).resolve().parent.parent / "sample_data"
    if not path.is_dir():
        raise KilnError(f"{path}: the sample dataset is missing; reinstall Kiln (pip install lora-kiln)")
    return path


def demo_model(family: str = "sd15") -> Path:
    """The family's tiny model in the cache, built on first use."""
    from kiln.engine.models.family import family_named

    path = cache_dir() / f"tiny-{family}"
    if not (path / "model_index.json").is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        family_named(family).write_tiny(path)
    return path


def demo_config(output_dir: Path, overrides: dict | None = None, family: str = "sd15") -> TrainConfig:
    """The demo's config: 64 px, rank 8, the guide's minimum of 10 epochs, samples and saves every 5,
    on the tiny model of ``family`` (``sd15`` or ``sdxl``)."""
    data = {
        "model": {"base": str(demo_model(family)), "family": family},
        "dataset": {
            "path": str(sample_data_dir()),
            "resolution": 64,
            "min_bucket_reso": 32,
            "max_bucket_reso": 128,
            "bucket_reso_steps": 32,
            "shuffle_caption": True,
            "keep_tokens": 1,
        },
        "network": {"rank": 8, "alpha": 4.0},
        "train": {"epochs": 10, "batch_size": 2, "precision": "fp32", "unet_lr": 1e-3, "scheduler": "cosine"},
        # The baseline shows what the LoRA changed; the tiny model renders it in a blink.
        "sample": {"prompts": list(DEMO_PROMPTS), "every_n_epochs": 5, "baseline": "on"},
        "save": {"every_n_epochs": 5},
        "output": {"dir": str(output_dir), "name": "demo", "comment": "kiln train --demo"},
    }
    return config_from_mapping(data, source="--demo", overrides=overrides, overrides_source="--set")
