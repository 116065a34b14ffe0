"""Analyse a dataset: cached figures first, then the rest in a process pool, as they finish.

Results stream out as a generator so the TUI can fill its table progressively and the CLI
can show progress; everything computed is written to the cache in batches.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from kiln.engine.analysis.cache import load_cached, save_analyses
from kiln.engine.analysis.measure import ImageAnalysis, analyse_image
from kiln.engine.dataset.scan import Dataset, ImageRecord
from kiln.engine.dataset.store import Store

# Below this many images a pool costs more to start than it saves.
_POOL_THRESHOLD = 4
_FLUSH_SECONDS = 0.5


def default_workers() -> int:
    """One worker per usable core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def iter_analyses(
    records: list[ImageRecord],
    store: Store | None,
    method: str,
    exact: bool = False,
    workers: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[tuple[ImageRecord, ImageAnalysis, bool]]:
    """Yield ``(record, analysis, from_cache)`` for every record, cached ones first.

    Args:
        records: The images to analyse.
        store: The dataset's store for the cache, or None to skip caching.
        method: Desaturation method.
        exact: Measure at full resolution.
        workers: Process count; default one per core.
        should_stop: Polled between results; when it returns True the pool is shut down.
    """
    cached = load_cached(store, records, method, exact) if store is not None else {}
    missing = []
    for record in records:
        hit = cached.get(record.rel_path)
        if hit is None:
            missing.append(record)
        else:
            yield record, hit, True
    if not missing:
        return
    pending: list[tuple[ImageRecord, ImageAnalysis]] = []
    last_flush = time.monotonic()
    try:
        for record, result in _compute(missing, method, exact, workers or default_workers(), should_stop):
            pending.append((record, result))
            yield record, result, False
            if store is not None and time.monotonic() - last_flush > _FLUSH_SECONDS:
                save_analyses(store, pending, method, exact)
                pending.clear()
                last_flush = time.monotonic()
    finally:
        if store is not None and pending:
            save_analyses(store, pending, method, exact)


def analyse_dataset(
    dataset: Dataset, store: Store | None, method: str, exact: bool = False, workers: int | None = None
) -> dict[str, ImageAnalysis]:
    """Analyse every image of ``dataset``; returns analyses keyed by relative path."""
    return {
        record.rel_path: result
        for record, result, _ in iter_analyses(dataset.images, store, method, exact, workers)
    }


def _compute(
    records: list[ImageRecord],
    method: str,
    exact: bool,
    workers: int,
    should_stop: Callable[[], bool],
) -> Iterator[tuple[ImageRecord, ImageAnalysis]]:
    if workers <= 1 or len(records) < _POOL_THRESHOLD:
        for record in records:
            if should_stop():
                return
            yield record, analyse_image(record.path, method, exact)
        return
    context = _pool_context()
    executor = ProcessPoolExecutor(max_workers=min(workers, len(records)), mp_context=context)
    queue = iter(records)
    running: dict[Future, ImageRecord] = {}
    try:
        # Keep a few tasks per worker in flight: enough to stay busy, few to cancel.
        for record in queue:
            running[executor.submit(analyse_image, str(record.path), method, exact)] = record
            if len(running) >= workers * 3:
                break
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                record = running.pop(future)
                yield record, _result_of(future)
            if should_stop():
                return
            for record in queue:
                running[executor.submit(analyse_image, str(record.path), method, exact)] = record
                if len(running) >= workers * 3:
                    break
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def _pool_context() -> multiprocessing.context.BaseContext:
    """The start method of the worker pool.

    ``fork`` when this process runs one thread (``kiln dsb`` and the other commands): workers
    start at once with the measuring code already imported, which saves the quarter second
    a forkserver takes to start and import it. ``forkserver`` when other threads run (the
    TUI's UI and watcher threads): forking a process with threads is unsafe; the server
    preloads the measuring code once so each worker starts without importing it again.
    """
    if sys.platform == "win32":  # pragma: no cover
        return multiprocessing.get_context("spawn")
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return _forkserver_context()


def _forkserver_context() -> multiprocessing.context.BaseContext:
    """The forkserver start method, its server preloading the measuring code once."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["kiln.engine.analysis.measure"])
    return context


def start_pool_server() -> None:
    """Start the forkserver (and its resource tracker) now, from the main thread.

    Both are spawned with the process's stderr; a TUI replaces ``sys.stderr`` with a capture
    object whose ``fileno()`` is -1, which makes a later lazy start fail. Call this before
    ``App.run()``.
    """
    if sys.platform == "win32":  # pragma: no cover
        return
    from multiprocessing import forkserver

    _forkserver_context()
    forkserver.ensure_running()


def _result_of(future: Future) -> ImageAnalysis:
    try:
        return future.result()
    except Exception as exc:
        return ImageAnalysis(white=None, black=None, error=f"analysis failed: {exc}")
