"""Compare Kiln's step count with regularisation images against sd-scripts' own DreamBoothDataset.

For several datasets (training images and repeats, class images and repeats, aspect ratios)
this writes the images, builds sd-scripts' ``DreamBoothDataset`` over the training and reg
folders (its balancing of reg repeats and its bucketing), asks it for the batches of one epoch
(``len(dataset)`` after ``make_buckets``), and compares with ``kiln calc DATASET --reg REG``'s
count. Run::

    git clone https://github.com/kohya-ss/sd-scripts /tmp/sdscripts
    pip install --target /tmp/einops einops
    PYTHONPATH=/tmp/sdscripts:/tmp/einops python scripts/check_kohya_reg_steps.py

torchvision and cv2 are stubbed (image augmentation only), and so are sd-scripts' sampling
pipelines (they need transformers 4); nothing of sd-scripts is copied into Kiln. The cases
and their counts are pinned in tests/test_plan_reg.py.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import types
from pathlib import Path

# (train folders {name: [(w, h), ...]}, reg folders {name: [(w, h), ...]}, batch)
CASES: list[tuple[dict[str, list[tuple[int, int]]], dict[str, list[tuple[int, int]]], int]] = [
    ({"10_pot": [(512, 512)] * 6}, {"1_pot": [(512, 512)] * 20}, 1),
    ({"10_pot": [(512, 512)] * 6}, {"1_pot": [(512, 512)] * 100}, 2),
    ({"3_pot": [(640, 512)] * 4 + [(512, 640)] * 3}, {"1_pot": [(512, 512), (640, 512)] * 5}, 2),
    (
        {"5_a": [(512, 512)] * 3, "2_b": [(768, 512)] * 5},
        {"2_c": [(512, 768)] * 4, "1_d": [(512, 512)] * 3},
        3,
    ),
    ({"20_pot": [(512, 512)] * 2}, {"3_pot": [(512, 512), (600, 400), (400, 600)]}, 1),
]


def write(root: Path, folders: dict[str, list[tuple[int, int]]]) -> Path:
    from PIL import Image

    for folder, sizes in folders.items():
        (root / folder).mkdir(parents=True)
        for index, size in enumerate(sizes):
            Image.new("RGB", size, (index, 0, 0)).save(root / folder / f"{index:03d}.png")
    return root


def kohya_batches(train: Path, reg: Path, batch: int) -> int:
    util = importlib.import_module("library.train_util")

    def subsets(root: Path, is_reg: bool) -> list:
        made = []
        for folder in sorted(root.iterdir()):  # Kiln's order; the file system's for Kohya
            repeats = int(folder.name.split("_")[0])
            made.append(
                util.DreamBoothSubset(
                    str(folder),
                    is_reg,
                    folder.name.split("_", 1)[1],
                    ".txt",
                    False,
                    False,
                    repeats,
                    False,
                    ",",
                    0,
                    None,
                    None,
                    False,
                    False,
                    False,
                    None,
                    False,
                    0.0,
                    0,
                    0.0,
                    None,
                    None,
                    1,
                    0,
                )
            )
        return made

    dataset = util.DreamBoothDataset(
        subsets(train, False) + subsets(reg, True),
        True,
        batch,
        (512, 512),
        1.0,
        True,
        256,
        1024,
        64,
        False,
        1.0,
        False,
        0.0,
        None,
        None,
    )
    dataset.make_buckets()
    return len(dataset)


def kiln_batches(train: Path, reg: Path, batch: int) -> int:
    from kiln.engine.dataset.scan import scan_dataset
    from kiln.engine.plan.buckets import BucketSpec
    from kiln.engine.plan.evaluate import PlanRequest, evaluate_plan, load_counts
    from kiln.engine.plan.loads import dataset_load
    from kiln.engine.plan.reg import reg_set

    spec = BucketSpec(512, 256, 1024, 64, False)
    load = dataset_load(scan_dataset(train), None, spec)
    counts = load_counts(load)
    request = PlanRequest(
        mode="steps",
        bucket_images=counts.bucket_images,
        batch=batch,
        epochs=1,
        folder_items=counts.folder_items,
        folder_repeats=counts.folder_repeats,
        reg=reg_set(scan_dataset(reg), spec),
    )
    return evaluate_plan(request).plan.batches_per_epoch


def main() -> int:
    vision = types.ModuleType("torchvision")
    vision.transforms = types.ModuleType("torchvision.transforms")  # type: ignore[attr-defined]
    # Module-level image transforms sd-scripts builds at import; never called here.
    for name in (
        "Compose",
        "ToTensor",
        "Normalize",
        "Resize",
        "CenterCrop",
        "RandomCrop",
        "InterpolationMode",
    ):
        setattr(vision.transforms, name, lambda *args, **kwargs: None)  # type: ignore[attr-defined]
    import diffusers  # noqa: F401  (diffusers and transformers look for the real torchvision first)
    import transformers  # noqa: F401

    # Its sampling pipelines (not used here) import transformers 4's CLIPFeatureExtractor.
    for name, cls in (
        ("library.lpw_stable_diffusion", "StableDiffusionLongPromptWeightingPipeline"),
        ("library.sdxl_lpw_stable_diffusion", "SdxlStableDiffusionLongPromptWeightingPipeline"),
    ):
        stub = types.ModuleType(name)
        setattr(stub, cls, type(cls, (), {}))
        sys.modules[name] = stub

    sys.modules.update(
        {"torchvision": vision, "torchvision.transforms": vision.transforms, "cv2": types.ModuleType("cv2")}
    )
    same = True
    for index, (train_folders, reg_folders, batch) in enumerate(CASES):
        with tempfile.TemporaryDirectory() as tmp:
            train = write(Path(tmp) / "train", train_folders)
            reg = write(Path(tmp) / "reg", reg_folders)
            theirs, ours = kohya_batches(train, reg, batch), kiln_batches(train, reg, batch)
        same &= theirs == ours
        verdict = "same" if theirs == ours else "DIFFER"
        print(f"case {index}: sd-scripts {theirs} batches per epoch, kiln {ours}: {verdict}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
