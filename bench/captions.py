"""Benchmark: caption tooling on a large dataset, against baselines in the same run.

* Token counts: Kiln's CLIP BPE against transformers' ``CLIPTokenizer`` built from the same
  vocabulary (what Kohya uses), on the same captions; also checks the ids agree.
* ``kiln lint`` over N captioned images (scan, read, tokenize, every rule).
* A tag operation (``add`` at the front) planned and applied over N captions as one undo
  step, then undone.

Run from the repository root:  python -m bench.captions [--captions 5000]
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

from kiln.engine.caption import tags
from kiln.engine.caption.clip_tokens import load_tokenizer
from kiln.engine.caption.lint import lint_dataset
from kiln.engine.caption.undo import History
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.store import Store
from PIL import Image

WORDS = [
    "1girl",
    "solo",
    "long_hair",
    "smile",
    "looking_at_viewer",
    "blue_eyes",
    "outdoors",
    "sky",
    "cloud",
    "tree",
    "grass",
    "standing",
    "dress",
    "holding",
    "flower",
    "night",
    "moon",
    "city",
    "neon",
    "lights",
    "rain",
    "umbrella",
    "cat",
    "dog",
    "table",
    "cybernetic",
    "arms",
    "techwear",
    "jacket",
    "hood",
    "mask",
    "street",
    "reflection",
    "bokeh",
    "depth_of_field",
]


def captions(count: int, seed: int = 0) -> list[str]:
    """Synthetic WD14- and BLIP-style captions of 5 to 40 pieces."""
    rng = random.Random(seed)
    out = []
    for index in range(count):
        if index % 3 == 0:
            sentence = " ".join(rng.choice(WORDS).replace("_", " ") for _ in range(rng.randint(6, 16)))
            out.append(f"a {sentence}, kilnbench")
        else:
            out.append(", ".join(["kilnbench", *rng.sample(WORDS, rng.randint(5, 30))]))
    return out


def bench_tokens(texts: list[str]) -> dict:
    from transformers import CLIPTokenizer

    kiln = load_tokenizer()
    reference = CLIPTokenizer(str(kiln.path / "vocab.json"), str(kiln.path / "merges.txt"))
    start = time.perf_counter()
    ours = [kiln.ids(text) for text in texts]
    kiln_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs = [reference(text)["input_ids"] for text in texts]
    ref_s = time.perf_counter() - start
    return {
        "captions": len(texts),
        "kiln_per_s": len(texts) / kiln_s,
        "transformers_per_s": len(texts) / ref_s,
        "ratio": ref_s / kiln_s,
        "identical": ours == theirs,
    }


def make_dataset(texts: list[str]) -> Path:
    root = Path(tempfile.mkdtemp(prefix="kiln-bench-captions-"))
    folder = root / "10_bench"
    folder.mkdir()
    pixel = Image.new("RGB", (8, 8), (128, 128, 128))
    for index, text in enumerate(texts):
        pixel.save(folder / f"{index:05d}.png")
        (folder / f"{index:05d}.txt").write_text(text, encoding="utf-8")
    return root


def bench_dataset(texts: list[str]) -> dict:
    root = make_dataset(texts)
    try:
        start = time.perf_counter()
        dataset = scan_dataset(root)
        with Store(dataset.root) as store:
            report = lint_dataset(dataset, store)
        lint_s = time.perf_counter() - start
        with Store(dataset.root) as store:
            start = time.perf_counter()
            records = tags.select_records(dataset, store)
            plan = tags.plan_edit(records, tags.add_edit(["extra tag"], "first"))
            result = tags.apply_plan(plan, dataset.root, store)
            apply_s = time.perf_counter() - start
            start = time.perf_counter()
            History(store).undo()
            undo_s = time.perf_counter() - start
        return {
            "images": len(texts),
            "lint_s": lint_s,
            "findings": len(report.findings),
            "apply_s": apply_s,
            "written": len(result.written),
            "undo_s": undo_s,
        }
    finally:
        shutil.rmtree(root)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--captions", type=int, default=5000)
    args = parser.parse_args()
    texts = captions(args.captions)
    tokens = bench_tokens(texts)
    print(
        f"token counts, {tokens['captions']} captions: Kiln {tokens['kiln_per_s']:.0f}/s, "
        f"transformers CLIPTokenizer {tokens['transformers_per_s']:.0f}/s, ratio {tokens['ratio']:.2f}x, "
        f"ids identical: {tokens['identical']}"
    )
    data = bench_dataset(texts)
    print(
        f"dataset of {data['images']} captioned images: lint {data['lint_s']:.2f} s "
        f"({data['findings']} findings); add-at-front {data['apply_s']:.2f} s for {data['written']} captions "
        f"(one undo step); undo {data['undo_s']:.2f} s"
    )


if __name__ == "__main__":
    main()
