"""Benchmark: the workbench's captions section on a large captioned dataset.

* opening the section: from the ``3`` key to the tag counts and lint on screen, against the
  engine doing the same work (``tag_stats`` + ``lint_dataset``) with no UI;
* keys while a batch edit is written: cursor moves in the tag list while a worker applies
  an edit to every caption (an atomic write each), against the same moves when idle.

Run from the repository root:  python -m bench.captions_ui [--captions 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time

from kiln.engine.analysis.run import analyse_dataset
from kiln.engine.caption.lint import lint_dataset
from kiln.engine.caption.tags import tag_stats
from kiln.engine.dataset.scan import scan_dataset
from kiln.engine.dataset.store import Store
from kiln.tui.app import KilnApp

from bench.captions import captions, make_dataset


async def key_latencies(table, count: int) -> list[float]:
    """Seconds from a cursor move in the tag list to the screen repainted, ``count`` times.

    ``call_after_refresh`` fires once the move is drawn. (``pilot.pause()`` would wait for
    the whole process to go idle, which it never is while a worker writes.)
    """
    loop = asyncio.get_running_loop()
    times = []
    for _ in range(count):
        drawn: asyncio.Future[float] = loop.create_future()
        start = time.perf_counter()
        if table.cursor_row < table.row_count - 1:
            table.action_cursor_down()
        else:
            table.action_cursor_up()
        table.call_after_refresh(lambda drawn=drawn: drawn.set_result(time.perf_counter()))
        times.append(await drawn - start)
        await asyncio.sleep(0.02)  # a typist's pace, not a flood
    return times


async def run(count: int) -> None:
    root = make_dataset(captions(count))
    try:
        dataset = scan_dataset(root)
        with Store(dataset.root) as store:
            analyse_dataset(dataset, store, "luma601")  # cached: the app measures nothing
            start = time.perf_counter()
            tag_stats(dataset.images)
            lint_dataset(dataset, store)
            engine_s = time.perf_counter() - start

        app = KilnApp(root, images="none", watch=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.5)
            start = time.perf_counter()
            app.action_section("captions")
            while type(app.screen).__name__ != "CaptionsScreen":
                await asyncio.sleep(0.002)
            drawn: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            app.screen.call_after_refresh(lambda: drawn.set_result(time.perf_counter()))
            shown_s = await drawn - start
            screen = app.screen
            while screen.tag_pane.stats is None or screen.lint_pane.report is None:
                await asyncio.sleep(0.002)
            figures_s = time.perf_counter() - start

            await pilot.press("escape", "t")
            table = screen.tag_pane.freq_table
            idle = await key_latencies(table, 30)
            screen.query_one("#first").value = "kilnbench"
            await pilot.press("p")
            while screen.tag_pane.plan is None:
                await pilot.pause(0.01)
            changes = len(screen.tag_pane.plan.changes)
            table.focus()
            start = time.perf_counter()
            screen.action_apply()
            busy = []
            while screen.tag_pane.busy:
                busy += await key_latencies(table, 1)
            apply_s = time.perf_counter() - start
    finally:
        shutil.rmtree(root)

    print(
        f"open the captions section on {count} captions: shown in {shown_s:.3f} s, tag counts and "
        f"lint in {figures_s:.3f} s (the engine alone: {engine_s:.3f} s)"
    )
    print(
        f"cursor key while {changes} captions are written ({apply_s:.1f} s): median "
        f"{statistics.median(busy) * 1000:.1f} ms, max {max(busy) * 1000:.1f} ms over {len(busy)} keys; "
        f"idle: median {statistics.median(idle) * 1000:.1f} ms, max {max(idle) * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--captions", type=int, default=2000)
    asyncio.run(run(parser.parse_args().captions))


if __name__ == "__main__":
    main()
