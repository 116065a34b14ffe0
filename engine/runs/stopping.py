"""Stopping a run by signal: the first SIGTERM or SIGINT stops after the current step, a second
one within :data:`ABORT_WINDOW_S` stops at once.

Python runs signal handlers only between bytecodes of the main thread, so a handler alone
waits as long as the C call in progress (a long kernel, a barrier waiting on another GPU).
Here the C-level handler also writes each signal to a socket (``signal.set_wakeup_fd``) that
a watcher thread reads: the stop request lands at once, and an abort signals the main thread
(waking it from a sleep or a blocking read) to raise KeyboardInterrupt and, if that thread
does not answer within :data:`ABORT_GRACE_S`, ends the process. Saves are atomic (see
:mod:`kiln.engine.train.checkpoint`), so an abort never damages the last complete one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

SIGNALS = (signal.SIGTERM, signal.SIGINT)
ABORT_WINDOW_S = 5.0
ABORT_GRACE_S = 10.0
ABORT_EXIT_CODE = 130


class StopSignals:
    """SIGTERM/SIGINT handling for a training process (install from the main thread).

    Args:
        on_stop: Called (from the watcher thread) on the first signal: request the stop.
        on_message: Told what the signal did, for a terminal or the log.
        on_hard_exit: Called just before the process ends itself because the main thread
            did not answer an abort (write the final event there).
        window: Seconds within which a second signal aborts.
        grace: Seconds the main thread gets to unwind after an abort.
    """

    def __init__(
        self,
        on_stop: Callable[[], None],
        on_message: Callable[[str], None] | None = None,
        on_hard_exit: Callable[[], None] | None = None,
        window: float = ABORT_WINDOW_S,
        grace: float = ABORT_GRACE_S,
    ) -> None:
        self.on_stop = on_stop
        self.on_message = on_message
        self.on_hard_exit = on_hard_exit
        self.window = window
        self.grace = grace
        self.aborting = False
        self.received = 0
        self._last: float | None = None
        self._previous: dict[int, object] = {}
        self._previous_fd = -1
        self._sockets: tuple[socket.socket, socket.socket] | None = None
        self._raised = threading.Event()
        self._released = threading.Event()  # uninstalled: the run ended, no hard exit
        self._installed = False

    def install(self) -> bool:
        """Take over SIGTERM and SIGINT; False (and nothing changed) outside the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        self._sockets = (reader, writer)
        self._previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handler)
        threading.Thread(target=self._watch, args=(reader,), name="kiln-signals", daemon=True).start()
        self._installed = True
        return True

    def uninstall(self) -> None:
        """Give the signals back as they were (the run ended: no hard exit any more)."""
        self._released.set()
        if not self._installed:
            return
        self._installed = False
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._previous_fd)
        if self._sockets is not None:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    # The Python-level handler: runs in the main thread when it next executes Python code.
    def _handler(self, signum: int, frame: object) -> None:
        if self.aborting and not self._raised.is_set():
            self._raised.set()
            raise KeyboardInterrupt

    def _watch(self, reader: socket.socket) -> None:
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in SIGNALS:
                    self.signal_received(signum)

    def signal_received(self, signum: int) -> None:
        """Count one signal: stop on the first, abort on a quick second."""
        now = time.monotonic()
        self.received += 1
        quick = self._last is not None and now - self._last <= self.window
        self._last = now
        if self.aborting:
            return
        if quick:
            self._abort()
            return
        if self.received == 1:
            self.on_stop()
            self._say(
                f"{signal.Signals(signum).name}: stopping after the current step and saving "
                f"(signal again within {self.window:g} s to stop at once)"
            )
        else:
            self._say(f"still stopping; signal again within {self.window:g} s to stop at once")

    def _abort(self) -> None:
        self.aborting = True
        self._say("stopping at once; the last complete save is kept")
        threading.Thread(target=self._interrupt_main, name="kiln-abort", daemon=True).start()

    def _interrupt_main(self) -> None:
        """Signal the main thread until it raises; end the process if it never does."""
        deadline = time.monotonic() + self.grace
        # A signal aimed at the main thread interrupts a sleep or a blocking read there, and
        # our Python-level handler, now aborting, raises KeyboardInterrupt. It is sent again
        # because one landing just before a blocking call starts does not interrupt it.
        while not self._raised.is_set() and not self._released.is_set():
            if time.monotonic() > deadline:
                self._hard_exit()
                return
            with contextlib.suppress(ProcessLookupError, ValueError):
                signal.pthread_kill(_main_thread_ident(), signal.SIGINT)
            self._raised.wait(0.25)
        # Raised: the main thread unwinds (a cancelled event, saves left as they were); it
        # still gets the grace period to finish before the process ends itself.
        if not self._released.wait(max(0.0, deadline - time.monotonic())):
            self._hard_exit()

    def _hard_exit(self) -> None:
        if self.on_hard_exit is not None:
            done = threading.Thread(target=self.on_hard_exit, daemon=True)
            done.start()
            done.join(timeout=2)
        os._exit(ABORT_EXIT_CODE)

    def _say(self, message: str) -> None:
        if self.on_message is not None:
            with contextlib.suppress(Exception):
                self.on_message(message)


def _main_thread_ident() -> int:
    """The main thread's id (set once the thread has started, which the main thread always has)."""
    ident = threading.main_thread().ident
    assert ident is not None
    return ident
