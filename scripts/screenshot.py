"""Write the README's screenshots from the real app on sample_data/ (SVG, via Textual).

Run from the repository root:  python scripts/screenshot.py
It works on a copy of sample_data/, so the repository's files and state are untouched.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kiln.tui.app import KilnApp  # noqa: E402

DOCS = ROOT / "docs"


async def shoot(target: Path, name: str, keys: list[str], size: tuple[int, int] = (120, 32)) -> None:
    app = KilnApp(target, images="halfcell", watch=False)
    async with app.run_test(size=size) as pilot:
        deadline = time.monotonic() + 30
        while app.curation.pending() and time.monotonic() < deadline:
            await pilot.pause(0.05)
        await pilot.pause(1.0)  # the preview decodes in a worker
        if keys:
            await pilot.press(*keys)
            await pilot.pause(0.2)
        app.save_screenshot(str(DOCS / name))


async def main() -> None:
    DOCS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "sample_data"
        shutil.copytree(ROOT / "sample_data", target, ignore=shutil.ignore_patterns(".kiln"))
        await shoot(target, "dataset-screen.svg", [])
        await shoot(target, "rebalance.svg", ["r"])
    print(f"wrote {DOCS / 'dataset-screen.svg'} and {DOCS / 'rebalance.svg'}")


if __name__ == "__main__":
    asyncio.run(main())
