"""A tiny Real-ESRGAN model file for tests and benchmarks, and spandrel imported for real.

The file has Real-ESRGAN's RRDBNet layout (``conv_first``, ``body.N.rdbM.convK``,
``conv_up1/2``, ``conv_hr``, ``conv_last``) with 8 features, growth 32, one block, x4:
about 900 KB of random weights that spandrel's architecture detection reads as ESRGAN x4.

``import spandrel`` imports torchvision, which fails beside the CPU build of torch on the
test machines ("operator torchvision::nms does not exist"). Only two architectures Kiln
never loads use it, so :func:`import_spandrel_for_tests` lends a stand-in torchvision for the
import when, and only when, the real one cannot be imported, and takes it away again.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any


def esrgan_state(features: int = 8, growth: int = 32, blocks: int = 1, seed: int = 0) -> dict[str, Any]:
    """Random weights in Real-ESRGAN's x4 RRDBNet layout, scaled so activations stay moderate."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    state: dict[str, Any] = {}

    def conv(name: str, out_ch: int, in_ch: int) -> None:
        fan_in = in_ch * 9
        weight = torch.randn(out_ch, in_ch, 3, 3, generator=generator)
        state[f"{name}.weight"] = weight * (0.5 / fan_in) ** 0.5
        state[f"{name}.bias"] = torch.zeros(out_ch)

    conv("conv_first", features, 3)
    for block in range(blocks):
        for rdb in (1, 2, 3):
            prefix = f"body.{block}.rdb{rdb}"
            for k in range(1, 5):
                conv(f"{prefix}.conv{k}", growth, features + (k - 1) * growth)
            conv(f"{prefix}.conv5", features, features + 4 * growth)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, features, features)
    conv("conv_last", 3, features)
    return state


def write_tiny_esrgan(path: Path, seed: int = 0) -> Path:
    """Save :func:`esrgan_state` as ``path`` (``.safetensors``, or a pickle for ``.pth``)."""
    import torch
    from safetensors.torch import save_file

    state = esrgan_state(seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def import_spandrel_for_tests() -> Any:
    """The real spandrel, imported with a stand-in torchvision only if the real one fails."""
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    try:
        import torchvision  # noqa: F401
    except Exception:
        saved = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "torchvision"}
        for name in saved:
            del sys.modules[name]
        sys.modules.update(_stand_in())
        try:
            import spandrel
        finally:
            for name in [name for name in sys.modules if name.split(".")[0] == "torchvision"]:
                del sys.modules[name]
            sys.modules.update(saved)
        return spandrel
    import spandrel

    return spandrel


def _stand_in() -> dict[str, types.ModuleType]:
    """``torchvision.transforms.functional`` with the three names spandrel's LaMa and
    RestoreFormer import; calling any of them says it is a stand-in."""

    def unavailable(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("stand-in torchvision: not available in Kiln's tests")

    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = type("InterpolationMode", (), {"BILINEAR": "bilinear"})  # type: ignore[attr-defined]
    functional.rotate = unavailable  # type: ignore[attr-defined]
    functional.normalize = unavailable  # type: ignore[attr-defined]
    root.transforms = transforms  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    return {
        "torchvision": root,
        "torchvision.transforms": transforms,
        "torchvision.transforms.functional": functional,
    }
