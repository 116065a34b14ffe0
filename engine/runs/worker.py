"""The training process of a detached or multi-GPU run: ``python -m kiln.engine.runs.worker RUN_DIR``.

Started by :mod:`kiln.engine.runs.runner` (directly, or once per GPU by ``accelerate launch``),
it trains the run folder's own ``config.toml``. Signals are taken over before anything heavy
loads, and the main process starts its event writer (and so the heartbeat) before importing
torch, so a run reads as alive from its first seconds and a cancel during loading is kept.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback
from pathlib import Path

from kiln.engine.errors import KilnError
from kiln.engine.runs import layout as rundir
from kiln.engine.runs import runlock
from kiln.engine.runs.events import EventWriter
from kiln.engine.runs.stopping import ABORT_EXIT_CODE, StopSignals
from kiln.engine.train.config import load_config


def main(argv: list[str] | None = None) -> int:
    """Train one run folder; exit 0 when it ended done or cancelled, 1 when it failed."""
    parser = argparse.ArgumentParser(prog="python -m kiln.engine.runs.worker")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete save")
    parser.add_argument("--force", action="store_true", help="resume even if the config or data changed")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU")
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    is_main = os.environ.get("RANK", "0") == "0"
    if is_main:
        try:
            _hold_run_lock(run_dir)
        except KilnError as exc:  # another trainer has the folder: touch nothing of it
            print(f"kiln: {exc}", file=sys.stderr, flush=True)
            return 2
    trainers: list = []
    stop_early = threading.Event()

    def on_stop() -> None:
        stop_early.set()
        for trainer in trainers:
            trainer.request_stop()

    def on_hard_exit() -> None:
        for trainer in trainers:
            trainer.emit_aborted()

    signals = StopSignals(on_stop, on_message=_say, on_hard_exit=on_hard_exit)
    signals.install()
    events = None
    try:
        config = load_config(run_dir / rundir.CONFIG_FILE)
        if is_main:
            events = EventWriter(run_dir, name=config.output.name, resume=True)
        from kiln.engine.runs.control import controlled_trainer

        trainer = controlled_trainer(
            config, run_dir, cpu=args.cpu, resume=args.resume, force=args.force, events=events, main=is_main
        )
    except KeyboardInterrupt:
        return _fail_early(is_main, run_dir, events, None, "cancelled")
    except Exception as exc:  # the run must end with an event whatever went wrong
        message = str(exc) if isinstance(exc, KilnError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, KilnError):
            traceback.print_exc()
        return _fail_early(is_main, run_dir, events, message, "failed")
    trainers.append(trainer)
    if stop_early.is_set():
        trainer.request_stop()
    try:
        result = trainer.run()
    except KeyboardInterrupt:  # an abort landing just as the run ended
        trainer.emit_aborted()  # (nothing when the final event is written)
        return ABORT_EXIT_CODE
    finally:
        signals.uninstall()
    if result.state != "failed" and not signals.aborting:
        # Every process ends done or cancelled at the same step; a failed or aborted one may
        # be alone (the others wait in a collective), and the launcher ends the others.
        _end_process_group()
    _say(f"{result.state} at step {result.step}" + (f": {result.error}" if result.error else ""))
    return 1 if result.state == "failed" else 0


def _hold_run_lock(run_dir: Path) -> None:
    """Hold the run's lock until this process exits (see :mod:`kiln.engine.runs.runlock`).

    The launcher's descriptor when it handed one over; under a multi-GPU launcher, which
    holds it for all its workers, nothing; started by hand, taken here.
    """
    fd = runlock.inherited(run_dir)
    if fd is not None:
        os.set_inheritable(fd, False)
    elif not runlock.launched_with_lock():
        fd = runlock.acquire(run_dir)
    _RUN_LOCK.append(fd)


_RUN_LOCK: list[int | None] = []  # kept open for the life of the process


def _fail_early(
    is_main: bool, run_dir: Path, events: EventWriter | None, error: str | None, kind: str
) -> int:
    """End a run that stopped before its trainer existed with a final event."""
    _say(f"{kind}: {error}" if error else kind)
    if not is_main:
        return 1
    writer = events or EventWriter(run_dir, resume=True, heartbeat_s=0)
    writer.emit(kind, **({"error": error} if error else {}), step=writer.status.get("step", 0))
    writer.close()
    return 1 if kind == "failed" else 0


def _end_process_group() -> None:
    """Leave the process group together: gloo aborts a process that leaves while a peer is still in."""
    torch = sys.modules.get("torch")
    if torch is None or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _say(message: str) -> None:
    """A line in train.log (this process's stdout)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} kiln: {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
