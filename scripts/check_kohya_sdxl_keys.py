"""Compare Kiln's SDXL U-Net LoRA modules with sd-scripts' own ``networks.lora.LoRANetwork``.

Both U-Nets are built on the meta device (no weights, no download): sd-scripts'
``SdxlUNet2DConditionModel`` wrapped by its LoRANetwork (its own naming code), and diffusers'
``UNet2DConditionModel`` from Kiln's shipped SDXL config with ``kiln.engine.models.sdxl.unet_targets``.
Names, ranks and alphas must be equal, with and without a conv rank (LoCon). Run::

    git clone https://github.com/kohya-ss/sd-scripts /tmp/sdscripts
    pip install --target /tmp/einops einops
    PYTHONPATH=/tmp/sdscripts:/tmp/einops python scripts/check_kohya_sdxl_keys.py

torchvision and cv2 are stubbed: sd-scripts imports them for image handling only. Nothing of
sd-scripts is copied into Kiln; this runs its code beside ours. Result on 2026-12-06 (sd-scripts
main): 722 U-Net modules (788 with a conv rank), the same names, ranks and alphas.
"""

from __future__ import annotations

import importlib
import sys
import types


def main() -> int:
    import torch
    from diffusers import UNet2DConditionModel
    from kiln.engine.models import sdxl
    from kiln.engine.models.loading import SDXL_CONFIG_DIR

    # Stubbed only after diffusers has looked for the real packages.
    vision = types.ModuleType("torchvision")
    vision.transforms = types.ModuleType("torchvision.transforms")  # type: ignore[attr-defined]
    sys.modules.update(
        {"torchvision": vision, "torchvision.transforms": vision.transforms, "cv2": types.ModuleType("cv2")}
    )
    kohya_lora = importlib.import_module("networks.lora")
    kohya_unet = importlib.import_module("library.sdxl_original_unet")

    same = True
    with torch.device("meta"):
        theirs = kohya_unet.SdxlUNet2DConditionModel()
        ours = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SDXL_CONFIG_DIR / "unet"))
        for conv in (0, 2):
            network = kohya_lora.LoRANetwork(
                [], theirs, lora_dim=4, alpha=2, conv_lora_dim=conv or None, conv_alpha=1 if conv else None
            )
            # The alpha buffer lives on the meta device: scale * rank gives it back.
            kohya = {
                lora.lora_name: (lora.lora_dim, round(lora.scale * lora.lora_dim, 6))
                for lora in network.unet_loras
            }
            mine = {
                t.kohya: (t.rank, t.alpha)
                for t in sdxl.unet_targets(ours, 4, 2.0, conv_rank=conv, conv_alpha=1.0)
            }
            print(
                f"conv rank {conv}: sd-scripts {len(kohya)} U-Net modules, kiln {len(mine)}; "
                f"same names {kohya.keys() == mine.keys()}, same ranks and alphas {kohya == mine}"
            )
            if kohya != mine:
                same = False
                print("  only sd-scripts:", sorted(kohya.keys() - mine.keys())[:6])
                print("  only kiln:", sorted(mine.keys() - kohya.keys())[:6])
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
